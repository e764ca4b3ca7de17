"""Add a task to a deployed MANTiS model, server-only or in full (see ``training/task_addition.py``).

    uv run python training/add_task.py --config training/configs/add_task_server.yaml --out runs/add_server
    uv run python training/add_task.py --config training/configs/add_task_full.yaml --out runs/add_full

The config names the deployed Stage 2 checkpoint (``add_task.base_checkpoint``) and lists its tasks first,
then the tasks to add. Writes checkpoints, ``OUT/metrics.json`` and, with ``add_task.export_target``, the
bundle ``OUT/bundle``.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from training.checkpoint import CheckpointError
from training.config import ConfigError, load_config
from training.data import DatasetError
from training.task_addition import METRICS_FILE, run_addition

SPLIT = Path(__file__).resolve().parents[1] / "export" / "split.py"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config with an add_task section (see training/configs/add_task_*.yaml)")
    p.add_argument("--out", required=True, help="output directory: checkpoints, metrics.json, bundle")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. add_task.ewc_weight=1000")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = load_config(args.config, args.set)
        metrics = run_addition(cfg, args.out, source=args.config)
    except (ConfigError, DatasetError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"metrics: {args.out}/{METRICS_FILE}")
    target = cfg["add_task"]["export_target"]
    if target is None:
        return 0
    return export(metrics["checkpoint"], target, Path(args.out) / "bundle")


def export(checkpoint: str, target: str, out: Path) -> int:
    """Export ``checkpoint`` into ``out`` with ``export/split.py``, replacing an earlier bundle there; its exit
    status. It runs as its own process: the training code never imports the export."""
    cmd = [sys.executable, str(SPLIT), "--checkpoint", checkpoint, "--target", target, "--out", str(out), "--force"]
    status = subprocess.run(cmd, check=False).returncode
    if status:
        print(f"error: export/split.py failed (exit status {status}) on {checkpoint}", file=sys.stderr)
    else:
        print(f"bundle: {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
