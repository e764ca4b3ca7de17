"""The rate-accuracy curve of the int8 edge client: every point of a sweep curve exported and measured on
the device path, with its BD-rate against JPEG and WebP.

    uv run python calibration/int8_curve.py --sweep runs/sweep --curve film --baselines runs/demo/report.json

For each finished point of ``SWEEP/<curve>/beta_*/`` (``training/sweep.py``; a curve whose points are
Stage 2 models, not No-FiLM ablations), ``export/split.py``'s export writes the point's int8 bundle to
``beta_*/bundle_<target>/`` and ``calibration/check.py``'s check runs that bundle's edge client through
``EdgeRuntime`` on the raw test images, as a device does; a point whose bundle already holds its
``int8_check.json`` is read back. ``SWEEP/int8_<curve>.json`` (written atomically) holds the float and
int8 points and the int8 curve's BD-rate against each baseline (``training.curves``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from calibration.int8_accuracy import CheckError, run_check
from codec.files import atomic_write_json
from export.errors import ExportError
from export.exporter import ExportOptions, export_bundle
from training.curves import METHOD, Curve, CurveError
from training.sweep import POINT_FILE, SweepError, compare_to_baselines, load_baselines

CHECK_FILE = "int8_check.json"


class Int8CurveError(ValueError):
    """The sweep directory or curve cannot be measured as asked; the message says why."""


def curve_points(sweep: Path, curve: str) -> list[tuple[Path, dict[str, Any]]]:
    """``(point directory, point.json record)`` of every finished point of ``curve``, by beta'."""
    root = sweep / curve
    if not root.is_dir():
        raise Int8CurveError(f"{root}: no such curve directory (run training/sweep.py with --variants {curve})")
    points = []
    for point_dir in sorted(root.glob("beta_*")):
        record_path = point_dir / POINT_FILE
        if not record_path.is_file():
            continue
        record = json.loads(record_path.read_text())
        if record.get("result") != "stage2":
            raise Int8CurveError(f"{record_path}: curve {curve!r} measures {record.get('result')!r}, not a Stage 2 model to export")
        points.append((point_dir, record))
    if not points:
        raise Int8CurveError(f"{root}: no finished points ({POINT_FILE})")
    return sorted(points, key=lambda p: p[1]["point"]["beta"])


def _mean(acc: dict[str, float]) -> float:
    return sum(acc.values()) / len(acc)


def measure_point(point_dir: Path, target: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The ``int8_check.json`` body of the point's int8 bundle (exported and checked unless done before)."""
    bundle = point_dir / f"bundle_{target}"
    done = bundle / CHECK_FILE
    if done.is_file():
        log(f"{point_dir}: reusing {done}")
        return json.loads(done.read_text())
    checkpoint = point_dir / "stage2.safetensors"
    log(f"{point_dir}: exporting {checkpoint} ({target})")
    export_bundle(ExportOptions(checkpoint=checkpoint, target=target, out=bundle, force=True), log)
    log(f"{point_dir}: checking the int8 edge client on the test split")
    return run_check(bundle, checkpoint)


def int8_curve(
    sweep: Path, curve: str, baselines: Path | None, target: str = "executorch", log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure every point of ``curve`` as an int8 bundle; write and return ``SWEEP/int8_<curve>.json``."""
    rows = []
    for point_dir, record in curve_points(sweep, curve):
        check = measure_point(point_dir, target, log)
        rows.append(
            {
                "beta": record["point"]["beta"],
                "bytes_per_image": check["int8"]["bytes_per_image"],
                "mean_task_accuracy": _mean(check["int8"]["task_accuracy"]),
                "task_accuracy": check["int8"]["task_accuracy"],
                "float": {
                    "bytes_per_image": check["float"]["bytes_per_image"],
                    "mean_task_accuracy": _mean(check["float"]["task_accuracy"]),
                },
                "symbol_agreement": check["symbol_agreement"],
                "images": check["images"],
                "bundle": str(point_dir / f"bundle_{target}"),
            }
        )
    report: dict[str, Any] = {"sweep": str(sweep), "curve": curve, "target": target, "method": METHOD, "points": rows}
    if baselines is not None:
        report["vs_baselines"] = compare_to_baselines(Curve.from_points(f"{curve} int8", rows), load_baselines(baselines))
    atomic_write_json(sweep / f"int8_{curve}.json", report)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'beta':>6} {'int8 B':>8} {'int8 acc':>9} {'float B':>8} {'float acc':>9} {'symbols':>8}"]
    for r in report["points"]:
        lines.append(
            f"{r['beta']:>6g} {r['bytes_per_image']:>8.1f} {100 * r['mean_task_accuracy']:>8.2f}% "
            f"{r['float']['bytes_per_image']:>8.1f} {100 * r['float']['mean_task_accuracy']:>8.2f}% {r['symbol_agreement']:>8.4f}"
        )
    for fmt, result in report.get("vs_baselines", {}).items():
        if fmt == "best":
            continue
        if "bd_rate_percent" in result:
            lines.append(f"BD-rate of {report['curve']} int8 vs {fmt.upper()}: {result['bd_rate_percent']:+.1f} %")
        else:
            lines.append(f"BD-rate of {report['curve']} int8 vs {fmt.upper()}: n/a ({result.get('error')})")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", required=True, type=Path, help="a training/sweep.py output directory")
    p.add_argument("--curve", default="film", help="the curve to export (default film)")
    p.add_argument("--baselines", type=Path, help="JPEG/WebP curves: a demo report.json measured on the same data")
    p.add_argument("--target", default="executorch", choices=("executorch", "onnx"), help="edge target (default executorch)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = int8_curve(args.sweep, args.curve, args.baselines, args.target)
    except (Int8CurveError, CheckError, ExportError, SweepError, CurveError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"written {args.sweep / f'int8_{args.curve}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
