"""The information-bottleneck warm-up of Stage 2 (beta' ramped from 0) against plain FiLM, by BD-rate.

    uv run python -m benchmarks.ib_warmup --out runs/ib_warmup --reuse runs/demo/train \\
        --baselines runs/demo/report.json                 # train what is missing, then report
    uv run python -m benchmarks.ib_warmup --out runs/ib_warmup --no-train   # report what is finished

Three phases, all points of ``training/sweep.py`` in one sweep directory (a finished point is read back,
so a rerun resumes where the last one stopped):

1. ``film`` and every ramp length (``ib_warmup``: 30 %, ``ib_warmup_10``, ``ib_warmup_50``) on the
   config's own seed (``film`` and the first ramp by beta', then each other ramp as a whole curve); the
   ramp with the lowest BD-rate against ``film`` is the best ramp;
2. ``film`` and the best ramp on every further Stage 2 seed (``--seeds``, ``NAME@SEED``): the BD-rate of
   the ramp against ``film`` of the same seed, per seed, with mean, standard deviation and range; and
   the seed-to-seed noise of ``film`` itself (each seed's ``film`` curve against the config seed's);
3. each Stage 1 warm-up (``--stage1-ramps``: ``ib_warmup_stage1``, beta ramped over the first 50 % of Stage 1,
   Stage 2 as configured) on the config's seed and every further Stage 2 seed, by BD-rate against ``film``
   of the same seed, with its own verdict;
4. with ``--int8``, the int8 device path of the best ramp's curve on the config's seed (or of ``--int8-curve``'s)
   (``calibration/int8_curve.py``) and its BD-rate against JPEG and WebP (``--baselines``); when the curves
   include one method on several seeds, also their mean curve (bytes and accuracy averaged per beta').

The verdict: a warm-up *holds* when its BD-rate against ``film`` is negative on every seed and the
magnitude of its mean exceeds both its own range over the seeds and the largest seed-to-seed BD-rate of
``film``. ``results/ib_warmup.json`` lists every planned point as finished or missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from benchmarks.results import Headline, Table, add_results_arguments, write_results
from calibration.int8_accuracy import CheckError
from calibration.int8_curve import Int8CurveError, int8_curve
from export.errors import ExportError
from training.checkpoint import CheckpointError
from training.data import DatasetError
from training.config import ConfigError, load_config
from training.curves import Curve, CurveError, bd_rate
from training.sweep import CURVE_BETAS, POINT_FILE, VARIANTS, SweepError, compare_to_baselines, load_baselines, plan, sweep

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "training" / "configs" / "ib_warmup.yaml"
REFERENCE = "film"
RAMPS = ("ib_warmup", "ib_warmup_10", "ib_warmup_50")  # the first runs first: 30 %, the methods sweep's candidate
DEFAULT_SEEDS = (1, 2)
STAGE1_RAMPS = ("ib_warmup_stage1",)


def ramp_fraction(variant: str) -> float:
    """The ``stage2.beta_warmup`` a ramp variant sets (from ``training.sweep.VARIANTS``)."""
    for override in VARIANTS[variant].overrides:
        key, _, value = override.partition("=")
        if key == "stage2.beta_warmup":
            return float(value)
    raise ValueError(f"variant {variant!r} sets no stage2.beta_warmup")


def warmup_variants(stage: str) -> list[str]:
    """The sweep variants that ramp ``stage``'s beta (``stage1`` or ``stage2``) and change nothing else."""
    return [v for v, spec in VARIANTS.items() if spec.overrides and all(o.startswith(f"{stage}.beta_warmup=") for o in spec.overrides)]


def label(variant: str, seed: int, global_seed: int) -> str:
    """The sweep's curve label of ``variant`` on Stage 2 seed ``seed`` (as ``training.sweep.plan`` names it)."""
    return variant if seed == global_seed else f"{variant}@seed{seed}"


def read_points(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every finished point (``point.json``) of the sweep directory ``out``, by curve label, by beta'."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob(f"*/beta_*/{POINT_FILE}")):
        record = json.loads(path.read_text())
        curves.setdefault(record["label"], []).append(record["point"])
    for points in curves.values():
        points.sort(key=lambda p: p["beta"])
    return curves


def _bd(curves: dict[str, list[dict[str, Any]]], ref: str, test: str) -> dict[str, Any]:
    missing = [n for n in (ref, test) if n not in curves]
    if missing:
        return {"error": f"curve {missing[0]!r} has no finished point"}
    try:
        return bd_rate(Curve.from_points(ref, curves[ref]), Curve.from_points(test, curves[test]))
    except CurveError as exc:
        return {"error": str(exc)}


def _stats(values: Sequence[float]) -> dict[str, float]:
    out = {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "range": max(values) - min(values)}
    if len(values) > 1:
        out["std"] = statistics.stdev(values)
    return out


def same_beta_pairs(
    curves: dict[str, list[dict[str, Any]]], global_seed: int, seeds: Sequence[int], ramps: Sequence[str]
) -> list[dict[str, Any]]:
    """Every ramp point beside ``film``'s point of the same seed and beta': bytes ratio and accuracy difference.

    Not a BD-rate (the two points sit at different accuracies), but what a run cut short before a curve
    has four points can show.
    """
    rows = []
    for seed in [global_seed, *[s for s in seeds if s != global_seed]]:
        film = {p["beta"]: p for p in curves.get(label(REFERENCE, seed, global_seed), [])}
        for ramp in ramps:
            for p in curves.get(label(ramp, seed, global_seed), []):
                f = film.get(p["beta"])
                if f is not None:
                    rows.append(
                        {
                            "seed": seed,
                            "ramp": ramp,
                            "beta": p["beta"],
                            "film_bytes": f["bytes_per_image"],
                            "ramp_bytes": p["bytes_per_image"],
                            "film_accuracy": f["mean_task_accuracy"],
                            "ramp_accuracy": p["mean_task_accuracy"],
                            "bytes_ratio": p["bytes_per_image"] / f["bytes_per_image"],
                            "accuracy_difference": p["mean_task_accuracy"] - f["mean_task_accuracy"],
                        }
                    )
    return rows


def best_ramp(phase1: dict[str, dict[str, Any]]) -> str | None:
    """The ramp with the lowest BD-rate against ``film`` (None until one has a BD-rate)."""
    valid = {k: v["bd_rate_percent"] for k, v in phase1.items() if "bd_rate_percent" in v}
    return min(valid, key=valid.__getitem__) if valid else None


def analyse(
    curves: dict[str, list[dict[str, Any]]],
    global_seed: int,
    seeds: Sequence[int],
    ramps: Sequence[str] = RAMPS,
    best: str | None = None,
    stage1_ramps: Sequence[str] = (),
) -> dict[str, Any]:
    """BD-rates of the phases from the finished points, the per-seed statistics and the verdict.

    ``best`` fixes the ramp carried to the seeds (default: the best of phase 1).
    """
    phase1 = {r: _bd(curves, REFERENCE, r) for r in ramps}
    chosen = best or best_ramp(phase1)
    all_seeds = [global_seed, *[s for s in seeds if s != global_seed]]
    noise = {s: _bd(curves, REFERENCE, label(REFERENCE, s, global_seed)) for s in all_seeds if s != global_seed}
    noise_values = [abs(r["bd_rate_percent"]) for r in noise.values() if "bd_rate_percent" in r]
    result: dict[str, Any] = {
        "reference": REFERENCE,
        "global_seed": global_seed,
        "phase1": phase1,
        "stage1": {r: _per_seed(curves, r, global_seed, all_seeds, noise_values) for r in stage1_ramps},
        "best_ramp": chosen,
        "same_beta_pairs": same_beta_pairs(curves, global_seed, seeds, ramps),
    }
    if chosen is None:
        result["verdict"] = "undecided: no ramp has a BD-rate against film yet"
        return result
    result.update(_per_seed(curves, chosen, global_seed, all_seeds, noise_values))
    result.update(film_seed_noise={str(s): r for s, r in noise.items()}, seeds_planned=len(all_seeds))
    if noise_values:
        result["film_noise_max_abs"] = max(noise_values)
    return result


def _per_seed(
    curves: dict[str, list[dict[str, Any]]], variant: str, global_seed: int, seeds: Sequence[int], noise: Sequence[float]
) -> dict[str, Any]:
    """``variant`` against ``film`` of the same Stage 2 seed on every seed: BD-rates, how many were measured,
    statistics, verdict."""
    per_seed = {str(s): _bd(curves, label(REFERENCE, s, global_seed), label(variant, s, global_seed)) for s in seeds}
    values = [r["bd_rate_percent"] for r in per_seed.values() if "bd_rate_percent" in r]
    out: dict[str, Any] = {"per_seed": per_seed, "seeds_measured": len(values), "verdict": verdict(values, noise, len(seeds))}
    if values:
        out["stats"] = _stats(values)
    return out


def verdict(values: Sequence[float], noise: Sequence[float], planned: int) -> str:
    """``holds`` / ``does not hold`` / ``undecided: ...`` (see the module docstring for the rule)."""
    if len(values) < planned or len(noise) < planned - 1 or len(values) < 2:
        return f"undecided: {len(values)} of {planned} seeds measured"
    mean = statistics.fmean(values)
    spread = max(max(values) - min(values), max(noise))
    if max(values) < 0 and -mean > spread:
        return "holds"
    return "does not hold"


def on_seeds(variants: Sequence[str], seeds: Sequence[int], global_seed: int) -> list[str]:
    """The sweep specs ``NAME@SEED`` of ``variants`` on every further Stage 2 seed, seed by seed."""
    return [f"{v}@{s}" for s in seeds if s != global_seed for v in variants]


def planned_points(
    global_seed: int, seeds: Sequence[int], betas: Sequence[float], ramps: Sequence[str], best: str | None, stage1_ramps: Sequence[str] = ()
) -> list[tuple[str, float]]:
    """``(curve label, beta')`` of every point the phases need (phase 2 only once the best ramp is known)."""
    specs = [REFERENCE, *ramps]
    if best is not None:
        specs += on_seeds((REFERENCE, best), seeds, global_seed)
    specs += [*stage1_ramps, *on_seeds(stage1_ramps, seeds, global_seed)]
    return [(p.label, p.beta) for p in plan(specs, betas, global_seed, [])]


def run_phases(
    config: Path,
    out: Path,
    betas: Sequence[float],
    seeds: Sequence[int],
    ramps: Sequence[str],
    reuse: Sequence[Path],
    sets: Sequence[str] = (),
    best: str | None = None,
    stage1_ramps: Sequence[str] = (),
) -> None:
    """Train (or read back) the points of phase 1, then those of phase 2 for ``best`` (default: phase 1's best ramp),
    then the Stage 1 warm-ups (phase 3).

    Phase 1 runs ``film`` and the first ramp by beta' (a run cut short has both curves at the first beta'
    values), then the other ramps one whole curve after the other (one cut short has whole curves);
    phase 2 runs by beta'.
    """
    global_seed = load_config(config, sets)["seed"]
    sweep(config, out, betas, [REFERENCE, ramps[0]], sets, reuse, by_beta=True)
    if len(ramps) > 1:
        sweep(config, out, betas, list(ramps[1:]), sets, reuse)
    best = best or best_ramp(analyse(read_points(out), global_seed, seeds, ramps)["phase1"])
    if best is None:
        raise SweepError("phase 1 gave no ramp a BD-rate against film; see the sweep's curves.md")
    specs = on_seeds((REFERENCE, best), seeds, global_seed)
    if specs:
        sweep(config, out, betas, specs, sets, reuse, by_beta=True)
    if stage1_ramps:
        sweep(config, out, betas, [*stage1_ramps, *on_seeds(stage1_ramps, seeds, global_seed)], sets, reuse)


def mean_int8_curves(int8s: Sequence[dict[str, Any]], baselines: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The mean curve of every method whose int8 curve was measured on several seeds (``NAME``, ``NAME@seedN``):
    per beta' that every seed has, the int8 bytes and mean task accuracy averaged over the seeds, and the mean
    curve's BD-rate against each baseline."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in int8s:
        groups.setdefault(c["curve"].partition("@")[0], []).append(c)
    means = []
    for variant, members in groups.items():
        if len(members) < 2:
            continue
        by_beta = [{p["beta"]: p for p in m["points"]} for m in members]
        betas = sorted(set.intersection(*(set(b) for b in by_beta)))
        points = [
            {
                "beta": beta,
                "bytes_per_image": statistics.fmean(b[beta]["bytes_per_image"] for b in by_beta),
                "mean_task_accuracy": statistics.fmean(b[beta]["mean_task_accuracy"] for b in by_beta),
            }
            for beta in betas
        ]
        name = f"{variant} (mean of {len(members)} seeds)"
        means.append(
            {
                "curve": name,
                "variant": variant,
                "members": [m["curve"] for m in members],
                "points": points,
                "vs_baselines": compare_to_baselines(Curve.from_points(name, points), baselines),
            }
        )
    return means


def _cell(r: dict[str, Any]) -> float | str:
    return round(r["bd_rate_percent"], 1) if "bd_rate_percent" in r else f"n/a ({r['error']})"


def results_document(
    curves: dict[str, list[dict[str, Any]]],
    analysis: dict[str, Any],
    planned: list[tuple[str, float]],
    int8s: Sequence[dict[str, Any]],
    no_train: bool = False,
    int8_means: Sequence[dict[str, Any]] = (),
) -> tuple[list[Headline], list[Table], list[str], dict[str, Any]]:
    """Headline, tables, notes and data of ``results/ib_warmup.json``."""
    finished = {(lab, p["beta"]) for lab, pts in curves.items() for p in pts}
    done = [f"{lab} beta'={b:g}" for lab, b in planned if (lab, b) in finished]
    missing = [f"{lab} beta'={b:g}" for lab, b in planned if (lab, b) not in finished]
    best = analysis["best_ramp"]
    headline = [Headline("Stage 2 IB warm-up: verdict (best ramp vs film over the Stage 2 seeds)", analysis["verdict"])]
    if best is not None:
        headline.append(Headline("Stage 2 IB warm-up: best ramp of beta' (fraction of Stage 2)", ramp_fraction(best)))
    if "stats" in analysis:
        s = analysis["stats"]
        headline.append(
            Headline(
                f"Stage 2 IB warm-up ({best}) vs film: mean BD-rate over {analysis['seeds_measured']} seed(s)",
                round(s["mean"], 1),
                "%",
                "< 0, beyond the seed spread",
            )
        )
        headline.append(Headline(f"Stage 2 IB warm-up ({best}) vs film: BD-rate range over the seeds", round(s["range"], 1), "points"))
    if "film_noise_max_abs" in analysis:
        headline.append(Headline("film vs film on another Stage 2 seed: largest |BD-rate|", round(analysis["film_noise_max_abs"], 1), "%"))
    for int8 in [*int8_means, *int8s]:
        if "best" not in int8.get("vs_baselines", {}):
            continue
        b = int8["vs_baselines"]["best"]
        headline.append(
            Headline(
                f"{int8['curve']} int8 device path vs the better of JPEG/WebP ({b['format'].upper()}): BD-rate",
                round(b["bd_rate_percent"], 1),
                "%",
                "<= -90 %",
            )
        )
    tables = [
        Table(
            "Stage 2 curves: bytes per image and mean task accuracy (float, real bitstreams)",
            ["curve", "beta'", "bytes per image", "mean accuracy %"],
            [
                [lab, p["beta"], round(p["bytes_per_image"], 2), round(100 * p["mean_task_accuracy"], 2)]
                for lab, pts in sorted(curves.items())
                for p in pts
            ],
        ),
        Table(
            "phase 1: every ramp vs film on the config's seed",
            ["ramp", "beta' warm-up fraction", "BD-rate vs film %"],
            [[r, ramp_fraction(r), _cell(v)] for r, v in analysis["phase1"].items()],
        ),
    ]
    pairs = analysis.get("same_beta_pairs", [])
    if pairs:
        tables.append(
            Table(
                "each ramp point beside film's of the same Stage 2 seed and beta' (not a BD-rate: the accuracies differ)",
                [
                    "Stage 2 seed",
                    "ramp",
                    "beta'",
                    "film bytes",
                    "ramp bytes",
                    "ramp / film bytes",
                    "film accuracy %",
                    "ramp accuracy %",
                    "accuracy difference, points",
                ],
                [
                    [
                        r["seed"],
                        r["ramp"],
                        r["beta"],
                        round(r["film_bytes"], 2),
                        round(r["ramp_bytes"], 2),
                        round(r["bytes_ratio"], 3),
                        round(100 * r["film_accuracy"], 2),
                        round(100 * r["ramp_accuracy"], 2),
                        round(100 * r["accuracy_difference"], 2),
                    ]
                    for r in pairs
                ],
            )
        )
    if analysis.get("stage1"):
        tables.append(
            Table(
                "phase 3: Stage 1 warm-up vs film of the same Stage 2 seed (its own Stage 1, Stage 2 as configured)",
                ["variant", "Stage 2 seed", "BD-rate vs film %"],
                [[v, s, _cell(r)] for v, a in analysis["stage1"].items() for s, r in a["per_seed"].items()],
            )
        )
        for v, a in analysis["stage1"].items():
            headline.append(Headline(f"Stage 1 IB warm-up ({v}): verdict over the Stage 2 seeds", a["verdict"]))
            if "stats" in a:
                headline.append(
                    Headline(
                        f"Stage 1 IB warm-up ({v}) vs film: mean BD-rate over {a['seeds_measured']} seed(s)",
                        round(a["stats"]["mean"], 1),
                        "%",
                        "< 0, beyond the seed spread",
                    )
                )
                headline.append(
                    Headline(f"Stage 1 IB warm-up ({v}) vs film: BD-rate range over the seeds", round(a["stats"]["range"], 1), "points")
                )
    if "per_seed" in analysis:
        tables.append(
            Table(
                f"phase 2: {best} vs film of the same Stage 2 seed; film's own seed-to-seed BD-rate",
                ["Stage 2 seed", f"{best} vs film %", "film vs film (config seed) %"],
                [
                    [s, _cell(r), _cell(analysis["film_seed_noise"][s]) if s in analysis["film_seed_noise"] else ""]
                    for s, r in analysis["per_seed"].items()
                ],
            )
        )
    for int8 in int8s:
        tables.append(
            Table(
                f"int8 device path of {int8['curve']} (calibration/int8_curve.py, {int8['target']})",
                ["beta'", "int8 bytes", "int8 mean accuracy %", "float bytes", "float mean accuracy %"],
                [
                    [
                        r["beta"],
                        round(r["bytes_per_image"], 2),
                        round(100 * r["mean_task_accuracy"], 2),
                        round(r["float"]["bytes_per_image"], 2),
                        round(100 * r["float"]["mean_task_accuracy"], 2),
                    ]
                    for r in int8["points"]
                ],
            )
        )
        tables.append(
            Table(
                f"{int8['curve']} int8 vs JPEG / WebP + teacher",
                ["format", "BD-rate %"],
                [[fmt, _cell(r)] for fmt, r in int8.get("vs_baselines", {}).items() if fmt != "best"],
            )
        )
    for mean in int8_means:
        tables.append(
            Table(
                f"int8 device path, {mean['curve']}: {', '.join(mean['members'])} averaged per beta'",
                ["beta'", "int8 bytes", "int8 mean accuracy %"],
                [[p["beta"], round(p["bytes_per_image"], 2), round(100 * p["mean_task_accuracy"], 2)] for p in mean["points"]],
            )
        )
        tables.append(
            Table(
                f"{mean['curve']} int8 vs JPEG / WebP + teacher",
                ["format", "BD-rate %"],
                [[fmt, _cell(r)] for fmt, r in mean["vs_baselines"].items() if fmt != "best"],
            )
        )
    notes = [
        f"points finished ({len(done)}): " + (", ".join(done) or "none"),
        f"points missing ({len(missing)}): " + (", ".join(missing) or "none"),
        "verdict rule: holds when the best ramp's BD-rate against film is negative on every seed and |mean| exceeds both "
        "its range over the seeds and the largest |BD-rate| between film's seeds",
    ]
    if best is None:
        notes.append(
            "phase 2 (film and the best ramp on every further Stage 2 seed, four beta' each) is not planned until phase 1 names the best ramp"
        )
    if no_train:
        notes.append("read back from the sweep directory (--no-train); the points were trained by the same command without --no-train")
    if not int8s:
        notes.append("int8 device path: not measured in this run (--int8 with --baselines)")
    data = {
        "analysis": analysis,
        "curves": curves,
        "finished": done,
        "missing": missing,
        "int8": list(int8s),
        "int8_means": list(int8_means),
    }
    return headline, tables, notes, data


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ib_warmup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="training config (default: the demo's, three Stage 2 epochs, without the Stage 1 warm-up)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/ib_warmup"), help="the sweep directory (default %(default)s)")
    p.add_argument("--betas", type=float, nargs="+", default=list(CURVE_BETAS), help="beta' of every curve (default %(default)s)")
    p.add_argument(
        "--seeds", type=int, nargs="*", default=list(DEFAULT_SEEDS), help="further Stage 2 seeds of phase 2 (default %(default)s)"
    )
    p.add_argument(
        "--ramps",
        nargs="+",
        default=list(RAMPS),
        choices=warmup_variants("stage2"),
        help="ramp variants of phase 1",
    )
    p.add_argument(
        "--stage1-ramps",
        nargs="*",
        default=list(STAGE1_RAMPS),
        choices=warmup_variants("stage1"),
        help="Stage 1 warm-up variants of phase 3 (default %(default)s; none: skip phase 3)",
    )
    p.add_argument("--best", choices=warmup_variants("stage2"), help="carry this ramp to the seeds instead of phase 1's best")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value for every point")
    p.add_argument(
        "--reuse", action="append", type=Path, default=[], metavar="DIR", help="finished checkpoints to copy in (e.g. runs/demo/train)"
    )
    p.add_argument("--no-train", action="store_true", help="train nothing: report the finished points")
    p.add_argument("--int8", action="store_true", help="also the int8 device path of the best ramp's curve (needs --baselines)")
    p.add_argument("--int8-curve", nargs="+", help="the curves the int8 path measures (default: the best ramp on the config's seed)")
    p.add_argument(
        "--baselines",
        type=Path,
        help="JPEG/WebP curves on the same data: a demo report.json or mantis_demo.baseline_curves' baselines.json",
    )
    add_results_arguments(p, "ib_warmup")
    args = p.parse_args(argv)
    if args.int8 and args.baselines is None:
        p.error("--int8 needs --baselines")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args, argv)
    except (ConfigError, DatasetError, CheckpointError, SweepError, CurveError, Int8CurveError, CheckError, ExportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    global_seed = load_config(args.config, args.set)["seed"]
    baselines = load_baselines(args.baselines) if args.baselines is not None else None  # a bad file fails before hours of training
    if not args.no_train:
        run_phases(args.config, args.out, args.betas, args.seeds, args.ramps, args.reuse, args.set, args.best, args.stage1_ramps)
    curves = read_points(args.out)
    analysis = analyse(curves, global_seed, args.seeds, args.ramps, args.best, args.stage1_ramps)
    int8s = []
    for name in args.int8_curve or ([analysis["best_ramp"]] if analysis["best_ramp"] else []):
        if args.int8:
            int8s.append(int8_curve(args.out, name, args.baselines))
        elif (args.out / f"int8_{name}.json").is_file():  # measured by an earlier --int8 run
            int8s.append(json.loads((args.out / f"int8_{name}.json").read_text()))
    means = mean_int8_curves(int8s, baselines) if baselines is not None else []
    planned = planned_points(global_seed, args.seeds, args.betas, args.ramps, analysis["best_ramp"], args.stage1_ramps)
    headline, tables, notes, data = results_document(curves, analysis, planned, int8s, args.no_train, means)
    data.update(config=str(args.config), sets=list(args.set), betas=list(args.betas), seeds=[global_seed, *args.seeds])
    write_results(
        args.results_name,
        title="Information-bottleneck warm-up vs FiLM: Stage 2 ramps per seed, Stage 1 warm-up, int8 device curves",
        module="benchmarks.ib_warmup",
        argv=list(argv) if argv is not None else None,
        headline=headline,
        tables=tables,
        notes=notes,
        data=data,
        results_dir=args.results_dir,
    )
    print(json.dumps({k: analysis.get(k) for k in ("phase1", "best_ramp", "per_seed", "stats", "film_seed_noise", "verdict")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
