"""Edge encoder latency at 224x224 on this CPU, in one run: ExecuTorch int8 vs float eager PyTorch vs the
whole teacher vs a ResNet-50 (fp32 eager and int8 ExecuTorch), with ratios and the .pte sizes.

    uv run python export/benchmark.py --checkpoint runs/demo/stage2.safetensors [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.calibration_set import CalibrationSourceError
from codec.files import atomic_write_json
from export.errors import ExportError
from export.latency import benchmark, format_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="Stage 2 checkpoint")
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--calibration-samples", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="threads for both PyTorch and ExecuTorch (default: each its own default)")
    p.add_argument("--no-resnet", action="store_true", help="leave out the ResNet-50 reference (its int8 export takes minutes)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = benchmark(args.checkpoint, args.size, args.calibration_samples, args.warmup, args.repeats, args.threads, not args.no_resnet)
    except (ExportError, CalibrationSourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
