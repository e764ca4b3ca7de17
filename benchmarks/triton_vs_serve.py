"""serve.py beside Triton Inference Server: the same bundle, the same clients, dynamic batching on both.

    uv run python -m benchmarks.triton_vs_serve --artifacts BUNDLE [--clients 32] [--requests 4000]
        [--rounds 4] [--time-cap 120] [--max-batch-size 32] [--max-queue-delay-ms 2]

Starts ``serve.py`` (ONNX Runtime backend) and ``tritonserver`` 2.51 on the repository
``export/triton_repository.py`` writes for the same bundle (decode and answer steps in the Python backend,
the server half on ONNX Runtime in the Python backend, since this Triton build has no ONNX Runtime
backend), both with the same max batch size, queue delay and decode parallelism. The same concurrent
clients (``runtime_server/loadgen.py``: single-image requests asking for ``top``, over HTTP/1.1 keep-alive
and over one gRPC stream per client) drive both in alternating rounds. Prints and writes
(``results/triton_vs_serve.json``) throughput, p50 and p99 per server and protocol, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.results import Headline, Table, write_results
from codec.bundle import BundleError, read_manifest
from export.triton_repository import RepositoryError, RepositoryOptions, write_repository
from benchmarks.loadgen import LoadResult, drive_grpc_stream, drive_http, synthetic_bitstreams
from runtime_server.process import LOOPBACK, ServerError, ServerProcess, free_port
from runtime_server.triton_serving.install import TRITON_VERSION, TritonInstallError, install
from runtime_server.triton_serving.process import TritonProcess

DECODE_WORKERS = 2
"""serve.py's decode threads and Triton's decode instances."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="serve.py vs Triton Inference Server on the same bundle and clients")
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--requests", type=int, default=4000, help="single-image requests per server and protocol")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds the requests are split into")
    p.add_argument("--time-cap", type=float, default=120.0, help="seconds per server and protocol at most")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    p.add_argument("--sizing-rps", type=float, default=10000.0, help="images/s the sizing table plans replicas for")
    p.add_argument("--utilisation", type=float, default=0.7, help="share of a replica's measured throughput to plan with")
    p.add_argument("--no-results", action="store_true", help="print only; do not write results/triton_vs_serve.json")
    return p.parse_args(argv)


def measure(
    artifacts: Path, bitstreams: list[bytes], args: argparse.Namespace, work: Path
) -> tuple[list[LoadResult], list[list[float]], dict[str, float]]:
    """Both servers up at once; every (server, protocol) pair driven in each round, in turn. Also returns
    each pair's throughput per round and serve.py's own mean milliseconds per image (decode, queue, server
    half, whole request inside the server)."""
    model = read_manifest(artifacts).model_name
    triton_install = install()
    repo = work / "repository"
    write_repository(
        artifacts,
        repo,
        RepositoryOptions(
            max_batch_size=args.max_batch_size,
            max_queue_delay_us=int(args.max_queue_delay_ms * 1000),
            decode_instances=DECODE_WORKERS,
            execution_env=str(triton_install.execution_env),
        ),
    )
    grpc_port = free_port()
    serve_args = [
        "--backend",
        "onnxruntime",
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-queue-delay-ms",
        str(args.max_queue_delay_ms),
        "--decode-threads",
        str(DECODE_WORKERS),
        "--max-request-images",
        str(args.max_batch_size),
        "--grpc-port",
        str(grpc_port),
        "--client-error-burst",
        "0",
    ]
    with (
        ServerProcess(artifacts, work / "serve.log", serve_args) as serve,
        TritonProcess(triton_install, repo, work / "triton.log") as triton,
    ):
        targets = [
            ("serve.py", "HTTP", lambda n, cap, r: drive_http(serve.url, model, bitstreams, args.clients, n, cap, r, small=True)),
            ("Triton", "HTTP", lambda n, cap, r: drive_http(triton.url, model, bitstreams, args.clients, n, cap, r, small=True)),
            (
                "serve.py",
                "gRPC stream",
                lambda n, cap, r: drive_grpc_stream(f"{LOOPBACK}:{grpc_port}", model, bitstreams, args.clients, n, cap, r),
            ),
            (
                "Triton",
                "gRPC stream",
                lambda n, cap, r: drive_grpc_stream(f"{LOOPBACK}:{triton.grpc_port}", model, bitstreams, args.clients, n, cap, r),
            ),
        ]
        results = [LoadResult(f"{server} {protocol}", []) for server, protocol, _ in targets]
        rounds: list[list[float]] = [[] for _ in targets]
        for _, _, drive in targets:
            asyncio.run(drive(4 * args.clients, args.time_cap, None))  # warm-up, not counted
        for r in range(args.rounds):
            share = args.requests // args.rounds + (1 if r < args.requests % args.rounds else 0)
            for (_, _, drive), result, per_round in zip(targets, results, rounds):
                part = LoadResult(result.label, [])
                asyncio.run(drive(share, args.time_cap / args.rounds, part))
                result.add(part)
                per_round.append(part.throughput)
        inside = serve.server_side_ms()
        if triton.proc is None or triton.proc.poll() is not None:
            log = (work / "triton.log").read_text(errors="replace").splitlines()[-40:]
            raise ServerError("tritonserver exited during the run; the end of its log:\n" + "\n".join(log))
    return results, rounds, inside


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if min(args.clients, args.requests, args.rounds, args.max_batch_size) < 1 or args.time_cap <= 0 or args.max_queue_delay_ms < 0:
        print("triton_vs_serve: counts must be >= 1, --time-cap > 0, --max-queue-delay-ms >= 0", file=sys.stderr)
        return 2
    try:
        model = read_manifest(args.artifacts).model_name
        bitstreams = synthetic_bitstreams(args.artifacts, 64)
        with tempfile.TemporaryDirectory(prefix="mantis-triton-vs-serve-") as work:
            results, rounds, inside = measure(args.artifacts, bitstreams, args, Path(work))
    except (BundleError, RepositoryError, TritonInstallError, ServerError, OSError) as exc:
        print(f"triton_vs_serve: {exc}", file=sys.stderr)
        return 2
    columns = ["server", "requests ok", "failed", "seconds", "requests/s", "p50 (ms)", "p99 (ms)"]
    rows = [
        [r.label, r.ok, r.failed, round(r.seconds, 2), round(r.throughput, 1), round(r.percentile(50), 2), round(r.percentile(99), 2)]
        for r in results
    ]
    for row in [columns, *rows]:
        print(" | ".join(str(c) for c in row))
    by = {r.label: r for r in results}
    ratios = {
        p: by[f"serve.py {p}"].throughput / by[f"Triton {p}"].throughput if by[f"Triton {p}"].throughput else float("inf")
        for p in ("HTTP", "gRPC stream")
    }
    p99 = {p: by[f"Triton {p}"].percentile(99) / by[f"serve.py {p}"].percentile(99) for p in ("HTTP", "gRPC stream")}
    for p in ratios:
        print(f"{p}: serve.py / Triton throughput {ratios[p]:.2f}x; Triton / serve.py p99 {p99[p]:.2f}x")
    sizing = Table(
        f"Replicas for {args.sizing_rps:g} single-image requests/s at {args.utilisation:.0%} of the throughput one replica "
        "reached here, plus one to survive a replica's loss (N+1)",
        ["server", "measured requests/s per replica", "planned requests/s per replica", "replicas (N+1)"],
        [
            [
                r.label,
                round(r.throughput, 1),
                round(args.utilisation * r.throughput, 1),
                math.ceil(args.sizing_rps / (args.utilisation * r.throughput)) + 1 if r.throughput else "n/a",
            ]
            for r in results
        ],
    )
    by_round = Table(
        "serve.py / Triton throughput in each round (the spread shows how much the shared machine's load moved the ratio)",
        ["round", *ratios],
        [[i + 1, *(round(rounds[k][i] / rounds[k + 1][i], 2) if rounds[k + 1][i] else "n/a" for k in (0, 2))] for i in range(args.rounds)],
    )
    print("per round serve.py / Triton: " + "; ".join(" ".join(str(c) for c in row) for row in by_round.rows))
    print("serve.py's own time per image (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in inside.items()))
    failed = sum(r.failed for r in results)
    if not args.no_results:
        write_results(
            "triton_vs_serve",
            title=f"serve.py beside Triton Inference Server {TRITON_VERSION}: same bundle, same clients, dynamic batching on both",
            module="benchmarks.triton_vs_serve",
            argv=argv,
            headline=[
                *(Headline(f"serve.py / Triton throughput ({p}, single-image requests)", round(v, 2), "x") for p, v in ratios.items()),
                Headline("failed requests", failed, "", "0"),
            ],
            tables=[
                Table(
                    f"model {model}: {args.clients} concurrent clients, single-image requests asking for top, {args.rounds} alternating rounds; "
                    f"max batch {args.max_batch_size}, queue delay {args.max_queue_delay_ms:g} ms, {DECODE_WORKERS} decode workers on both; "
                    f"{os.cpu_count()} CPUs shared by clients and servers",
                    columns,
                    rows,
                ),
                by_round,
                sizing,
            ],
            notes=[
                "Triton runs the decode and answer steps and the server half (ONNX Runtime) in its Python backend, the only backend "
                "of the nvidia-pytriton build: each step is a separate stub process, and every tensor crosses shared memory "
                "between the core and the stubs three times per request.",
                "Both servers bind 127.0.0.1; the load generator runs on the same machine and shares its cores.",
                "serve_py_inside_ms_per_image: the time serve.py measured inside itself per image (decode, batching queue, server "
                "half, whole request from parsed body to answer); the rest of a client's latency is the HTTP/gRPC stack and "
                "waiting for the one event loop that parses every request and encodes every answer.",
            ],
            data={
                "results": [r.summary() for r in results],
                "throughput_per_round": rounds,
                "ratios": ratios,
                "p99_ratios": p99,
                "serve_py_inside_ms_per_image": inside,
            },
        )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
