"""Accuracy-vs-int8 check of an exported bundle: float model vs the int8 edge client on its real runtime,
both through the real codec and the server half, on held-out data.

    uv run python calibration/check.py --artifacts artifacts/demo

Writes ARTIFACTS/int8_check.json, prints a table, and exits with status 1 when any task's int8 accuracy
is more than --max-drop percentage points below the float model's (2 when the check cannot run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calibration.int8_accuracy import CheckError, format_table, run_check


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory written by export/split.py")
    p.add_argument("--checkpoint", type=Path, default=None, help="source checkpoint, if it moved since the export")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="held-out split (default test)")
    p.add_argument("--samples", type=int, default=None, help="images to check (default: the whole split)")
    p.add_argument("--max-drop", type=float, default=1.0, help="largest allowed accuracy drop, percentage points")
    p.add_argument("--data-config", type=Path, default=None, help="training config whose data to use (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run_check(args.artifacts, args.checkpoint, args.split, args.samples, args.max_drop, args.data_config, args.seed)
    except CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"written {Path(result['bundle']) / 'int8_check.json'}")
    if not result["passed"]:
        print(f"FAIL: int8 accuracy drops more than {args.max_drop} points on some task", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
