"""Edge encoder latency at 224x224 on this CPU, in one run: ExecuTorch int8 vs float eager PyTorch vs the
whole teacher vs a ResNet-50 (fp32 eager and int8 ExecuTorch), with ratios and the .pte sizes.

    uv run python -m benchmarks.edge_latency --checkpoint runs/demo/train/stage2.safetensors [--threads 1]

Writes ``results/edge_latency_Nthreads.json`` (N: ``--threads``, or ``default``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.calibration_set import CalibrationSourceError
from export.errors import ExportError
from benchmarks.latency import benchmark, format_report
from benchmarks.results import Headline, Table, add_results_arguments, write_results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="Stage 2 checkpoint")
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--calibration-samples", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="threads for both PyTorch and ExecuTorch (default: each its own default)")
    p.add_argument("--no-resnet", action="store_true", help="leave out the ResNet-50 reference (its int8 export takes minutes)")
    add_results_arguments(p, "edge_latency_THREADSthreads")
    args = p.parse_args(argv)
    args.results_name = args.results_name.replace("THREADS", str(args.threads) if args.threads else "default")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = benchmark(
            args.checkpoint, args.size, args.calibration_samples, args.warmup, args.repeats, args.threads, not args.no_resnet
        )
    except (ExportError, CalibrationSourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(result))
    size = f"{args.size}x{args.size}"
    threads = result["threads"]["executorch"]
    headline = [
        Headline(
            f"int8 edge client vs float eager edge client, {size}, {threads} thread(s)",
            round(result["speedup_int8_vs_float_eager"], 2),
            "x",
            ">= 2x",
        )
    ]
    if "speedup_int8_vs_resnet50_fp32_eager" in result:
        headline += [
            Headline(
                f"int8 edge client vs ResNet-50 fp32 eager, {size}, {threads} thread(s)",
                round(result["speedup_int8_vs_resnet50_fp32_eager"], 1),
                "x",
                ">= 10x",
            ),
            Headline(
                f"int8 edge client vs ResNet-50 int8 ExecuTorch, {size}, {threads} thread(s)",
                round(result["speedup_int8_vs_resnet50_int8_executorch"], 1),
                "x",
                "> 1x",
            ),
        ]
    write_results(
        args.results_name,
        title=f"Edge latency at {size}, {threads} thread(s): int8 edge client, float, whole teacher, ResNet-50",
        module="benchmarks.edge_latency",
        argv=argv,
        headline=headline,
        tables=[
            Table(
                f"medians of {args.repeats} interleaved rounds, ms",
                ["model", "median ms", "p90 ms"],
                [[name, round(t["median"], 3), round(t["p90"], 3)] for name, t in result["timings_ms"].items()],
            ),
            Table("program sizes", ["file", "bytes"], [[name, size_b] for name, size_b in result["pte_bytes"].items()]),
        ],
        notes=[
            f"int8 latent relative RMSE vs float: {result['int8_latent_rel_rmse']:.4f}",
            "ResNet-50 runs with random weights: latency does not depend on the weights.",
        ],
        data=result,
        results_dir=args.results_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
