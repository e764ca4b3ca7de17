"""Failover: two replicas (serve.py, and Triton with ``--servers serve.py triton``) behind HAProxy
(``runtime_server/deploy/haproxy.cfg``), one SIGKILLed under load, over HTTP and over gRPC.

    uv run python -m benchmarks.failover --artifacts BUNDLE [--images 400] [--clients 4] [--kill-after 0.3]
        [--servers serve.py triton]

Edge clients (the edge runtime's transports with their retry policy: ``http://`` and ``grpc://``, one
``ModelStreamInfer`` stream per client) stream single-image requests through the load balancer; when
``--kill-after`` of the images are answered, replica 1 gets SIGKILL. Every image's answer is checked
against the answer a replica gave it directly before the run (``top`` and the logits, so an answer that
belongs to another image is caught). Reports images lost, answered twice or wrongly, requests that needed
more than one attempt, and the longest wait; writes ``results/failover.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.results import Headline, Table, write_results
from codec.bundle import BundleError, read_manifest
from codec.wire import LABEL_INDEX_OUTPUT, logits_output
from export.triton_repository import RepositoryError, RepositoryOptions, write_repository
from runtime_edge.transport import RetryPolicy, TransportError
from runtime_edge.transport import connect
from runtime_server.load_balancer import LoadBalancer
from benchmarks.loadgen import synthetic_bitstreams
from runtime_server.process import LOOPBACK, ServerError, ServerProcess, free_port
from runtime_server.triton_serving.install import TritonInstallError, install
from runtime_server.triton_serving.process import TritonProcess

SCHEMES = ("http", "grpc")


SERVERS = ("serve.py", "triton")


@dataclass
class Replica:
    """One replica (serve.py, or tritonserver on ``repository``) with its HTTP and gRPC ports, kept across
    restarts, as the balancer names them."""

    artifacts: Path
    log: Path
    repository: Path | None = None
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: ServerProcess | TritonProcess | None = None

    @property
    def urls(self) -> tuple[str, str]:
        return f"http://{LOOPBACK}:{self.http_port}", f"grpc://{LOOPBACK}:{self.grpc_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.proc is not None

    def start(self) -> None:
        if self.repository is not None:
            self.process = TritonProcess(install(), self.repository, self.log, http_port=self.http_port, grpc_port=self.grpc_port).start()
            return
        # behind a balancer every client has the balancer's address: no budget of refused requests per address
        args = ["--grpc-port", str(self.grpc_port), "--client-error-burst", "0", "--max-batch-size", "16"]
        self.process = ServerProcess(self.artifacts, self.log, args, port=self.http_port).start()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests are lost on the replica."""
        if isinstance(self.process, TritonProcess):
            self.process.kill()
        elif self.running:
            self.process.proc.kill()
            self.process.proc.wait()
            self.process.proc = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class FailoverResult:
    """What the clients got during one run."""

    server: str
    scheme: str
    images: int
    clients: int
    answered: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    retried: int = 0
    extra_attempts: int = 0
    longest_wait_ms: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    killed_after_s: float = 0.0
    answered_after_kill: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.answered == self.images and not (self.lost or self.duplicated or self.wrong)


def expected_answers(url: str, model: str, bitstreams: list[bytes], names: list[str]) -> list[dict[str, np.ndarray]]:
    """Each image's answer from one replica, directly (no balancer, no failure)."""
    with connect(url) as client:
        return [client.infer(model, [b], outputs=names).outputs for b in bitstreams]


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> bool:
    return set(got) == set(want) and all(
        np.allclose(got[n], want[n], rtol=1e-5, atol=1e-5) if n != LABEL_INDEX_OUTPUT else np.array_equal(got[n], want[n]) for n in want
    )


def drive(
    url: str,
    model: str,
    bitstreams: list[bytes],
    expected: list[dict[str, np.ndarray]],
    names: list[str],
    clients: int,
    kill_after: float,
    kill: Callable[[], None],
    server: str,
    scheme: str,
    retry: RetryPolicy | None = None,
) -> FailoverResult:
    """``clients`` edge clients share the images (one single-image request each, in order); ``kill()`` runs
    once ``kill_after`` of them are answered. Every answer is kept by image index and checked."""
    result = FailoverResult(server, scheme, len(bitstreams), clients)
    answers: dict[int, list[dict[str, np.ndarray]]] = {}
    waits: list[float] = []
    lock = threading.Lock()
    done = threading.Event()
    trigger = max(1, int(kill_after * len(bitstreams)))
    start = time.perf_counter()

    killed_at: list[float] = []

    def killer() -> None:
        done.wait()
        kill()
        killed_at.append(time.perf_counter())

    def worker(w: int) -> None:
        with connect(url, timeout=30.0, retry=retry) as client:
            for i in range(w, len(bitstreams), clients):
                t0 = time.perf_counter()
                try:
                    answer = client.infer(model, [bitstreams[i]], outputs=names)
                except TransportError as exc:
                    with lock:
                        result.errors.append(f"image {i}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    if killed_at and t0 > killed_at[0]:
                        result.answered_after_kill += 1
                    waits.append((time.perf_counter() - t0) * 1000.0)
                    answers.setdefault(i, []).append(answer.outputs)
                    if answer.attempts > 1:
                        result.retried += 1
                        result.extra_attempts += answer.attempts - 1
                    if len(answers) >= trigger:
                        done.set()

    kill_thread = threading.Thread(target=killer, daemon=True)
    kill_thread.start()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    kill_thread.join()
    result.seconds = time.perf_counter() - start
    result.killed_after_s = killed_at[0] - start if killed_at else float("nan")
    result.answered = len(answers)
    result.lost = len(bitstreams) - len(answers)
    result.duplicated = sum(1 for got in answers.values() if len(got) > 1)
    result.wrong = sum(1 for i, got in answers.items() if not all(_same(g, expected[i]) for g in got))
    if waits:
        result.longest_wait_ms = max(waits)
        result.p50_ms = float(np.percentile(waits, 50))
        result.p99_ms = float(np.percentile(waits, 99))
    return result


def run_failover(
    artifacts: Path,
    bitstreams: list[bytes],
    clients: int,
    kill_after: float,
    log_dir: Path,
    schemes: tuple[str, ...] = SCHEMES,
    server: str = "serve.py",
) -> list[FailoverResult]:
    """For each scheme: both replicas of ``server`` up behind the balancer, the clients streaming, replica 1
    SIGKILLed (and started again for the next scheme)."""
    manifest = read_manifest(artifacts)
    names = [LABEL_INDEX_OUTPUT, *(logits_output(t) for t in manifest.task_names)]
    repository = None
    if server == "triton":
        repository = log_dir / "repository"
        write_repository(artifacts, repository, RepositoryOptions(max_batch_size=16, execution_env=str(install().execution_env)))
    replicas = [Replica(artifacts, log_dir / f"{server}{i}.log", repository) for i in (1, 2)]
    results = []
    try:
        with ThreadPoolExecutor(len(replicas)) as pool:  # both start at once
            for started in [pool.submit(r.start) for r in replicas]:
                started.result()
        expected = expected_answers(replicas[1].urls[0], manifest.model_name, bitstreams, names)
        with LoadBalancer([r.urls for r in replicas], log_dir / f"haproxy-{server}.log") as lb:
            for scheme in schemes:
                if not replicas[0].running:
                    replicas[0].start()
                    lb.wait_all_up()
                url = lb.url if scheme == "http" else lb.grpc_url
                results.append(
                    drive(url, manifest.model_name, bitstreams, expected, names, clients, kill_after, replicas[0].kill, server, scheme)
                )
    finally:
        for r in replicas:
            r.stop()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="two replicas behind HAProxy, one SIGKILLed under load (HTTP and gRPC)")
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory")
    p.add_argument("--images", type=int, default=400, help="images per protocol (one single-image request each)")
    p.add_argument("--clients", type=int, default=4, help="concurrent edge clients")
    p.add_argument("--kill-after", type=float, default=0.3, help="fraction of the images answered before replica 1 is killed")
    p.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS), help="which replicas to run, one after the other")
    p.add_argument("--no-results", action="store_true", help="print only; do not write results/failover.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.images < 1 or args.clients < 1 or not 0 < args.kill_after < 1:
        print("failover: --images and --clients must be >= 1, --kill-after in (0, 1)", file=sys.stderr)
        return 2
    try:
        bitstreams = synthetic_bitstreams(args.artifacts, args.images)
        results = []
        for server in args.servers:
            with tempfile.TemporaryDirectory(prefix="mantis-failover-") as logs:
                results += run_failover(args.artifacts, bitstreams, args.clients, args.kill_after, Path(logs), server=server)
    except (BundleError, RepositoryError, TritonInstallError, ServerError, OSError) as exc:
        print(f"failover: {exc}", file=sys.stderr)
        return 2
    columns = [
        "replicas",
        "protocol",
        "images",
        "answered",
        "lost",
        "answered twice",
        "wrong",
        "requests retried",
        "extra attempts",
        "longest wait (ms)",
        "p50 (ms)",
        "p99 (ms)",
        "killed after (s)",
    ]
    rows = [
        [
            r.server,
            r.scheme,
            r.images,
            r.answered,
            r.lost,
            r.duplicated,
            r.wrong,
            r.retried,
            r.extra_attempts,
            round(r.longest_wait_ms, 1),
            round(r.p50_ms, 2),
            round(r.p99_ms, 2),
            round(r.killed_after_s, 2),
        ]
        for r in results
    ]
    for row in [columns, *rows]:
        print(" | ".join(str(c) for c in row))
    for r in results:
        for e in r.errors[:5]:
            print(f"  {r.server} {r.scheme}: {e}")
    bad = sum(r.lost + r.duplicated + r.wrong for r in results)
    if not args.no_results:
        write_results(
            "failover",
            title="Failover: two replicas behind HAProxy, one SIGKILLed under load",
            module="benchmarks.failover",
            argv=argv,
            headline=[
                Headline(
                    f"images lost, answered twice or wrongly when a replica dies ({', '.join(args.servers)}; HTTP + gRPC)",
                    bad,
                    "images",
                    "0",
                ),
                *(
                    Headline(f"longest wait during the failover ({r.server}, {r.scheme})", round(r.longest_wait_ms, 1), "ms")
                    for r in results
                ),
            ],
            tables=[
                Table(
                    f"{args.images} images per protocol, {args.clients} edge clients, replica 1 SIGKILLed after {args.kill_after:.0%} "
                    "were answered (HAProxy 2.6, runtime_server/deploy/haproxy.cfg)",
                    columns,
                    rows,
                )
            ],
            notes=[
                "Retries are the edge runtime's own (RetryPolicy defaults): HAProxy re-sends only requests that never reached a "
                "replica (retry-on conn-failure) and answers 503 'unavailable' for a request whose replica died mid-answer.",
                "Each answer is compared with the one a replica gave that image directly (top and logits).",
            ],
            data={"results": [r.__dict__ | {"errors": r.errors[:20]} for r in results]},
        )
    return 0 if bad == 0 and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
