"""The demo's int8 curve (``--curve``): its BD-rates against JPEG/WebP, its report section, plot and results
headline; and a run on the tiny config that trains, exports and measures every point on the device path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mantis_demo.pipeline import DemoError, DemoOptions, run_demo
from mantis_demo.report import _int8_curve_markdown, int8_curve_section, plot_rate_accuracy
from training.sweep import CURVE_BETAS

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "tiny.yaml"
_spec = importlib.util.spec_from_file_location("demo_script", REPO / "demo.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def _baselines() -> dict:
    webp = [
        {"quality": q, "bytes_per_image": b, "mean_task_accuracy": a, "task_accuracy": {"a": a}}
        for q, b, a in [(3, 200, 0.90), (10, 300, 0.93), (20, 400, 0.95), (30, 480, 0.96)]
    ]
    return {"jpeg": [{**p, "bytes_per_image": p["bytes_per_image"] * 3} for p in webp], "webp": webp}


def _curve(scale: float) -> dict:
    points = [
        {
            "beta": beta,
            "bytes_per_image": p["bytes_per_image"] * scale,
            "mean_task_accuracy": p["mean_task_accuracy"],
            "task_accuracy": p["task_accuracy"],
            "float": {"bytes_per_image": 1.0, "mean_task_accuracy": 0.9},
            "symbol_agreement": 1.0,
            "images": 10,
            "bundle": "b",
        }
        for beta, p in zip([30.0, 10.0, 3.0, 1.0], _baselines()["webp"])
    ]
    return {"target": "executorch", "method": "m", "points": points}


def test_int8_curve_section_bd_rates_report_and_plot(tmp_path: Path) -> None:
    base = _baselines()
    section = int8_curve_section(_curve(0.1), base, "runs/demo/curve")
    assert section["vs_baselines"]["webp"]["bd_rate_percent"] == pytest.approx(-90.0)
    assert section["vs_baselines"]["jpeg"]["bd_rate_percent"] == pytest.approx(100 * (0.1 / 3 - 1))
    assert section["vs_best_baseline"]["format"] == "webp"  # the format MANTiS saves least against
    assert "bundle" not in section["points"][0]
    md = "\n".join(_int8_curve_markdown(section))
    assert "MANTiS int8 vs the best baseline (WEBP)** | **-90.0 %" in md
    short = int8_curve_section({**_curve(0.1), "points": _curve(0.1)["points"][:3]}, base, "d")
    assert "at least 4" in short["vs_baselines"]["webp"]["error"] and "vs_best_baseline" not in short
    report = {
        "edge_int8": {"bytes_per_image": 50.0, "mean_task_accuracy": 0.94, "task_accuracy": {"a": 0.94}},
        "float": {},
        **base,
        "int8_curve": section,
    }
    plot_rate_accuracy(report, tmp_path / "ra.png")
    assert (tmp_path / "ra.png").read_bytes()[:4] == b"\x89PNG"


def test_curve_arguments() -> None:
    assert demo.parse_args([]).curve is None
    assert demo.parse_args(["--curve"]).curve == list(CURVE_BETAS)
    assert demo.parse_args(["--curve", "2", "8"]).curve == [2.0, 8.0]


def test_curve_refuses_a_limit(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="whole test split"):
        run_demo(DemoOptions(out=tmp_path, config=TINY, limit=5, curve=[1.0]), log=lambda msg: None)


@pytest.mark.heavy
def test_demo_curve_on_the_tiny_config(tmp_path: Path, tiny_checkpoint: Path, executorch_bundle: Path) -> None:
    out = tmp_path / "demo"
    betas = [0.1, 1.0]  # 0.1: tiny.yaml's beta', the demo checkpoint itself; two points keep the exports few
    opts = DemoOptions(out=out, config=TINY, checkpoint=tiny_checkpoint, artifacts=executorch_bundle, qualities=(10, 50, 90), curve=betas)
    report = run_demo(opts, log=lambda msg: None)
    c = report["int8_curve"]
    assert [p["beta"] for p in c["points"]] == betas
    point0 = json.loads((out / "curve" / "film" / "beta_0.1" / "point.json").read_text())
    assert point0["cached_stages"] == ["teacher", "stage1", "stage2"]  # the demo's own model is the curve's point
    for p in c["points"]:
        check = json.loads((out / "curve" / "film" / f"beta_{p['beta']:g}" / "bundle_executorch" / "int8_check.json").read_text())
        assert p["bytes_per_image"] == check["int8"]["bytes_per_image"] and p["images"] == report["dataset"]["images"] == 64
    assert set(c["vs_baselines"]) == {"jpeg", "webp"}  # two points give no BD-rate, and the report says why
    assert all("at least 4" in r["error"] for r in c["vs_baselines"].values()) and "vs_best_baseline" not in c
    assert "## MANTiS int8 rate-accuracy curve" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["int8_curve"] == json.loads(json.dumps(c))
