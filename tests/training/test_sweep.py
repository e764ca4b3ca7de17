"""training/sweep.py: plans, checkpoint reuse, finished points, resume, the report; and the demo's view of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import training.sweep as sweep_mod
from training.config import load_config
from training.sweep import SweepError, build_report, main, parse_args, plan, seed_checkpoints

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "tiny.yaml"
SMALL = ["data.synthetic.train_size=64", "data.synthetic.test_size=32", "model.latent_channels=2"]


def test_plan_and_bad_variants() -> None:
    points = plan(["film", "no_film@1", "famo@0"], [4, 1, 4], 0, ["seed=0"])
    assert [(p.label, p.beta) for p in points] == [
        ("film", 1.0),
        ("film", 4.0),
        ("no_film@seed1", 1.0),
        ("no_film@seed1", 4.0),
        ("famo", 1.0),
        ("famo", 4.0),
    ]
    assert points[2].overrides[-1] == "stage2.seed=1" and "ablations.no_film=true" in points[2].overrides
    assert points[2].config_overrides()[-1] == "stage2.beta=1.0"
    by_beta = plan(["film", "ib_warmup_50", "ib_warmup_10"], [4, 1], 0, [], by_beta=True)
    assert [(p.label, p.beta) for p in by_beta] == [
        ("film", 1.0),
        ("ib_warmup_50", 1.0),
        ("ib_warmup_10", 1.0),
        ("film", 4.0),
        ("ib_warmup_50", 4.0),
        ("ib_warmup_10", 4.0),
    ]
    assert "stage2.beta_warmup=0.5" in by_beta[1].overrides and "stage2.beta_warmup=0.1" in by_beta[2].overrides
    with pytest.raises(SweepError, match="unknown variant 'dropout'"):
        plan(["dropout"], [1], 0, [])
    with pytest.raises(SweepError, match="must be a non-negative integer"):
        plan(["film@x"], [1], 0, [])
    assert parse_args(["--config", "c", "--out", "o", "--betas", "1", "2", "--variant", "no_film"]).variants == ["no_film"]
    assert parse_args(["--config", "c", "--out", "o", "--betas", "1", "--by-beta"]).by_beta


def test_sweep_reuses_checkpoints_and_points_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sweep"
    argv = ["--config", str(TINY), "--out", str(out), "--betas", "1", "2", "--variants", "film", "no_film"]
    for s in SMALL:
        argv += ["--set", s]
    assert main(argv) == 0
    assert "| film | 1 |" in capsys.readouterr().out
    records = {p.parent.parent.name + "/" + p.parent.name: json.loads(p.read_text()) for p in out.glob("*/beta_*/point.json")}
    assert sorted(records) == ["film/beta_1", "film/beta_2", "no_film/beta_1", "no_film/beta_2"]
    # one teacher and one Stage 1 for the sweep; the No-FiLM points reuse the FiLM model of the same beta'
    assert records["film/beta_1"]["cached_stages"] == []
    assert records["film/beta_2"]["cached_stages"] == ["teacher", "stage1"]
    assert records["no_film/beta_2"]["cached_stages"] == ["teacher", "stage1", "stage2"]
    report = json.loads((out / "curves.json").read_text())
    assert set(report["curves"]) == {"film", "no_film"} and "error" in report["bd_rate"]["no_film vs film"]  # 2 points < 4
    assert (out / "curves.png").stat().st_size > 0 and "BD-rate" in (out / "curves.md").read_text()

    calls = []
    real_run = sweep_mod.run
    monkeypatch.setattr(sweep_mod, "run", lambda *a, **k: calls.append(a[1]) or real_run(*a, **k))
    assert main(argv) == 0  # everything finished: nothing runs
    assert calls == []
    (out / "film" / "beta_2" / "point.json").unlink()  # cut before the point was recorded: it runs again,
    assert main(argv) == 0  # and the pipeline reuses its finished stages
    assert calls == [out / "film" / "beta_2"]
    again = json.loads((out / "film" / "beta_2" / "point.json").read_text())
    assert again["cached_stages"] == ["teacher", "stage1", "stage2"] and again["point"] == records["film/beta_2"]["point"]

    # another sweep dir reuses this one's checkpoints through --reuse when the config matches
    cfg = load_config(TINY, SMALL + ["stage2.beta=3.0", "ablations.no_film=false"])
    assert seed_checkpoints(tmp_path / "other", cfg, [out / "film" / "beta_1"]) == ["teacher", "stage1"]
    cfg = load_config(TINY, SMALL + ["stage1.saliency=0.5"])
    assert seed_checkpoints(tmp_path / "third", cfg, [out / "film" / "beta_1"]) == ["teacher"]


def _record(label: str, variant: str, seed: int | None, beta: float, nbytes: float, acc: float) -> dict:
    return {
        "label": label,
        "variant": variant,
        "seed": seed,
        "overrides": [],
        "point": {"beta": beta, "bytes_per_image": nbytes, "mean_task_accuracy": acc, "task_accuracy": {"a": acc}},
    }


def _curve(label: str, variant: str, seed: int | None, scale: float) -> list[dict]:
    acc = [0.97, 0.96, 0.94, 0.91]
    return [_record(label, variant, seed, b, n * scale, a) for b, n, a in zip([1, 2, 4, 10], [80.0, 60.0, 50.0, 40.0], acc)]


def test_report_compares_curves_per_seed_and_with_baselines(tmp_path: Path) -> None:
    records = (
        _curve("film", "film", None, 1.0)
        + _curve("no_film", "no_film", None, 1.1)
        + _curve("film@seed1", "film", 1, 1.0)
        + _curve("no_film@seed1", "no_film", 1, 1.2)
        + _curve("famo", "famo", None, 0.5)
    )
    jpeg = [{"bytes_per_image": b, "mean_task_accuracy": a} for b, a in [(500, 0.85), (800, 0.92), (1200, 0.95), (3000, 0.96)]]
    report = build_report(records, "film", [("famo", "no_film")], {"jpeg": jpeg})
    bd = report["bd_rate"]
    assert bd["famo vs film"]["bd_rate_percent"] == pytest.approx(-50.0)
    assert bd["no_film@seed1 vs film@seed1"]["bd_rate_percent"] == pytest.approx(20.0)
    assert "film@seed1 vs film@seed1" not in bd  # a seed's reference curve is not compared with itself
    assert bd["no_film vs famo"]["bd_rate_percent"] == pytest.approx(120.0)
    nf = report["no_film_vs_film"]
    assert nf["seeds"] == 2 and nf["mean"] == pytest.approx(15.0) and (nf["min"], nf["max"]) == pytest.approx((10.0, 20.0))
    vs = report["vs_baselines"]["film"]
    assert vs["best"]["format"] == "jpeg" and vs["jpeg"]["bd_rate_percent"] < -90
    with pytest.raises(SweepError, match="no curve 'nope'"):
        build_report(records, "film", [("film", "nope")])
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(SweepError, match="no 'jpeg' or 'webp'"):
        sweep_mod.load_baselines(tmp_path / "r.json")
    with pytest.raises(SweepError, match="no such file"):
        sweep_mod.load_baselines(tmp_path / "missing.json")


def test_demo_shows_the_sweep_as_curves(tmp_path: Path) -> None:
    from demo import parse_args as demo_args
    from mantis_demo.pipeline import DemoError, load_sweep
    from mantis_demo.report import _sweep_markdown, plot_rate_accuracy, sweep_section

    records = _curve("film", "film", None, 1.0) + _curve("no_film", "no_film", None, 1.1)
    sweep = build_report(records, "film")
    sweep.update(config=str(TINY), sets=[])
    webp = [
        {"bytes_per_image": b, "mean_task_accuracy": a, "task_accuracy": {"a": a}, "quality": q}
        for q, b, a in [(3, 200, 0.90), (10, 300, 0.93), (20, 400, 0.95), (30, 480, 0.96)]
    ]
    jpeg = [{**p, "bytes_per_image": p["bytes_per_image"] * 3} for p in webp]
    section = sweep_section(sweep, {"jpeg": jpeg, "webp": webp}, "runs/sweep")
    assert section["vs_best_baseline"]["format"] == "webp"  # JPEG needs 3x WebP's bytes everywhere
    assert section["vs_baselines"]["jpeg"]["bd_rate_percent"] + 100 == pytest.approx(
        (section["vs_baselines"]["webp"]["bd_rate_percent"] + 100) / 3
    )
    assert section["no_film_vs_film"]["bd_rate_percent"] == pytest.approx(10.0)
    report = {
        "edge_int8": {"bytes_per_image": 50.0, "mean_task_accuracy": 0.94, "task_accuracy": {"a": 0.94}},
        "float": {},
        "jpeg": jpeg,
        "webp": webp,
        "sweep": section,
    }
    plot_rate_accuracy(report, tmp_path / "ra.png")
    assert (tmp_path / "ra.png").stat().st_size > 0
    assert "MANTiS vs the best baseline (WEBP)" in "\n".join(_sweep_markdown(section))
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "curves.json").write_text(json.dumps(sweep))
    assert load_sweep(tmp_path / "sw", load_config(TINY))["curves"].keys() == {"film", "no_film"}
    with pytest.raises(DemoError, match="other data"):
        load_sweep(tmp_path / "sw", load_config(TINY, ["data.synthetic.test_size=48"]))
    with pytest.raises(DemoError, match="no curves.json"):
        load_sweep(tmp_path, load_config(TINY))
    assert demo_args(["--sweep", "runs/sweep"]).sweep == Path("runs/sweep")
