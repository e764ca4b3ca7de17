"""Checkpoints and ``load_model``: strict round trips, and clear errors for missing/corrupt/mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from training.build import load_model
from training.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from training.data import preprocessing_meta
from training.models import create_model
from tests.training.tiny_models import tiny_stage1

TASKS = [{"name": "a", "labels": ["x", "y"]}, {"name": "b", "labels": ["p", "q", "r"]}]
TEACHER = {"name": "teacher_cnn", "kwargs": {"num_classes": [2, 3], "channels": [8, 8, 16, 16]}}
STAGE1 = tiny_stage1(2)
SPEC = {"name": "mantis_stage2", "kwargs": {"stage1": STAGE1, "teacher": TEACHER, "film_mode": "film"}}


def _meta(stage: str = "stage2", model: dict = SPEC) -> dict:
    return {"stage": stage, "model": model, "tasks": TASKS, "preprocessing": preprocessing_meta((32, 32), [0.5] * 3, [0.25] * 3)}


def _stage2(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(SPEC["name"], **SPEC["kwargs"])
    with torch.no_grad():  # move every parameter and batch-norm statistic away from its initial value
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and "cdf" not in name:
                t.add_(0.05 * torch.randn_like(t))
                if name.endswith("running_var"):
                    t.abs_()
    model.update(force=True)
    save_checkpoint(path, model.state_dict(), _meta())
    return model.eval()


def test_load_model_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "s2.safetensors"
    original = _stage2(path)
    loaded, meta = load_model(path, stage="stage2")
    assert not loaded.training and meta["tasks"] == TASKS and meta["stage"] == "stage2"
    a, b = original.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ca, cb = original.compress(x), loaded.compress(x)
    assert ca["strings"] == cb["strings"] and torch.equal(ca["active_tasks"], cb["active_tasks"])
    out = loaded.decompress(cb["strings"], cb["shape"])["out"]
    assert [o.shape for o in out] == [(3, 2), (3, 3)]


def test_teacher_checkpoint_round_trip(tmp_path: Path) -> None:
    teacher = create_model(TEACHER["name"], **TEACHER["kwargs"]).eval()
    save_checkpoint(tmp_path / "t.safetensors", teacher.state_dict(), _meta("teacher", TEACHER))
    loaded, _ = load_model(tmp_path / "t.safetensors", "teacher")
    x = torch.randn(2, 3, 32, 32)
    assert all(torch.equal(p, q) for p, q in zip(teacher(x), loaded(x)))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.safetensors"
    with pytest.raises(CheckpointError, match=f"{path}: no such file"):
        load_model(path)


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    path = tmp_path / "s2.safetensors"
    _stage2(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError, match=str(bad)):
            load_model(bad)


def test_foreign_and_wrong_stage_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="no MANTiS metadata"):
        load_model(foreign)
    path = tmp_path / "s2.safetensors"
    _stage2(path)
    with pytest.raises(CheckpointError, match="holds a stage2 model, a stage1 checkpoint is needed"):
        load_model(path, stage="stage1")


def test_weights_that_do_not_match_the_described_model(tmp_path: Path) -> None:
    path = tmp_path / "s2.safetensors"
    model = _stage2(path)
    wider = json.loads(json.dumps(SPEC))
    wider["kwargs"]["stage1"]["latent_channels"] = 6
    mismatched = tmp_path / "mismatched.safetensors"
    save_checkpoint(mismatched, model.state_dict(), _meta(model=wider))
    with pytest.raises(CheckpointError, match=f"{mismatched}: weights do not match"):
        load_model(mismatched)
    state = model.state_dict()
    state.pop("client.stem.layers.0.0.weight")
    missing = tmp_path / "missing_key.safetensors"
    save_checkpoint(missing, state, _meta())
    with pytest.raises(CheckpointError, match="Missing key"):
        load_model(missing)
    unknown = tmp_path / "unknown_model.safetensors"
    save_checkpoint(unknown, model.state_dict(), _meta(model={"name": "mantis_huge", "kwargs": {}}))
    with pytest.raises(CheckpointError, match="unknown model 'mantis_huge'"):
        load_model(unknown)


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    teacher = create_model(TEACHER["name"], **TEACHER["kwargs"])
    save_checkpoint(path, teacher.state_dict(), _meta("teacher", TEACHER))
    before = path.read_bytes()
    with pytest.raises(CheckpointError):
        save_checkpoint(path, teacher.state_dict(), {"stage": "bogus"})
    with pytest.raises(TypeError):
        save_checkpoint(path, {"w": torch.zeros(1)}, {**_meta("teacher", TEACHER), "bad": object()})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert read_checkpoint(path, "teacher")[1]["model"] == TEACHER
