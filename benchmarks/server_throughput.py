"""Server throughput on loopback: dynamic batching vs batch size 1, measured in one run.

    uv run python -m benchmarks.server_throughput --artifacts DIR [--clients 32] [--requests 2000]
        [--time-cap 60] [--rounds 4] [--max-batch-size 32] [--max-queue-delay-ms 2] [--backend onnxruntime]
        [--bitstreams DIR] [--results-dir results] [--results-name server_throughput_BACKEND]

Starts serve.py twice on 127.0.0.1 (dynamic batching, and ``--max-batch-size 1``), drives them in turns
(alternating rounds) with the same concurrent single-image requests, and prints throughput, p50/p99
latency, failed requests, the mean batch each server formed, and the throughput ratio (target >= 2x, zero
failures), and writes them to ``results/server_throughput_BACKEND.json``. Exit status 1 when a request failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from codec.bundle import BundleError, read_manifest
from benchmarks.results import Headline, Table, add_results_arguments, write_results
from runtime_server.backends import BACKENDS
from benchmarks.loadgen import read_bitstreams, run_configs, synthetic_bitstreams
from runtime_server.process import LOOPBACK, ServerError

TARGET_RATIO = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="serve.py throughput: dynamic batching vs batch size 1 (loopback)")
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--requests", type=int, default=2000, help="requests per configuration (one image each)")
    p.add_argument("--time-cap", type=float, default=60.0, help="seconds per configuration at most")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds the requests are split into")
    p.add_argument("--max-batch-size", type=int, default=32, help="the dynamic configuration's max batch size")
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0, help="the dynamic configuration's queue delay")
    p.add_argument("--compute-threads", type=int, default=0, help="serve.py --compute-threads for both configurations")
    p.add_argument(
        "--bitstreams",
        type=Path,
        help="directory of *.mtb bitstreams, as runtime_edge/run.py --save writes them (default: encode 64 synthetic images)",
    )
    add_results_arguments(p, "server_throughput_BACKEND")
    args = p.parse_args(argv)
    args.results_name = args.results_name.replace("BACKEND", args.backend)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.time_cap <= 0 or args.rounds < 1:
        print("server_throughput: --clients, --requests, --time-cap and --rounds must be positive", file=sys.stderr)
        return 2
    try:
        model = read_manifest(args.artifacts).model_name
        bitstreams = read_bitstreams(args.bitstreams) if args.bitstreams else synthetic_bitstreams(args.artifacts, 64)
    except (BundleError, OSError) as exc:
        print(f"server_throughput: {exc}", file=sys.stderr)
        return 2
    mean_bytes = sum(map(len, bitstreams)) / len(bitstreams)
    print(
        f"model {model}, backend {args.backend}, {LOOPBACK}, {args.clients} concurrent clients, "
        f"{args.requests} single-image requests per configuration (cap {args.time_cap:g} s), "
        f"{len(bitstreams)} distinct bitstreams of {mean_bytes:.0f} B on average, {os.cpu_count()} CPUs"
    )
    common = ["--backend", args.backend, "--compute-threads", str(args.compute_threads), "--max-request-images", "1"]
    configs = [
        (
            f"dynamic (max {args.max_batch_size}, {args.max_queue_delay_ms:g} ms)",
            ["--max-batch-size", str(args.max_batch_size), "--max-queue-delay-ms", str(args.max_queue_delay_ms)],
        ),
        ("batch size 1", ["--max-batch-size", "1", "--max-queue-delay-ms", "0"]),
    ]
    try:
        results = run_configs(
            args.artifacts,
            model,
            [(label, common + extra) for label, extra in configs],
            bitstreams,
            args.clients,
            args.requests,
            args.time_cap,
            args.rounds,
        )
    except ServerError as exc:
        print(f"server_throughput: {exc}", file=sys.stderr)
        return 2
    print(f"{'configuration':<26} {'ok':>6} {'failed':>6} {'time_s':>7} {'req/s':>8} {'p50_ms':>7} {'p99_ms':>7} {'mean_batch':>10}")
    for r in results:
        print(
            f"{r.label:<26} {r.ok:>6} {r.failed:>6} {r.seconds:>7.2f} {r.throughput:>8.1f} "
            f"{r.percentile(50):>7.2f} {r.percentile(99):>7.2f} {r.mean_batch:>10.2f}"
        )
        if r.errors:
            print(f"  errors: {r.errors}")
    dynamic, single = results
    ratio = dynamic.throughput / single.throughput if single.throughput else float("inf")
    failed = sum(r.failed for r in results)
    print(
        f"throughput ratio dynamic / batch size 1: {ratio:.2f}x (target >= {TARGET_RATIO:g}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})"
    )
    print(f"failed requests: {failed} (target 0: {'met' if failed == 0 else 'NOT met'})")
    write_results(
        args.results_name,
        title=f"Server throughput, {args.backend}: dynamic batching vs batch size 1",
        module="benchmarks.server_throughput",
        argv=argv,
        headline=[
            Headline(f"serve.py throughput, dynamic batching / batch 1 ({args.backend})", round(ratio, 2), "x", f">= {TARGET_RATIO:g}x"),
            Headline(f"failed requests under load ({args.backend})", failed, "", "0"),
        ],
        tables=[
            Table(
                f"{args.clients} concurrent clients on loopback, single-image requests, {args.rounds} alternating rounds",
                ["configuration", "answered", "failed", "req/s", "p50 ms", "p99 ms", "mean batch"],
                [
                    [
                        r.label,
                        r.ok,
                        r.failed,
                        round(r.throughput, 1),
                        round(r.percentile(50), 2),
                        round(r.percentile(99), 2),
                        round(r.mean_batch, 2),
                    ]
                    for r in results
                ],
            )
        ],
        data={
            "model": model,
            "backend": args.backend,
            "clients": args.clients,
            "requests": args.requests,
            "bitstream_mean_bytes": mean_bytes,
            "ratio": ratio,
            "failed": failed,
            "configs": [r.summary() for r in results],
        },
        results_dir=args.results_dir,
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
