"""Per-layer int8 sensitivity of the edge client: which layer, kept in float, recovers the most accuracy.

uv run python calibration/sensitivity.py --checkpoint runs/demo/stage2.safetensors [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.calibration_set import CalibrationSourceError
from calibration.layer_sensitivity import format_sensitivity, layer_sensitivity
from export.quantize import OBSERVERS
from codec.files import atomic_write_json
from export.errors import ExportError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--observer", default="histogram", choices=OBSERVERS)
    p.add_argument("--calibration-samples", type=int, default=128)
    p.add_argument("--samples", type=int, default=500, help="held-out images (default 500)")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--layers", nargs="+", default=None, help="only these client layers (default: every conv/linear)")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = layer_sensitivity(args.checkpoint, args.observer, args.calibration_samples, args.samples, args.split, args.layers)
    except (ExportError, CalibrationSourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_sensitivity(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
