"""Shared pytest fixtures. Expensive artifacts (checkpoints, bundles) are built once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# The test machines have two cores; keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Stage 2 checkpoint from ``training/configs/tiny.yaml`` (seconds of training)."""
    from training.train import main as train_main

    out = tmp_path_factory.mktemp("tiny_run")
    assert train_main(["--config", str(REPO / "training" / "configs" / "tiny.yaml"), "--out", str(out)]) == 0
    return Path(json.loads((out / "metrics.json").read_text())["checkpoint"])


def _export(checkpoint: Path, factory: pytest.TempPathFactory, target: str) -> Path:
    from export.split import main as split_main

    out = factory.mktemp("bundles") / target
    argv = ["--checkpoint", str(checkpoint), "--target", target, "--out", str(out), "--calibration-samples", "32", "--check-samples", "16"]
    assert split_main(argv) == 0
    return out


@pytest.fixture(scope="session")
def onnx_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle exported by ``export/split.py --target onnx`` from the tiny checkpoint."""
    return _export(tiny_checkpoint, tmp_path_factory, "onnx")


@pytest.fixture(scope="session")
def executorch_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle exported by ``export/split.py --target executorch`` (int8 ``edge.pte``) from the tiny checkpoint."""
    return _export(tiny_checkpoint, tmp_path_factory, "executorch")


EDGE_IMAGES = 6


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six held-out images of the tiny config's data, saved as PNG files (what a camera would hand the device)."""
    from training.config import load_config
    from training.data import build_datasets

    cfg = load_config(REPO / "training" / "configs" / "tiny.yaml")
    _, _, test, _, _ = build_datasets(cfg, splits=("test",))
    out = tmp_path_factory.mktemp("edge_images")
    paths = []
    for i in range(EDGE_IMAGES):
        path = out / f"img{i}.png"
        test.pil(i).save(path)
        paths.append(path)
    return paths
