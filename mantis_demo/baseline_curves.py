"""The JPEG and WebP rate-accuracy curves alone (the demo's baselines, without export, server or edge).

    uv run python -m mantis_demo.baseline_curves --config training/configs/sweep.yaml \\
        --teacher runs/sweep/film/beta_1/teacher.safetensors --out runs/sweep_baselines

Writes the config's held-out images as PNGs (as the demo does) and ``OUT/baselines.json``: the teacher on
the lossless images and on JPEG / WebP at each quality (``benchmarks.baselines``), the file
``training/sweep.py --baselines`` reads for the BD-rate of every curve against them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from codec.files import atomic_write_json
from benchmarks.baselines import DEFAULT_QUALITIES
from mantis_demo.pipeline import run_baselines, save_held_out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="the training config whose test split is measured")
    p.add_argument("--teacher", required=True, type=Path, help="teacher.safetensors trained on that config")
    p.add_argument("--out", required=True, type=Path, help="output directory: heldout/ and baselines.json")
    p.add_argument("--qualities", type=int, nargs="+", default=list(DEFAULT_QUALITIES), help="JPEG/WebP qualities")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from training.checkpoint import CheckpointError
    from training.config import ConfigError, load_config

    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
        held = save_held_out(cfg, args.out / "heldout", None)
        base = run_baselines(args.teacher, held, args.qualities)
    except (ConfigError, CheckpointError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(args.out / "baselines.json", {"config": str(args.config), "teacher_checkpoint": str(args.teacher), **base})
    print(f"baselines: {args.out / 'baselines.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
