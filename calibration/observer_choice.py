"""Comparing activation observers end to end (export + accuracy-vs-int8 check per observer).

The better observer is the one whose worst task loses the fewest accuracy points against the float model;
ties go to the higher mean int8 accuracy, then to the higher symbol agreement. The choice is made on the
validation split (``SELECTION_SPLIT``): the test split is only for reporting the chosen bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from calibration.int8_accuracy import run_check
from codec.files import atomic_write_json
from export.exporter import ExportOptions, export_bundle

SELECTION_SPLIT = "val"


def _score(row: dict[str, Any]) -> tuple[float, float, float]:
    acc = row["task_accuracy"]
    return (-max(row["drop_points"].values()), sum(acc.values()) / len(acc), row["symbol_agreement"])


def compare_observers(
    checkpoint: Path,
    target: str,
    out: Path,
    observers: Sequence[str],
    calibration_samples: int,
    keep_float: tuple[str, ...] = (),
    samples: int | None = None,
    max_drop: float = 1.0,
) -> dict[str, Any]:
    """Export ``out/<observer>`` for every observer, check each, and write ``out/observer_comparison.json``."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for observer in observers:
        opts = ExportOptions(
            checkpoint=checkpoint,
            target=target,
            out=out / observer,
            observer=observer,
            calibration_samples=calibration_samples,
            keep_float=keep_float,
            force=True,
        )
        export_bundle(opts)
        check = run_check(out / observer, split=SELECTION_SPLIT, samples=samples, max_drop=max_drop)
        results[observer] = {
            "task_accuracy": check["int8"]["task_accuracy"],
            "float_task_accuracy": check["float"]["task_accuracy"],
            "drop_points": check["drop_points"],
            "symbol_agreement": check["symbol_agreement"],
            "task_mask_agreement": check["task_mask_agreement"],
            "bytes_per_image": check["int8"]["bytes_per_image"],
            "passed": check["passed"],
        }
    best = max(results, key=lambda o: _score(results[o]))
    summary = {
        "checkpoint": str(checkpoint),
        "target": target,
        "split": SELECTION_SPLIT,
        "calibration_samples": calibration_samples,
        "keep_float": list(keep_float),
        "observers": results,
        "better": best,
    }
    atomic_write_json(out / "observer_comparison.json", summary)
    return summary


def format_comparison(summary: dict[str, Any]) -> str:
    """Table: one row per observer and task."""
    lines = [f"{'observer':<11}{'task':<14}{'float':>8}{'int8':>8}{'drop':>7}   symbols"]
    for observer, r in summary["observers"].items():
        for t, acc in r["task_accuracy"].items():
            lines.append(
                f"{observer:<11}{t:<14}{100 * r['float_task_accuracy'][t]:>7.2f}%{100 * acc:>7.2f}%"
                f"{r['drop_points'][t]:>7.2f}   {r['symbol_agreement']:.4f}"
            )
    lines.append(f"better observer: {summary['better']}")
    return "\n".join(lines)
