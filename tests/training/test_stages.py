"""What each stage trains: frozen parts, optimizer groups, gradients reaching FiLM."""

from __future__ import annotations

import pytest
import torch

from training.models import create_model
from training.models.mantis import mantis_stage2_from_stage1
from training.stages import Stage1Objective, Stage2Objective
from tests.training.tiny_models import tiny_stage1

STAGE1 = tiny_stage1()


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _grouped(groups: list[dict]) -> list[torch.nn.Parameter]:
    return [p for g in groups for p in g["params"]]


def test_stage1_trains_everything_but_the_film_generator() -> None:
    model = create_model("mantis_stage1", **STAGE1)
    objective = Stage1Objective(model, beta=0.1, detection_weight=1.0)
    trainable = _trainable(model)
    assert {n for n in trainable if n.startswith("client.film_generator.")} == set()
    assert {n.split(".")[1] for n in trainable if n.startswith("client.")} == {"stem", "task_detector", "encoder"}
    grouped = _grouped(objective.param_groups(1e-3, 1e-2, 1e-4))
    assert len(grouped) == len({id(p) for p in grouped}) == len(trainable)


def test_stage2_trains_what_it_should_whatever_earlier_stages_froze() -> None:
    teacher = create_model("teacher_cnn", num_classes=[2, 3, 4], channels=[8, 8, 16, 16])
    stage1 = create_model("mantis_stage1", **STAGE1)
    Stage1Objective(stage1, beta=0.1, detection_weight=1.0)  # freezes the Stage 1 FiLM generator
    teacher.requires_grad_(False)  # the pipeline freezes the teacher for distillation
    x = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([[0, -1, 1], [1, 2, -1], [-1, 0, 3], [0, -1, -1], [-1, 1, -1], [1, -1, 2]])
    for mode in ("film", "identity"):
        model = mantis_stage2_from_stage1(stage1, teacher.task_tails(), mode)
        objective = Stage2Objective(model, beta=0.1, detection_weight=1.0, kd_weight=0.0, kd_temperature=2.0)
        trainable = _trainable(model)
        assert not any(n.startswith("client.stem.") for n in trainable)
        assert any(n.startswith("server.tails.") for n in trainable) and any(n.startswith("server.decoders.") for n in trainable)
        assert any(n.startswith("client.film_generator.") for n in trainable) == (mode == "film")
        groups = objective.param_groups(1e-3, 1e-2, 1e-4, encoder_lr_scale=0.1)
        grouped = _grouped(groups)
        assert len(grouped) == len({id(p) for p in grouped}) == len(trainable)
        encoder = {id(p) for p in model.client.encoder.parameters()}
        assert all(g["lr"] == 1e-4 for g in groups if any(id(p) in encoder for p in g["params"]))
        objective.train()
        assert not model.client.stem.training and model.client.encoder.training
        loss, logs = objective(x, labels, (labels >= 0).float())
        loss.backward()
        assert set(logs) == {"ce", "bce", "bpp"}
        last = model.client.film_generator.net[-1].weight.grad
        assert (last is not None and last.abs().sum() > 0) == (mode == "film")
        assert all(p.grad is None for p in model.client.stem.parameters())


def test_decoder_quantization_what_the_server_half_trains_on() -> None:
    """``ste``: in training the server sees the latent rounded around the medians (what it decodes at
    inference) while gradients reach the encoder; ``noise``: the noisy latent. The rate uses the noisy
    likelihoods either way, and evaluation always rounds."""
    import pytest

    torch.manual_seed(0)
    model = create_model("mantis_stage1", **STAGE1)
    x = torch.randn(4, 3, 32, 32)
    medians = model.entropy_bottleneck._get_medians().detach()
    for mode in ("ste", "noise"):
        Stage1Objective(model, beta=0.1, detection_weight=1.0, quantization=mode)
        assert model.decoder_quantization == mode
        model.train()
        model.zero_grad()
        out = model(x)
        offset = out["y_hat"] - medians
        assert torch.equal(offset, offset.round()) == (mode == "ste")
        out["out"].square().mean().backward()
        grad = model.client.encoder.project.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        offset = model(x)["y_hat"] - medians
    assert torch.equal(offset, offset.round())
    with pytest.raises(ValueError, match="decoder_quantization"):
        model.decoder_quantization = "round"


def _lite0(distill_layer: str) -> torch.nn.Module:
    """EfficientNet-Lite0 (untrained: the architecture is what matters here) cut at ``distill_layer``, 64x64."""
    return create_model(
        "teacher_efficientnet_lite",
        arch="efficientnet_lite0",
        distill_layer=distill_layer,
        task_class_indices=[[0, 1, 2]],
        input_size=[64, 64],
    )


def test_a_teacher_stem_is_the_teachers_first_layers_and_stays_frozen_in_stage1() -> None:
    teacher = _lite0("blocks.1")
    spec = {
        "name": "teacher_efficientnet_lite",
        "kwargs": {"arch": "efficientnet_lite0", "distill_layer": "blocks.0", "task_class_indices": [[0, 1, 2]], "input_size": [64, 64]},
    }
    kwargs = STAGE1 | {"num_tasks": 1, "teacher_channels": teacher.distill_channels, "teacher_stride": teacher.distill_stride}
    model = create_model("mantis_stage1", **kwargs | {"encoder_channels": [8, 8, 8]}, stem_teacher=spec)
    stem = model.client.stem
    assert stem.pretrained and (stem.out_channels, stem.stride, model.client.stride) == (16, 2, 16)
    stem.load_from_teacher_head(teacher.head_layers)
    x = torch.randn(4, 3, 64, 64)
    teacher.eval()
    with torch.no_grad():
        assert torch.equal(stem.eval()(x), teacher.head_layers[:3](x))
    before = {k: v.clone() for k, v in stem.state_dict().items()}
    objective = Stage1Objective(model, beta=0.1, detection_weight=1.0)
    assert not any(n.startswith("client.stem.") for n in _trainable(model))
    objective.train()
    optimizer = torch.optim.SGD(_grouped(objective.param_groups(0.1, 0.1, 0.0)), lr=0.1)
    loss, _ = objective(x, teacher.head(x).detach(), torch.ones(4, 1))
    loss.backward()
    optimizer.step()
    after = stem.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights or batch-norm statistics of the teacher's layers moved"


def test_a_stem_that_is_not_the_teachers_first_layers_is_refused() -> None:
    spec = {
        "name": "teacher_efficientnet_lite",
        "kwargs": {"arch": "efficientnet_lite0", "distill_layer": "blocks.1", "task_class_indices": [[0, 1, 2]], "input_size": [64, 64]},
    }
    kwargs = STAGE1 | {"num_tasks": 1, "teacher_channels": 24, "teacher_stride": 4}
    model = create_model("mantis_stage1", **kwargs | {"encoder_channels": [8, 8]}, stem_teacher=spec)
    with pytest.raises(ValueError, match="does not begin with this stem's layers"):
        model.client.stem.load_from_teacher_head(_lite0("blocks.0").head_layers)  # shallower than the stem
    with pytest.raises(ValueError, match="does not begin with this stem's layers"):
        model.client.stem.load_from_teacher_head(create_model("teacher_cnn", num_classes=[3]).head_layers)


def test_frozen_tails_keep_the_teachers_weights_and_statistics_through_stage2() -> None:
    teacher = create_model("teacher_cnn", num_classes=[2, 3, 4], channels=[8, 8, 16, 16])
    model = mantis_stage2_from_stage1(create_model("mantis_stage1", **STAGE1), teacher.task_tails(), "film")
    objective = Stage2Objective(model, beta=0.1, detection_weight=1.0, kd_weight=0.0, kd_temperature=2.0, freeze_tails=True)
    trainable = _trainable(model)
    assert not any(n.startswith("server.tails.") for n in trainable) and any(n.startswith("server.decoders.") for n in trainable)
    before = {k: v.clone() for k, v in model.server.tails.state_dict().items()}
    objective.train()
    optimizer = torch.optim.SGD(_grouped(objective.param_groups(0.1, 0.1, 0.0, encoder_lr_scale=1.0)), lr=0.1)
    labels = torch.tensor([[0, -1, 1], [1, 2, -1], [-1, 0, 3], [0, 1, 2]])
    loss, _ = objective(torch.randn(4, 3, 32, 32), labels, (labels >= 0).float())
    loss.backward()
    optimizer.step()
    after = model.server.tails.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the teacher's tail moved"
