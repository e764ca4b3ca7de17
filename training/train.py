"""Train MANTiS: teacher, Stage 1, Stage 2 and the ablations, into one output directory.

uv run python training/train.py --config training/configs/demo.yaml --out runs/demo
uv run python training/train.py --config training/configs/demo.yaml --out runs/b01 --set stage2.beta=0.1
torchrun --nproc_per_node=4 training/train.py --config ... --out ...   # multi-GPU
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from training.checkpoint import CheckpointError
from training.config import ConfigError, load_config
from training.data import DatasetError
from training.pipeline import METRICS_FILE, run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see training/configs/)")
    p.add_argument("--out", required=True, help="output directory: checkpoints, resume states, metrics.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. stage1.beta=0.1")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (same as --set amp=true)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = load_config(args.config, args.set + (["amp=true"] if args.amp else []))
        run(cfg, args.out)
    except (ConfigError, DatasetError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"metrics: {args.out}/{METRICS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
