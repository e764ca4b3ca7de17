"""End-to-end training on the tiny config: the metrics contract, stage caching, and resume after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from codec.rans import FLUSH_FIXED_BYTES

from training.build import load_model
from training.checkpoint import read_checkpoint
from training.config import load_config
from training.pipeline import run

TINY = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml"
RESULT_KEYS = {"task_accuracy": dict, "task_detection_accuracy": float, "bytes_per_image": float, "estimated_bytes_per_image": float}


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full")
    run(load_config(TINY), out)
    return out


def _check_result(result: dict, task_names: list[str]) -> None:
    for key, kind in RESULT_KEYS.items():
        assert isinstance(result[key], kind), key
    assert sorted(result["task_accuracy"]) == sorted(task_names)
    assert all(0.0 <= v <= 1.0 for v in result["task_accuracy"].values())
    assert 0.0 <= result["task_detection_accuracy"] <= 1.0
    assert result["bytes_per_image"] > result["header_bytes_per_image"] > 0
    assert result["estimated_bytes_per_image"] > 0
    assert result["fixed_bytes_per_image"] == result["header_bytes_per_image"] + FLUSH_FIXED_BYTES
    excess = result["bytes_per_image"] - result["fixed_bytes_per_image"] - result["estimated_bytes_per_image"]
    assert result["coding_overhead"] * result["estimated_bytes_per_image"] == pytest.approx(excess)
    spread = result["coding_overhead_bytes"]
    assert spread["min"] <= spread["mean"] <= spread["max"]
    assert spread["mean"] == pytest.approx(excess)


def test_metrics_file_has_the_contract_keys(full_run: Path) -> None:
    metrics = json.loads((full_run / "metrics.json").read_text())
    names = [t["name"] for t in metrics["tasks"]]
    assert sorted(metrics["teacher"]["task_accuracy"]) == sorted(names)
    _check_result(metrics["stage2"], names)
    _check_result(metrics["ablations"]["no_film"], names)
    _check_result(metrics["ablations"]["oracle"], names)
    assert metrics["ablations"]["oracle"]["task_detection_accuracy"] == 1.0
    model, meta = load_model(metrics["checkpoint"], stage="stage2")
    assert meta["film_mode"] == "film" and [t["name"] for t in meta["tasks"]] == names
    assert meta["preprocessing"]["input_size"] == [32, 32]
    _, no_film_meta = load_model(metrics["checkpoints"]["no_film"], stage="stage2")
    assert no_film_meta["film_mode"] == "identity"
    assert not list(full_run.glob("*.resume.pt"))


def test_rerun_reuses_finished_stages_and_retrains_what_changed(full_run: Path, tmp_path: Path) -> None:
    again = run(load_config(TINY), full_run)
    assert again["cached_stages"] == ["teacher", "stage1", "stage2", "no_film"]
    assert again["stage2"] == json.loads((full_run / "metrics.json").read_text())["stage2"]
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("teacher.safetensors", "stage1.safetensors"):
        (changed / name).write_bytes((full_run / name).read_bytes())
    result = run(load_config(TINY, ["stage2.beta=0.5", "ablations.no_film=false"]), changed)
    assert result["cached_stages"] == ["teacher", "stage1"]
    assert "no_film" not in result["ablations"] and (changed / "stage2.safetensors").exists()


def test_interrupted_stage_resumes_where_it_stopped(full_run: Path, tmp_path: Path) -> None:
    cfg = load_config(TINY)  # save_every: 2, and 4 Stage 1 steps per epoch

    def kill_at_step_3(stage: str, step: int) -> None:
        if stage == "stage1" and step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(cfg, tmp_path, callbacks=[kill_at_step_3])
    assert (tmp_path / "teacher.safetensors").exists() and not (tmp_path / "stage1.safetensors").exists()
    state = torch.load(tmp_path / "stage1.resume.pt", weights_only=True)
    assert state["step"] == 2

    steps: list[tuple[str, int]] = []
    result = run(cfg, tmp_path, callbacks=[lambda stage, step: steps.append((stage, step))])
    assert result["cached_stages"] == ["teacher"]
    assert [s for s in steps if s[0] == "stage1"][0] == ("stage1", 3)
    assert not (tmp_path / "stage1.resume.pt").exists()
    # the resumed run reproduces the uninterrupted one exactly
    for name in ("stage1.safetensors", "stage2.safetensors"):
        resumed, _ = read_checkpoint(tmp_path / name)
        reference, _ = read_checkpoint(full_run / name)
        assert resumed.keys() == reference.keys()
        assert all(torch.equal(resumed[k], reference[k]) for k in reference), name


def test_finished_stages_measured_on_another_bitstream_format_are_measured_again(full_run: Path, tmp_path: Path) -> None:
    """Reused Stage 1 and Stage 2 checkpoints whose metrics predate the current bitstream format (bytes counted
    with another header) are evaluated again, not trusted; their weights are kept."""
    import codec
    from training.checkpoint import read_metadata, save_checkpoint

    old = tmp_path / "old"
    old.mkdir()
    for path in full_run.glob("*.safetensors"):
        (old / path.name).write_bytes(path.read_bytes())
    for name in ("stage1", "stage2"):
        state, meta = read_checkpoint(old / f"{name}.safetensors")
        stale = {k: v for k, v in meta["metrics"].items() if k != "bitstream_version"}
        stale["bytes_per_image"] = 1e6  # what an older format would have counted
        save_checkpoint(old / f"{name}.safetensors", state, {**meta, "metrics": stale})
    result = run(load_config(TINY), old)
    assert {"teacher", "stage1", "stage2"} <= set(result["cached_stages"])  # reused, not trained again
    fresh = json.loads((full_run / "metrics.json").read_text())
    for name in ("stage1", "stage2"):
        assert result[name]["bitstream_version"] == codec.FORMAT_VERSION
        assert result[name]["bytes_per_image"] == fresh[name]["bytes_per_image"]
        assert read_metadata(old / f"{name}.safetensors")["metrics"]["bytes_per_image"] == fresh[name]["bytes_per_image"]
