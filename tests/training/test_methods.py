"""The method switches: saliency-weighted distillation, FAMO balancing, beta warm-up, label smoothing,
the Stage 2 seed; each off by default, each changing what it should in a short real training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.balancing import FamoBalancer
from training.config import ConfigError, fingerprint, load_config
from training.engine import FitSpec, Runtime, fit
from training.losses import masked_task_ce, per_task_ce
from training.models import create_model
from training.models.mantis import mantis_stage2_from_stage1
from training.saliency import saliency_weight, teacher_grad_cam
from training.stages import Stage1Objective, Stage2Objective, warmup_factor
from tests.training.tiny_models import tiny_stage1

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "tiny.yaml"
STAGE1 = tiny_stage1()
LABELS = torch.tensor([[0, -1, 1], [1, 2, -1], [-1, 0, 3], [0, -1, -1], [-1, 1, -1], [1, -1, 2], [0, 0, 0], [1, 1, 1]])


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = create_model("teacher_cnn", num_classes=[2, 3, 4], channels=[8, 8, 16, 16]).eval().requires_grad_(False)
    return teacher, create_model("mantis_stage1", **STAGE1)


def test_new_keys_at_their_neutral_values_leave_the_fingerprints_alone() -> None:
    assert load_config(TINY)["stage1"]["beta_warmup"] == 0.5  # the Stage 1 warm-up is on by default
    on = load_config(TINY)
    cfg = load_config(TINY, ["stage1.beta_warmup=0"])
    assert fingerprint(on, ["stage1"]) != fingerprint(cfg, ["stage1"])
    assert cfg["stage1"]["saliency"] == 0
    s = cfg["stage2"]
    assert (s["beta_warmup"], s["label_smoothing"], s["balancing"], s["seed"]) == (0, 0, "fixed", None)
    sections = ["seed", "data", "teacher", "amp", "model", "stage1", "stage2"]
    stripped = json.loads(json.dumps(cfg))
    for key in ("saliency", "beta_warmup"):
        del stripped["stage1"][key]
    for key in ("beta_warmup", "label_smoothing", "balancing", "balancing_lr", "balancing_decay", "seed"):
        del stripped["stage2"][key]
    del stripped["data"]["webdataset"]
    assert fingerprint(cfg, sections) == fingerprint(stripped, sections)  # what checkpoints made before them carry
    on = load_config(TINY, ["stage2.label_smoothing=0.1"])
    assert fingerprint(on, sections) != fingerprint(cfg, sections)
    with pytest.raises(ConfigError, match=r"stage1.saliency must be <= 1"):
        load_config(TINY, ["stage1.saliency=2"])
    with pytest.raises(ConfigError, match="stage2.balancing must be one of"):
        load_config(TINY, ["stage2.balancing=gradnorm"])


def test_grad_cam_weights_have_mean_one_and_follow_the_teacher() -> None:
    teacher, _ = _models()
    x = torch.randn(8, 3, 32, 32)
    features, cam = teacher_grad_cam(teacher, x, LABELS)
    assert torch.equal(features, teacher.head(x))
    assert cam.shape == (8, 4, 4) and bool((cam >= 0).all())
    w = saliency_weight(cam, 1.0)
    assert torch.allclose(w.mean((1, 2)), torch.ones(8))
    assert torch.equal(saliency_weight(cam, 0.0), torch.ones_like(cam))
    assert torch.equal(saliency_weight(torch.zeros(2, 4, 4), 1.0), torch.ones(2, 4, 4))  # no evidence: uniform


def test_saliency_changes_the_stage1_loss_only_when_on() -> None:
    teacher, model = _models()
    objective = Stage1Objective(model, beta=0.1, detection_weight=1.0)
    objective.eval()
    x = torch.randn(8, 3, 32, 32)
    features, cam = teacher_grad_cam(teacher, x, LABELS)
    vec = (LABELS >= 0).float()
    plain = objective(x, features, vec)[1]["mse"]
    assert torch.equal(objective(x, features, vec, saliency_weight(cam, 0.0))[1]["mse"], plain)
    assert not torch.allclose(objective(x, features, vec, saliency_weight(cam, 1.0))[1]["mse"], plain)


def test_beta_warmup_ramps_the_rate_weight() -> None:
    assert [warmup_factor(s, 10, 0.5) for s in (0, 1, 5, 9)] == [0.0, 0.2, 1.0, 1.0]
    assert warmup_factor(0, 10, 0.0) == 1.0
    teacher, stage1 = _models()
    model = mantis_stage2_from_stage1(stage1, teacher.task_tails(), "film")
    objective = Stage2Objective(model, beta=10.0, detection_weight=1.0, kd_weight=0.0, kd_temperature=2.0, beta_warmup=0.5)
    objective.eval()
    x = torch.randn(8, 3, 32, 32)
    objective.schedule(0, 10)
    cold, logs = objective(x, LABELS, (LABELS >= 0).float())
    objective.schedule(5, 10)
    warm, _ = objective(x, LABELS, (LABELS >= 0).float())
    assert float((warm - cold).detach()) == pytest.approx(10.0 * float(logs["bpp"]), rel=1e-4)


def test_label_smoothing_raises_the_ce_of_confident_logits() -> None:
    logits = [torch.tensor([[10.0, -10.0], [-10.0, 10.0]])]
    labels = torch.tensor([[0], [1]])
    assert float(masked_task_ce(logits, labels)) < 1e-6
    assert float(masked_task_ce(logits, labels, 0.1)) > 0.5
    per_task, present = per_task_ce(logits + [torch.zeros(2, 3)], torch.tensor([[0, -1], [1, -1]]), 0.1)
    assert present.tolist() == [True, False] and float(per_task[1]) == 0.0


def test_famo_moves_weight_to_the_loss_that_falls_slowest_and_decays_back() -> None:
    b = FamoBalancer(["fast", "slow"], lr=0.05, decay=0.0)
    assert b.weights().tolist() == [1.0, 1.0]
    loss = torch.tensor([1.0, 1.0])
    for _ in range(20):
        b.update(loss)
        loss = loss * torch.tensor([0.8, 0.99])
    w = b.named_weights()
    assert w["slow"] > 1.05 > 0.95 > w["fast"] and sum(w.values()) == pytest.approx(2.0)
    b.decay = 0.5
    for _ in range(40):
        b.update(torch.tensor([1.0, 1.0]))
    assert b.weights().tolist() == pytest.approx([1.0, 1.0], abs=1e-3)


def test_famo_stage2_trains_logs_its_weights_and_resumes(tmp_path: Path) -> None:
    teacher, stage1 = _models()
    data = torch.utils.data.TensorDataset(torch.randn(32, 3, 32, 32), LABELS.repeat(4, 1), (LABELS >= 0).float().repeat(4, 1))

    class Cut(Exception):
        pass

    def stop_at_5(name: str, step: int) -> None:
        if step == 5:
            raise Cut

    def train(steps_file: Path, callbacks: tuple = ()) -> tuple[Stage2Objective, dict[str, float]]:
        torch.manual_seed(1)
        model = mantis_stage2_from_stage1(stage1, teacher.task_tails(), "film")
        balancer = FamoBalancer(["a", "b", "c", "rate"])
        objective = Stage2Objective(model, 1.0, 1.0, 0.0, 2.0, "ste", balancer=balancer, label_smoothing=0.1)
        spec = FitSpec("stage2", 2, 8, 0, 0.0, "fp", steps_file, save_every=2, callbacks=list(callbacks))
        means = fit(objective, model, objective.param_groups(1e-3, 1e-2, 0.0, 0.5), data, spec, Runtime(torch.device("cpu")))
        return objective, means

    objective, means = train(tmp_path / "a.pt")
    assert {"w_a", "w_b", "w_c", "w_rate"} <= set(means)
    assert int(objective.balancer.steps) == 8 and not torch.equal(objective.balancer.xi, torch.zeros(4))
    state = torch.load(tmp_path / "a.pt", weights_only=True)
    assert torch.equal(state["stage_buffers"]["balancer.xi"], objective.balancer.xi)
    # a run cut after step 5 (last resume state: step 4) resumes with the balancer's state and ends
    # where the uninterrupted one did
    with pytest.raises(Cut):
        train(tmp_path / "b.pt", [stop_at_5])
    resumed, _ = train(tmp_path / "b.pt")
    assert torch.equal(resumed.balancer.xi, objective.balancer.xi)


def test_stage2_seed_changes_only_stage2() -> None:
    from training.pipeline import stage_fingerprints

    base = stage_fingerprints(load_config(TINY))
    seeded = stage_fingerprints(load_config(TINY, ["stage2.seed=1"]))
    assert seeded["teacher"] == base["teacher"] and seeded["stage1"] == base["stage1"]
    assert seeded["stage2"] != base["stage2"]
