"""The whole MANTiS pipeline in one command: train, export, serve, run the edge side, report.

    uv run python demo.py [--out runs/demo]

Writes OUT/report.json, OUT/report.md and plots (see mantis_demo/pipeline.py for the stages); with
``--results-dir results`` also the published summary, ``results/demo.json`` (``python -m benchmarks.report``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.baselines import DEFAULT_QUALITIES
from mantis_demo.report import write_demo_results
from mantis_demo.pipeline import DEFAULT_CONFIG, DemoError, DemoOptions, run_demo
from runtime_edge.client import EdgeRuntimeError
from runtime_edge.transport import TransportError
from runtime_server.process import ServerError
from training.sweep import CURVE_BETAS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="MANTiS end to end on the built-in data")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config (default training/configs/demo.yaml)")
    p.add_argument("--checkpoint", type=Path, help="use this Stage 2 checkpoint instead of training (teacher.safetensors beside it)")
    p.add_argument("--artifacts", type=Path, help="use this exported bundle instead of exporting")
    p.add_argument("--limit", type=int, help="use only the first N held-out images")
    p.add_argument("--qualities", type=int, nargs="+", default=list(DEFAULT_QUALITIES), help="JPEG/WebP qualities")
    p.add_argument("--backend", default="onnxruntime", help="serve.py backend (default onnxruntime)")
    p.add_argument(
        "--sweep",
        type=Path,
        help="a training/sweep.py output directory on the same --config: the report "
        "shows MANTiS and No-FiLM as curves and their BD-rate against JPEG/WebP",
    )
    p.add_argument(
        "--curve",
        type=float,
        nargs="*",
        metavar="BETA",
        help="also MANTiS's int8 curve against JPEG/WebP with its BD-rate: Stage 2 trained at each beta' "
        f"(default {' '.join(f'{b:g}' for b in CURVE_BETAS)}), exported and run on the device path (OUT/curve)",
    )
    p.add_argument("--results-dir", type=Path, help="also write the run's summary as DIR/demo.json (the published results: results/)")
    args = p.parse_args(argv)
    if args.curve is not None:
        args.curve = args.curve or list(CURVE_BETAS)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.artifacts is not None and args.checkpoint is None:
        p.error("--artifacts needs --checkpoint (the checkpoint it was exported from, for the float model and teacher)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = DemoOptions(
        out=args.out,
        config=args.config,
        checkpoint=args.checkpoint,
        artifacts=args.artifacts,
        limit=args.limit,
        qualities=args.qualities,
        backend=args.backend,
        sweep=args.sweep,
        curve=args.curve,
    )
    try:
        report = run_demo(opts)
        if args.results_dir is not None:
            write_demo_results(report, argv, args.results_dir)
    except (DemoError, ServerError, EdgeRuntimeError, TransportError, ValueError, OSError) as exc:
        print(f"demo.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
