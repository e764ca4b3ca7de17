"""Rate-accuracy curves: train variants of Stage 2 at several beta' values and compare them by BD-rate.

    uv run python training/sweep.py --config training/configs/sweep.yaml --out runs/sweep \\
        --betas 1 2 4 10 --variants film no_film film@1 no_film@1 saliency --reuse runs/demo/train
    uv run python training/sweep.py ... --baselines runs/demo/report.json   # + BD-rate vs JPEG / WebP

Every point is one ``training.pipeline.run`` into ``OUT/<curve>/beta_<b>/`` and is measured there with
real coding (``training.evaluate``). Before a point runs, finished checkpoints whose fingerprint matches
the point's configuration are copied in from ``--reuse`` directories and from the sweep's other points,
so the pipeline reuses them (one teacher and one Stage 1 for the whole sweep, the FiLM model of the
``no_film`` curve from the ``film`` curve). A point is finished when its ``point.json`` names the same
fingerprint; an interrupted sweep skips those and resumes the rest (the pipeline resumes the stage that
was cut). ``OUT/curves.json`` (written atomically), ``OUT/curves.md`` and ``OUT/curves.png`` hold the
curves and the BD-rates (method: ``training.curves``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from codec.files import atomic_write, atomic_write_json, atomic_write_text, directory_kept_on_success
from training.checkpoint import CheckpointError, read_metadata
from training.config import ConfigError, fingerprint, load_config
from training.curves import METHOD, Curve, CurveError, bd_rate
from training.data import DatasetError
from training.pipeline import CHECKPOINTS, Datasets, load_datasets, run, stage_fingerprints

log = logging.getLogger("mantis.training")

POINT_FILE = "point.json"
CURVE_BETAS = (1.0, 3.0, 10.0, 30.0)
"""The four beta' of the project's standard rate-accuracy curve (the demo's ``--curve``, the benchmarks)."""
CURVES_FILE = "curves.json"
# every point trains only what its curve needs; a variant turns on what it measures
SWEEP_DEFAULTS = ("ablations.no_film=false", "ablations.oracle=false")


@dataclass(frozen=True)
class Variant:
    """Config overrides of one method and the entry of ``metrics.json`` that holds its result."""

    overrides: tuple[str, ...]
    result: str  # "stage2" or "no_film"
    about: str


VARIANTS: dict[str, Variant] = {
    "film": Variant((), "stage2", "MANTiS as configured (FiLM)"),
    "no_film": Variant(("ablations.no_film=true",), "no_film", "Stage 2 with FiLM held at the identity"),
    "saliency": Variant(("stage1.saliency=0.5",), "stage2", "Stage 1 distillation MSE weighted by the teacher's Grad-CAM"),
    "famo": Variant(("stage2.balancing=famo",), "stage2", "learned weights of the per-task losses and the rate"),
    "ib_warmup": Variant(("stage2.beta_warmup=0.3",), "stage2", "beta' ramped from 0 over the first 30 % of Stage 2"),
    "ib_warmup_10": Variant(("stage2.beta_warmup=0.1",), "stage2", "beta' ramped from 0 over the first 10 % of Stage 2"),
    "ib_warmup_50": Variant(("stage2.beta_warmup=0.5",), "stage2", "beta' ramped from 0 over the first 50 % of Stage 2"),
    "ib_warmup_stage1": Variant(("stage1.beta_warmup=0.5",), "stage2", "beta ramped from 0 over the first 50 % of Stage 1"),
    "label_smoothing": Variant(("stage2.label_smoothing=0.1",), "stage2", "label smoothing 0.1 in the Stage 2 cross-entropy"),
}


class SweepError(ValueError):
    """A sweep cannot run as asked (unknown variant, bad baseline file, ...); the message says why."""


@dataclass(frozen=True)
class Point:
    label: str
    variant: str
    seed: int | None
    beta: float
    overrides: tuple[str, ...]  # everything but the beta

    def config_overrides(self) -> tuple[str, ...]:
        return self.overrides + (f"stage2.beta={self.beta!r}",)

    def directory(self, out: Path) -> Path:
        return out / self.label / f"beta_{self.beta:g}"


def parse_variant(spec: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@SEED`` (``SEED``: Stage 2's seed, ``stage2.seed``) -> ``(name, seed)``."""
    name, _, seed = spec.partition("@")
    if name not in VARIANTS:
        raise SweepError(f"unknown variant {name!r} in {spec!r}; known: {', '.join(VARIANTS)}")
    if not seed:
        return name, None
    if not seed.isdigit():
        raise SweepError(f"variant {spec!r}: the seed after '@' must be a non-negative integer")
    return name, int(seed)


def plan(variants: Sequence[str], betas: Sequence[float], global_seed: int, sets: Sequence[str], by_beta: bool = False) -> list[Point]:
    """The points of a sweep, in the order they run: by variant as given, then by beta'; with ``by_beta``
    by beta', then by variant (a sweep cut short then holds every curve at its first beta')."""
    if not betas:
        raise SweepError("--betas needs at least one value")
    points = []
    for spec in variants:
        name, seed = parse_variant(spec)
        own = seed is not None and seed != global_seed
        label = f"{name}@seed{seed}" if own else name
        extra = (f"stage2.seed={seed}",) if own else ()
        for beta in sorted(set(betas)):
            points.append(
                Point(label, name, seed if own else None, float(beta), SWEEP_DEFAULTS + VARIANTS[name].overrides + tuple(sets) + extra)
            )
    if by_beta:
        points.sort(key=lambda p: p.beta)  # stable: the variants keep their order at each beta'
    return points


def _copy(src: Path, dst: Path) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def seed_checkpoints(point_dir: Path, cfg: dict[str, Any], sources: Sequence[Path]) -> list[str]:
    """Copy into ``point_dir`` every finished checkpoint of ``sources`` that this config would reuse.

    A checkpoint counts when its file name is the pipeline's and its fingerprint matches; the pipeline
    checks the fingerprint again when it loads it. Returns the names copied.
    """
    wanted = stage_fingerprints(cfg)
    if not cfg["ablations"]["no_film"]:
        wanted.pop("no_film")
    copied = []
    for name, fp in wanted.items():
        dst = point_dir / CHECKPOINTS[name]
        if dst.exists():
            continue
        for src_dir in sources:
            src = src_dir / CHECKPOINTS[name]
            if src_dir.resolve() == point_dir.resolve() or not src.is_file():
                continue
            try:
                meta = read_metadata(src)
            except CheckpointError as exc:
                log.warning("skipping %s: %s", src, exc)
                continue
            if meta.get("fingerprint") == fp:
                point_dir.mkdir(parents=True, exist_ok=True)
                _copy(src, dst)
                log.info("%s: reusing %s", point_dir, src)
                copied.append(name)
                break
    return copied


def _finished(point_dir: Path, fp: str, result: str) -> dict[str, Any] | None:
    path = point_dir / POINT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("fingerprint") != fp or record.get("result") != result:
        return None
    return record


def _summary(beta: float, metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "bytes_per_image",
        "payload_bytes_per_image",
        "estimated_bytes_per_image",
        "coding_overhead",
        "mean_task_accuracy",
        "task_accuracy",
        "task_detection_accuracy",
        "loss_weights",
        "images",
    )
    return {"beta": beta, **{k: metrics[k] for k in keys if k in metrics}}


def run_point(point: Point, cfg: dict[str, Any], out: Path, sources: Sequence[Path], datasets: Callable[[], Datasets]) -> dict[str, Any]:
    """Train and measure one point (or read it back when finished); returns its ``point.json`` record.

    ``datasets`` returns the datasets the points share (built on first use).
    """
    point_dir = point.directory(out)
    result = VARIANTS[point.variant].result
    fp = stage_fingerprints(cfg)["stage2"]
    record = _finished(point_dir, fp, result)
    if record is not None:
        log.info("%s beta'=%g: finished earlier, reusing %s", point.label, point.beta, point_dir / POINT_FILE)
        return record
    seed_checkpoints(point_dir, cfg, sources)
    log.info("%s beta'=%g: training into %s", point.label, point.beta, point_dir)
    metrics = run(cfg, point_dir, datasets=datasets())
    chosen = metrics["stage2"] if result == "stage2" else metrics["ablations"]["no_film"]
    record = {
        "label": point.label,
        "variant": point.variant,
        "seed": point.seed,
        "overrides": list(point.overrides),
        "fingerprint": fp,
        "result": result,
        "point": _summary(point.beta, chosen),
        "seconds": metrics["seconds"],
        "cached_stages": metrics["cached_stages"],
    }
    atomic_write_json(point_dir / POINT_FILE, record)
    return record


def _bd(reference: Curve, test: Curve) -> dict[str, Any]:
    try:
        return bd_rate(reference, test)
    except CurveError as exc:
        return {"error": str(exc)}


BASELINE_FORMATS = ("jpeg", "webp")


def load_baselines(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The JPEG and WebP curves (``jpeg``, ``webp``: lists of points) of a demo ``report.json``."""
    if not path.is_file():
        raise SweepError(f"baselines {path}: no such file")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SweepError(f"baselines {path}: not valid JSON ({exc})") from None
    curves = {k: doc[k] for k in BASELINE_FORMATS if isinstance(doc, dict) and isinstance(doc.get(k), list)}
    if not curves:
        raise SweepError(f"baselines {path}: no 'jpeg' or 'webp' list of points (expected a demo report.json)")
    return curves


def compare_to_baselines(curve: Curve, baselines: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """BD-rate of ``curve`` against each baseline format, and ``best``: the format it saves least against."""
    out: dict[str, Any] = {fmt: _bd(Curve.from_points(fmt, pts), curve) for fmt, pts in baselines.items()}
    valid = {fmt: r for fmt, r in out.items() if "bd_rate_percent" in r}
    if valid:
        fmt = max(valid, key=lambda f: valid[f]["bd_rate_percent"])
        out["best"] = {"format": fmt, **valid[fmt]}
    return out


def build_report(
    records: Sequence[dict[str, Any]],
    reference: str,
    pairs: Sequence[Sequence[str]] = (),
    baselines: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Curves from point records and their BD-rates: every curve against ``reference`` (and against the
    ``reference`` curve of the same Stage 2 seed, ``film@seedN``, when there is one), each pair in
    ``pairs``, No-FiLM against FiLM per seed with the spread, and every curve against the baselines."""
    curves: dict[str, dict[str, Any]] = {}
    for r in records:
        c = curves.setdefault(r["label"], {"variant": r["variant"], "seed": r["seed"], "overrides": r["overrides"], "points": []})
        c["points"].append(r["point"])
    for c in curves.values():
        c["points"].sort(key=lambda p: p["beta"])
    as_curve = {name: Curve.from_points(name, c["points"]) for name, c in curves.items()}
    report: dict[str, Any] = {"method": METHOD, "reference": reference, "curves": curves, "bd_rate": {}}
    if reference in as_curve:
        for name, c in curves.items():
            ref = f"{reference}@seed{c['seed']}" if c["seed"] is not None and f"{reference}@seed{c['seed']}" in as_curve else reference
            if name in (reference, ref):
                continue
            report["bd_rate"][f"{name} vs {ref}"] = _bd(as_curve[ref], as_curve[name])
    for a, b in pairs:
        missing = [n for n in (a, b) if n not in as_curve]
        if missing:
            raise SweepError(f"--compare: no curve {missing[0]!r} (curves: {', '.join(as_curve)})")
        report["bd_rate"][f"{b} vs {a}"] = _bd(as_curve[a], as_curve[b])
    per_seed = {}
    for name, c in curves.items():
        if c["variant"] == "no_film":
            film = name.replace("no_film", "film", 1)
            if film in as_curve:
                per_seed[name] = _bd(as_curve[film], as_curve[name])
    values = [r["bd_rate_percent"] for r in per_seed.values() if "bd_rate_percent" in r]
    if per_seed:
        report["no_film_vs_film"] = {"per_seed": per_seed, "seeds": len(values)}
        if values:
            mean = sum(values) / len(values)
            report["no_film_vs_film"].update(mean=mean, min=min(values), max=max(values))
    if baselines:
        report["baselines"] = baselines
        report["vs_baselines"] = {name: compare_to_baselines(c, baselines) for name, c in as_curve.items()}
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The curves and BD-rates as markdown tables."""
    lines = ["| curve | beta' | bytes/image | mean accuracy | per task |", "| --- | --- | --- | --- | --- |"]
    for name, c in report["curves"].items():
        for p in c["points"]:
            tasks = " / ".join(f"{v * 100:.1f}" for v in p["task_accuracy"].values())
            lines.append(f"| {name} | {p['beta']:g} | {p['bytes_per_image']:.1f} | {p['mean_task_accuracy'] * 100:.2f} % | {tasks} |")
    lines += ["", "| comparison | BD-rate | accuracy overlap |", "| --- | --- | --- |"]

    def row(title: str, r: dict[str, Any]) -> str:
        if "error" in r:
            return f"| {title} | n/a | {r['error']} |"
        lo, hi = r["overlap"]
        return f"| {title} | {r['bd_rate_percent']:+.1f} % | {lo * 100:.2f} to {hi * 100:.2f} % |"

    for title, r in report["bd_rate"].items():
        lines.append(row(title, r))
    nf = report.get("no_film_vs_film")
    if nf and "mean" in nf:
        lines.append(
            f"| No-FiLM vs FiLM over {nf['seeds']} seeds | mean {nf['mean']:+.1f} % (min {nf['min']:+.1f}, max {nf['max']:+.1f}) | |"
        )
    for name, per_fmt in report.get("vs_baselines", {}).items():
        for fmt, r in per_fmt.items():
            if fmt != "best":
                lines.append(row(f"{name} vs {fmt.upper()} + teacher", r))
    lines += ["", f"BD-rate method: {report['method']}."]
    return "\n".join(lines) + "\n"


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Mean accuracy over bytes per image (log scale): every curve, and the baselines when present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, c in report["curves"].items():
        pts = c["points"]
        ax.plot([p["bytes_per_image"] for p in pts], [p["mean_task_accuracy"] for p in pts], "o-", ms=4, label=name)
    for fmt, pts in report.get("baselines", {}).items():
        ax.plot([p["bytes_per_image"] for p in pts], [p["mean_task_accuracy"] for p in pts], "s--", ms=3, label=f"{fmt.upper()} + teacher")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (real bitstreams)")
    ax.set_ylabel("mean task accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path) -> None:
    atomic_write_json(out / CURVES_FILE, report)
    atomic_write_text(out / "curves.md", render_markdown(report))
    plot_curves(report, out / "curves.png")


def sweep(
    config: Path,
    out: Path,
    betas: Sequence[float],
    variants: Sequence[str] = ("film",),
    sets: Sequence[str] = (),
    reuse: Sequence[Path] = (),
    reference: str = "film",
    pairs: Sequence[Sequence[str]] = (),
    baselines: Path | None = None,
    by_beta: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a sweep and write its curves; returns the report. ``by_beta``: the order of ``plan``."""
    base_cfg = load_config(config, sets)
    base_lines = load_baselines(baselines) if baselines is not None else None
    points = plan(variants, betas, base_cfg["seed"], sets, by_beta)
    configs = [load_config(config, p.config_overrides()) for p in points]
    data_keys = {fingerprint(c, ["seed", "data"]) for c in configs}
    if len(data_keys) != 1:
        raise SweepError("the points of a sweep must share the seed and the data section (a variant changed them)")
    cache: dict[str, Datasets] = {}

    def datasets() -> Datasets:
        if "d" not in cache:
            cache["d"] = load_datasets(configs[0])
        return cache["d"]

    records = []
    with directory_kept_on_success(out):  # a sweep that fails before writing anything leaves no empty folder
        for point, cfg in zip(points, configs):
            sources = list(reuse) + sorted(p for p in out.glob("*/beta_*") if p.is_dir())
            records.append(run_point(point, cfg, out, sources, datasets))
    report = build_report(records, reference, pairs, base_lines)
    report.update(config=str(config), sets=list(sets), betas=sorted(float(b) for b in betas))
    write_report(report, out)
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="variants: " + "; ".join(f"{k}: {v.about}" for k, v in VARIANTS.items()),
    )
    p.add_argument("--config", required=True, type=Path, help="YAML config (e.g. training/configs/sweep.yaml)")
    p.add_argument("--out", required=True, type=Path, help="sweep directory: OUT/<curve>/beta_<b>/, curves.json, curves.md, curves.png")
    p.add_argument("--betas", required=True, type=float, nargs="+", help="the beta' values (stage2.beta) of every curve")
    p.add_argument(
        "--variants",
        "--variant",
        nargs="+",
        default=["film"],
        metavar="NAME[@SEED]",
        help=f"methods to sweep (default film), each optionally with its own Stage 2 seed: {', '.join(VARIANTS)}",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value for every point")
    p.add_argument(
        "--reuse",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="a training output directory whose matching finished checkpoints are copied in (e.g. runs/demo/train)",
    )
    p.add_argument("--reference", default="film", help="the curve every other is compared with (default film)")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("REF", "TEST"), help="also the BD-rate of TEST against REF")
    p.add_argument("--baselines", type=Path, help="JPEG/WebP curves: a demo report.json measured on the same data")
    p.add_argument("--by-beta", action="store_true", help="run the points by beta', then by variant (default: by variant, then beta')")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        sweep(
            args.config,
            args.out,
            args.betas,
            args.variants,
            args.set,
            args.reuse,
            args.reference,
            args.compare,
            args.baselines,
            args.by_beta,
        )
    except (ConfigError, DatasetError, CheckpointError, SweepError, CurveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "curves.md").read_text(), end="")
    print(f"curves: {args.out / CURVES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
