"""benchmarks/ib_warmup.py: the phases' BD-rates, the per-seed statistics, the verdict and the results file,
from finished sweep points written as training/sweep.py writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.ib_warmup import (
    RAMPS,
    STAGE1_RAMPS,
    analyse,
    main,
    mean_int8_curves,
    planned_points,
    ramp_fraction,
    read_points,
    verdict,
    warmup_variants,
)

ACC = [0.90, 0.93, 0.95, 0.96]
BYTES = [20.0, 30.0, 45.0, 70.0]


def _write_curve(out: Path, label: str, variant: str, seed: int | None, scale: float) -> None:
    for beta, nbytes, acc in zip([30.0, 10.0, 3.0, 1.0], BYTES, ACC):
        d = out / label / f"beta_{beta:g}"
        d.mkdir(parents=True)
        record = {
            "label": label,
            "variant": variant,
            "seed": seed,
            "result": "stage2",
            "point": {"beta": beta, "bytes_per_image": nbytes * scale, "mean_task_accuracy": acc, "task_accuracy": {"a": acc}},
        }
        (d / "point.json").write_text(json.dumps(record))


def test_ramp_fractions_and_plan() -> None:
    assert [ramp_fraction(v) for v in ("ib_warmup_10", "ib_warmup", "ib_warmup_50")] == [0.1, 0.3, 0.5]
    with pytest.raises(ValueError, match="sets no stage2.beta_warmup"):
        ramp_fraction("film")
    assert planned_points(0, [1], [1, 3], ["ib_warmup"], None) == [("film", 1.0), ("film", 3.0), ("ib_warmup", 1.0), ("ib_warmup", 3.0)]
    phase2 = planned_points(0, [0, 2], [1], ["ib_warmup"], "ib_warmup")
    assert phase2[2:] == [("film@seed2", 1.0), ("ib_warmup@seed2", 1.0)]
    assert planned_points(0, [], [1], ["ib_warmup"], None, ["ib_warmup_stage1"])[-1] == ("ib_warmup_stage1", 1.0)
    assert planned_points(0, [0, 2], [1], ["ib_warmup"], None, ["ib_warmup_stage1"])[-2:] == [
        ("ib_warmup_stage1", 1.0),
        ("ib_warmup_stage1@seed2", 1.0),
    ]


def test_verdict_rule() -> None:
    assert verdict([-20.0, -25.0, -22.0], [5.0, 3.0], 3) == "holds"
    assert verdict([-20.0, 2.0, -22.0], [5.0, 3.0], 3) == "does not hold"  # one seed loses
    assert verdict([-10.0, -12.0, -11.0], [15.0, 3.0], 3) == "does not hold"  # film's own seeds differ by more
    assert verdict([-5.0, -30.0, -10.0], [1.0, 1.0], 3) == "does not hold"  # range 25 > |mean| 15
    assert verdict([-20.0], [], 3).startswith("undecided: 1 of 3")


def test_phases_and_results_file(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    _write_curve(out, "film", "film", None, 1.0)
    _write_curve(out, "ib_warmup_10", "ib_warmup_10", None, 0.9)
    _write_curve(out, "ib_warmup", "ib_warmup", None, 0.7)
    _write_curve(out, "ib_warmup_50", "ib_warmup_50", None, 0.8)
    _write_curve(out, "film@seed1", "film", 1, 1.1)
    _write_curve(out, "ib_warmup@seed1", "ib_warmup", 1, 0.88)  # 20 % below film of seed 1
    _write_curve(out, "ib_warmup_stage1", "ib_warmup_stage1", None, 0.95)  # phase 3: the Stage 1 warm-up
    _write_curve(out, "ib_warmup_stage1@seed1", "ib_warmup_stage1", 1, 1.1 * 0.85)  # 15 % below film of seed 1

    curves = read_points(out)
    assert [p["beta"] for p in curves["film"]] == [1.0, 3.0, 10.0, 30.0]
    a = analyse(curves, 0, [1, 2], stage1_ramps=["ib_warmup_stage1"])
    stage1 = a["stage1"]["ib_warmup_stage1"]
    assert stage1["per_seed"]["0"]["bd_rate_percent"] == pytest.approx(-5.0)
    assert stage1["per_seed"]["1"]["bd_rate_percent"] == pytest.approx(-15.0) and "error" in stage1["per_seed"]["2"]
    assert stage1["stats"]["mean"] == pytest.approx(-10.0) and stage1["verdict"] == "undecided: 2 of 3 seeds measured"
    assert a["best_ramp"] == "ib_warmup"
    assert {k: round(v["bd_rate_percent"], 6) for k, v in a["phase1"].items()} == {
        "ib_warmup_10": -10.0,
        "ib_warmup": -30.0,
        "ib_warmup_50": -20.0,
    }
    assert a["per_seed"]["1"]["bd_rate_percent"] == pytest.approx(-20.0)
    assert "error" in a["per_seed"]["2"] and a["film_seed_noise"]["1"]["bd_rate_percent"] == pytest.approx(10.0)
    assert a["stats"]["mean"] == pytest.approx(-25.0) and a["stats"]["range"] == pytest.approx(10.0)
    assert a["verdict"] == "undecided: 2 of 3 seeds measured"
    pairs = {(r["seed"], r["ramp"], r["beta"]): r for r in a["same_beta_pairs"]}
    assert len(pairs) == 16 and pairs[(1, "ib_warmup", 3.0)]["bytes_ratio"] == pytest.approx(0.8)
    assert pairs[(0, "ib_warmup_10", 1.0)]["accuracy_difference"] == 0.0
    assert analyse(curves, 0, [1], best="ib_warmup_50")["per_seed"]["0"]["bd_rate_percent"] == pytest.approx(-20.0)

    results = tmp_path / "results"
    assert main(["--out", str(out), "--no-train", "--seeds", "1", "--results-dir", str(results)]) == 0
    doc = json.loads((results / "ib_warmup.json").read_text())
    assert doc["headline"][0]["value"] == "holds"  # -30 and -20 against a film seed noise of 10
    mean = next(h for h in doc["headline"] if h["metric"].startswith("Stage 2 IB warm-up (ib_warmup) vs film: mean"))
    assert mean["value"] == -25.0
    assert doc["data"]["missing"] == [] and len(doc["data"]["finished"]) == 32
    stage1 = {h["metric"]: h["value"] for h in doc["headline"] if h["metric"].startswith("Stage 1 IB warm-up")}
    # -5 and -15 (mean -10, range 10) against a film seed noise of 10: not beyond the spread
    assert stage1["Stage 1 IB warm-up (ib_warmup_stage1): verdict over the Stage 2 seeds"] == "does not hold"
    assert stage1["Stage 1 IB warm-up (ib_warmup_stage1) vs film: mean BD-rate over 2 seed(s)"] == -10.0
    assert main(["--out", str(out), "--no-train", "--seeds", "1", "2", "--results-dir", str(results)]) == 0
    doc = json.loads((results / "ib_warmup.json").read_text())
    assert doc["headline"][0]["value"].startswith("undecided") and "film@seed2 beta'=1" in doc["data"]["missing"]


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--int8", "--no-train"])  # the int8 curve is compared with baselines
    assert warmup_variants("stage2") == list(RAMPS) and warmup_variants("stage1") == list(STAGE1_RAMPS)
    with pytest.raises(SystemExit):
        main(["--no-train", "--best", "ib_warmup_stage1"])  # a Stage 1 warm-up is not a Stage 2 ramp
    assert main(["--out", str(tmp_path), "--no-train", "--baselines", str(tmp_path / "none.json"), "--results-dir", str(tmp_path)]) == 2
    assert "none.json: no such file" in capsys.readouterr().err


def test_mean_int8_curve_averages_the_seeds_per_beta() -> None:
    def int8(curve: str, scale: float, betas: list[float]) -> dict:
        pts = [
            {"beta": b, "bytes_per_image": n * scale, "mean_task_accuracy": a}
            for b, n, a in zip([30.0, 10.0, 3.0, 1.0], BYTES, ACC)
            if b in betas
        ]
        return {"curve": curve, "points": pts}

    baselines = {"webp": [{"bytes_per_image": 10 * n, "mean_task_accuracy": a} for n, a in zip(BYTES, ACC)]}
    full = [1, 3, 10, 30]
    curves = [int8("m", 1.0, full), int8("m@seed1", 0.8, full), int8("m@seed2", 0.9, full), int8("solo", 1.0, full)]
    curves += [int8("n", 1.0, full), int8("n@seed1", 1.0, [3, 10, 30])]
    mean, partial = mean_int8_curves(curves, baselines)  # "solo" has one seed: no mean
    assert mean["members"] == ["m", "m@seed1", "m@seed2"] and [p["beta"] for p in mean["points"]] == [1.0, 3.0, 10.0, 30.0]
    assert mean["points"][1]["bytes_per_image"] == pytest.approx(45.0 * 0.9)
    assert mean["vs_baselines"]["best"]["bd_rate_percent"] == pytest.approx(-91.0)
    assert [p["beta"] for p in partial["points"]] == [3.0, 10.0, 30.0]  # the beta' values every seed has
    assert "error" in partial["vs_baselines"]["webp"]  # three points are too few for a BD-rate
