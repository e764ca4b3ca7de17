"""Which activation observer calibrates the edge client better: export one bundle per observer and run the
accuracy-vs-int8 check on each.

    uv run python calibration/compare_observers.py --checkpoint runs/demo/stage2.safetensors --target executorch --out artifacts/observers

Writes OUT/<observer>/ (a complete bundle each) and OUT/observer_comparison.json, and prints a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calibration.int8_accuracy import CheckError
from calibration.observer_choice import compare_observers, format_comparison
from export.quantize import OBSERVERS
from export.edge import EDGE_TARGETS
from export.errors import ExportError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--target", default="executorch", choices=[t for t in EDGE_TARGETS if t != "coreml"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--observers", nargs="+", default=list(OBSERVERS), choices=OBSERVERS)
    p.add_argument("--calibration-samples", type=int, default=128)
    p.add_argument("--keep-float", nargs="+", default=[], metavar="MODULE")
    p.add_argument("--samples", type=int, default=None, help="validation images per check (default: the whole validation split)")
    p.add_argument("--max-drop", type=float, default=1.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = compare_observers(
            args.checkpoint,
            args.target,
            args.out,
            args.observers,
            args.calibration_samples,
            tuple(args.keep_float),
            args.samples,
            args.max_drop,
        )
    except (ExportError, CheckError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_comparison(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
