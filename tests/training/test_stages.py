"""What each stage trains: frozen parts, optimizer groups, gradients reaching FiLM."""

from __future__ import annotations

import torch

from training.models import create_model
from training.models.mantis import mantis_stage2_from_stage1
from training.stages import Stage1Objective, Stage2Objective

STAGE1 = {
    "num_tasks": 3,
    "teacher_channels": 16,
    "teacher_stride": 8,
    "stem_channels": 8,
    "encoder_channels": [8, 8],
    "latent_channels": 4,
    "decoder_hidden": 8,
    "detector_hidden": 8,
    "film_hidden": 8,
}


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
