"""Multi-process training: torchrun with the gloo backend on CPUs; AMP where a GPU exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.build import load_model
from training.train import main as train_main

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "tiny.yaml"


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "training" / "train.py"),
        "--config",
        str(TINY),
        "--out",
        str(tmp_path),
        "--set",
        "device=cpu",
        "--set",
        "threads=1",
        "--set",
        "ablations.no_film=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["stage2"]["task_accuracy"]) == {"shape", "orientation", "count"}
    load_model(metrics["checkpoint"], "stage2")
    assert not list(tmp_path.glob("*.resume.pt"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_training_on_a_gpu(tmp_path: Path) -> None:
    assert train_main(["--config", str(TINY), "--out", str(tmp_path), "--amp", "--set", "device=cuda"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    model, _ = load_model(metrics["checkpoint"], "stage2")
    assert metrics["stage2"]["bytes_per_image"] > 0 and not any(p.isnan().any() for p in model.parameters())
