"""Hostile traffic against serve.py on loopback, and what it does to the clients that behave.

    uv run python -m benchmarks.hostile --artifacts DIR [--seconds 15] [--hostile-clients 4] [--results-dir results]

Starts serve.py on 127.0.0.1 and measures, in one run: a normal client's latency alone (single-image
requests, one after another) and the health probe's; then the same beside ``--hostile-clients`` clients,
each repeating one attack: slow uploads (32 connections at once, a byte per 0.2 s each), 4 MiB bodies
of a million BYTES elements, JSON headers of a million values, batches of 256 bitstreams whose headers
claim the largest latent the format allows. The hostile clients run flat out, each in its own process at ``nice +10`` (on a small machine they
share the server's cores, which a remote attacker does not) and from its own source address (127.0.1.K; the
normal client and the probe have theirs), as remote clients would: serve.py's budget of refused requests
per client address (``runtime_server/client_budget.py``, on by default) is part of what is measured. The server runs with its default limits
except ``--body-timeout 5``, so that slow uploads are cut off within a phase. It prints the normal
client's p50/p99 loaded vs unloaded (target: p99 ratio <= 3x), the health probe's latency under load
(target: p99 <= 100 ms), the statuses the hostile clients got (target: none >= 500); then it sends SIGTERM
to a second serve.py while one request is queued and one upload stalls, and prints how long the server took
to exit and what each got (target: within the shutdown timeout, the queued request answered 200).

Every loop is bounded in count and in time; every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codec import format as fmt
from codec.bundle import BundleError, load_bundle
from codec.tables import EntropyTables
from codec.wire import BINARY_DATA_SIZE, BITSTREAM_INPUT, HEADER_LENGTH, pack_bytes
from benchmarks.results import Headline, Table, add_results_arguments, write_results
from benchmarks.loadgen import synthetic_bitstreams
from runtime_server.process import LOOPBACK, ServerError, ServerProcess

TARGET_P99_RATIO = 3.0
TARGET_PROBE_MS = 100.0
BENCH_BODY_TIMEOUT = 5.0
SLOW_CONNECTIONS = 32
"""Uploads the slow-upload client keeps open at once."""
HOSTILE_NICENESS = 10
"""``nice`` increment of the hostile client processes."""
MAX_ROUNDS = 100_000
"""Upper bound on the iterations of any client loop (each also stops at its deadline)."""
NORMAL_SOURCE = "127.0.0.2"
PROBE_SOURCE = "127.0.0.3"
"""Source addresses of the normal client and the health probe: every client has its own address, as
remote clients have (serve.py keeps its budget of refused requests per address; Linux routes all of
127.0.0.0/8 to loopback)."""


def hostile_source(k: int) -> str:
    """Source address of hostile client ``k``."""
    return f"127.0.1.{k + 1}"


# ---- requests ---------------------------------------------------------------------------------------------


def binary_request(bitstreams: list[bytes], shape: list[int] | None = None) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 binary-extension infer request carrying ``bitstreams`` (``shape`` overrides the declared one)."""
    payload = pack_bytes(bitstreams)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": BITSTREAM_INPUT,
                    "datatype": "BYTES",
                    "shape": shape or [len(bitstreams)],
                    "parameters": {BINARY_DATA_SIZE: len(payload)},
                }
            ]
        }
    ).encode()
    return head + payload, {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}


def million_elements_request(body_bytes: int = 4_000_000) -> tuple[bytes, dict[str, str]]:
    """``body_bytes / 4`` empty BYTES elements, the shape declaring every one of them."""
    count = body_bytes // 4
    head = json.dumps(
        {"inputs": [{"name": BITSTREAM_INPUT, "datatype": "BYTES", "shape": [count], "parameters": {BINARY_DATA_SIZE: 4 * count}}]}
    ).encode()
    return head + bytes(4 * count), {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}


def json_flood_request(values: int = 1_000_000) -> tuple[bytes, dict[str, str]]:
    """A pure JSON request whose data list holds ``values`` empty lists (slowest for ``json.loads``)."""
    data = b"[" + b"[]," * (values - 1) + b"[]]"
    body = b'{"inputs":[{"name":"' + BITSTREAM_INPUT.encode() + b'","datatype":"BYTES","shape":[1],"data":' + data + b"}]}"
    return body, {"Content-Type": "application/json"}


def claimed_shape_bitstream(tables: EntropyTables, shape: tuple[int, int, int], task_mask: int = 1, payload: bytes = bytes(64)) -> bytes:
    """A bitstream with a well-formed header (right tables, valid CRC) announcing latent ``shape`` in front of
    a payload that is not a coded latent: only a receiver that decodes before checking the shape pays for it."""
    return fmt.pack(task_mask, tables.table_id, tables.sha256_digest, shape, payload)


def largest_shape(channels: int) -> tuple[int, int, int]:
    """The largest latent of ``channels`` channels the format allows (``C*H*W <= MAX_SYMBOLS``)."""
    side = int((fmt.MAX_SYMBOLS // channels) ** 0.5)
    return channels, min(side, fmt.MAX_LATENT_SIDE), min(side, fmt.MAX_LATENT_SIDE)


# ---- clients ----------------------------------------------------------------------------------------------


def _connect(address: tuple[str, int], timeout: float, source: str | None = None) -> socket.socket:
    return socket.create_connection(address, timeout=timeout, source_address=(source, 0) if source else None)


def read_status(sock: socket.socket, deadline: float) -> int:
    """The status code of the answer on ``sock`` (0: closed without one; -1: none by ``deadline``)."""
    data = b""
    while b"\r\n" not in data and len(data) < 4096:
        left = deadline - time.monotonic()
        if left <= 0:
            return -1
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return -1
        except OSError:
            return 0
        if not chunk:
            break
        data += chunk
    parts = data.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


def post_raw(
    address: tuple[str, int], path: str, body: bytes, headers: dict[str, str], timeout: float = 30.0, source: str | None = None
) -> int:
    """POST ``body`` on a new connection (from ``source``); the answer's status (0: the server closed without one)."""
    deadline = time.monotonic() + timeout
    lines = [f"POST {path} HTTP/1.1", f"Host: {address[0]}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    try:
        with _connect(address, timeout, source) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            return read_status(sock, deadline)
    except OSError:
        return 0


def slow_uploads(
    address: tuple[str, int],
    path: str,
    seconds: float,
    connections: int = 1,
    reopen: bool = False,
    interval: float = 0.2,
    declared: int = 100_000,
    source: str | None = None,
) -> list[int]:
    """Keep ``connections`` uploads open for at most ``seconds`` s, each declaring a ``declared``-byte body and
    sending one byte per ``interval`` s (with ``reopen``, one the server ends is replaced by a new one).
    Returns, per connection, the status the server answered (408: cut off at its body deadline), 0 if it
    closed without one, -1 if it was still open at the end."""
    deadline = time.monotonic() + seconds
    head = f"POST {path} HTTP/1.1\r\nHost: {address[0]}\r\nContent-Length: {declared}\r\n\r\n".encode()
    ended: list[int] = []
    open_socks: list[socket.socket] = []
    opened = 0
    try:
        for _ in range(MAX_ROUNDS):
            if time.monotonic() >= deadline or (not reopen and opened == connections and not open_socks):
                break
            while len(open_socks) < connections and (reopen or opened < connections):
                opened += 1
                try:
                    sock = _connect(address, max(0.1, deadline - time.monotonic()), source)
                    sock.sendall(head)
                except OSError:
                    ended.append(0)
                    continue
                sock.setblocking(False)
                open_socks.append(sock)
            for sock in list(open_socks):
                try:
                    answered = sock.recv(1, socket.MSG_PEEK)
                except BlockingIOError:  # no answer yet: one more byte
                    try:
                        sock.send(b"x")
                        continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        answered = b""
                except OSError:
                    answered = b""
                open_socks.remove(sock)
                sock.setblocking(True)
                ended.append(read_status(sock, min(deadline, time.monotonic() + 5)) if answered else 0)
                sock.close()
            time.sleep(interval)
    finally:
        for sock in open_socks:
            ended.append(-1)
            sock.close()
    return ended


def slow_upload(address: tuple[str, int], path: str, seconds: float, interval: float = 0.2, declared: int = 100_000) -> int:
    """One upload of :func:`slow_uploads`: the status the server answered (408 when it stopped waiting), 0
    if it closed without one, -1 if it was still open after ``seconds`` s."""
    return slow_uploads(address, path, seconds, 1, False, interval, declared)[0]


@dataclass
class Tally:
    """What a set of clients saw: latencies (ms) of the requests that mattered, and statuses by count."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def _timed_request(
    conn: http.client.HTTPConnection, method: str, path: str, tally: Tally, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, float] | None:
    """One request on ``conn``: its status (counted in ``tally``) and latency in ms; ``None`` after a
    connection failure (counted by its exception's name; the connection is closed to reopen on next use)."""
    start = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
    except (OSError, http.client.HTTPException) as exc:
        tally.statuses[type(exc).__name__] += 1
        conn.close()
        return None
    tally.statuses[resp.status] += 1
    return resp.status, (time.perf_counter() - start) * 1000.0


def normal_client(address: tuple[str, int], model: str, bitstreams: list[bytes], until: float, tally: Tally) -> None:
    """Single-image requests, one after another on a keep-alive connection, until ``until``."""
    conn = http.client.HTTPConnection(*address, timeout=30, source_address=(NORMAL_SOURCE, 0))
    requests = [binary_request([b]) for b in bitstreams]
    try:
        for i in range(MAX_ROUNDS):
            if time.monotonic() >= until:
                return
            body, headers = requests[i % len(requests)]
            answer = _timed_request(conn, "POST", f"/v2/models/{model}/infer", tally, body, headers)
            if answer is not None and answer[0] == 200:
                tally.latencies_ms.append(answer[1])
    finally:
        conn.close()


def health_prober(address: tuple[str, int], until: float, tally: Tally, interval: float = 0.05) -> None:
    """``GET /v2/health/live`` every ``interval`` s on a keep-alive connection until ``until``."""
    conn = http.client.HTTPConnection(*address, timeout=30, source_address=(PROBE_SOURCE, 0))
    try:
        for _ in range(MAX_ROUNDS):
            if time.monotonic() >= until:
                return
            answer = _timed_request(conn, "GET", "/v2/health/live", tally)
            if answer is not None:
                tally.latencies_ms.append(answer[1])
                time.sleep(interval)
    finally:
        conn.close()


ATTACKS = ("slow_upload", "million_elements", "json_flood", "claimed_shapes")


def hostile_client(
    address: tuple[str, int], model: str, claimed: bytes, until: float, tally: Tally, attack: str, source: str | None = None
) -> None:
    """Repeat one of :data:`ATTACKS` from ``source`` until ``until`` (``claimed``: the bitstream the
    ``claimed_shapes`` attack sends 256 of); counts ``attack:status`` (0: closed without an answer, -1: still
    waiting when the client gave up)."""
    path = f"/v2/models/{model}/infer"
    requests = {
        "slow_upload": None,
        "million_elements": million_elements_request,
        "json_flood": json_flood_request,
        "claimed_shapes": lambda: binary_request([claimed] * 256),
    }
    if attack not in requests:
        raise ValueError(f"unknown attack {attack!r}; known: {ATTACKS}")
    make = requests[attack]
    request = make() if make is not None else None
    for _ in range(MAX_ROUNDS):
        if time.monotonic() >= until:
            return
        if request is None:
            statuses = slow_uploads(address, path, max(0.1, until - time.monotonic()), SLOW_CONNECTIONS, reopen=True, source=source)
        else:
            statuses = [post_raw(address, path, *request, source=source)]
        for status in statuses:
            tally.statuses[f"{attack}:{status}"] += 1


# ---- the benchmark ----------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured phase: the normal client, the health probe and (loaded) the hostile clients."""

    normal: Tally
    probe: Tally
    hostile: Tally


def _hostile_process(
    address: tuple[str, int], model: str, claimed: bytes, seconds: float, attack: str, source: str, ready: Any, go: Any, results: Any
) -> None:
    """One hostile client in its own process (so that its work never competes for the measuring process's
    interpreter), at a lower CPU priority (a real attacker's CPU is not the server's; here the attackers
    share the machine and would otherwise be measured as much as the server): ready, wait for the start,
    attack for ``seconds`` s, report the statuses."""
    os.nice(HOSTILE_NICENESS)
    tally = Tally()
    ready.set()
    if go.wait(60):
        hostile_client(address, model, claimed, time.monotonic() + seconds, tally, attack, source)
    results.put({str(k): v for k, v in tally.statuses.items()})


def run_phase(address: tuple[str, int], model: str, bitstreams: list[bytes], claimed: bytes, seconds: float, hostile_clients: int) -> Phase:
    """Run the normal client and the prober (threads) for ``seconds`` s beside ``hostile_clients`` hostile
    clients (processes, each repeating one of :data:`ATTACKS` in turn; started before the clock runs)."""
    phase = Phase(Tally(), Tally(), Tally())
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(hostile_clients)]
    procs = [
        ctx.Process(
            target=_hostile_process,
            args=(address, model, claimed, seconds, ATTACKS[k % len(ATTACKS)], hostile_source(k), readies[k], go, results),
            daemon=True,
        )
        for k in range(hostile_clients)
    ]
    started = []
    try:
        for proc in procs:
            proc.start()
            started.append(proc)
        for ready in readies:
            if not ready.wait(120):
                raise RuntimeError("a hostile client process did not start within 120 s")
        until = time.monotonic() + seconds
        go.set()
        threads = [
            threading.Thread(target=normal_client, args=(address, model, bitstreams, until, phase.normal)),
            threading.Thread(target=health_prober, args=(address, until, phase.probe)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
        for _ in procs:
            phase.hostile.statuses.update(results.get(timeout=seconds + 60))
    finally:
        for proc in started:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return phase


@dataclass
class ShutdownResult:
    exit_seconds: float
    exit_code: int | None
    queued_status: int
    stalled_status: int


def shutdown_check(artifacts: Path, model: str, bitstream: bytes, log_path: Path, shutdown_timeout: float = 30.0) -> ShutdownResult:
    """SIGTERM a serve.py while one request waits in its batching queue (1 s queue delay) and one upload
    stalls; how long the exit took and what the two clients got."""
    args = ["--max-batch-size", "64", "--max-queue-delay-ms", "1000", "--shutdown-timeout", str(shutdown_timeout)]
    server = ServerProcess(artifacts, log_path, args).start()
    address = (server.host, server.port)
    path = f"/v2/models/{model}/infer"
    results: dict[str, int] = {}
    queued = threading.Thread(target=lambda: results.update(queued=post_raw(address, path, *binary_request([bitstream]))))
    stalled = threading.Thread(target=lambda: results.update(stalled=slow_upload(address, path, seconds=shutdown_timeout + 10)))
    try:
        stalled.start()
        queued.start()
        time.sleep(0.3)
        proc = server.proc
        if proc is None:
            raise ServerError("serve.py is not running")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(shutdown_timeout + 10)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.monotonic() - start
        queued.join(10)
        stalled.join(10)
    finally:
        server.stop()
    return ShutdownResult(seconds, code, results.get("queued", -1), results.get("stalled", -1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="serve.py under hostile traffic: a normal client's latency and the health probe, loaded vs not")
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each phase (unloaded, loaded)")
    p.add_argument("--hostile-clients", type=int, default=4, help="hostile clients in the loaded phase")
    p.add_argument("--backend", default="onnxruntime", help="serve.py --backend")
    add_results_arguments(p, "hostile")
    return p.parse_args(argv)


def _row(label: str, tally: Tally) -> str:
    return f"{label:<34} {len(tally.latencies_ms):>7} {tally.percentile(50):>8.2f} {tally.percentile(99):>8.2f} {max(tally.latencies_ms, default=float('nan')):>8.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seconds <= 0 or args.hostile_clients < 1:
        print("hostile.py: --seconds must be > 0 and --hostile-clients >= 1", file=sys.stderr)
        return 2
    try:
        bundle = load_bundle(args.artifacts)
        bitstreams = synthetic_bitstreams(args.artifacts, 16)
    except (BundleError, OSError) as exc:
        print(f"hostile.py: {exc}", file=sys.stderr)
        return 2
    model, channels = bundle.manifest.model_name, bundle.latent_shape[0]
    print(
        f"model {model}, backend {args.backend}, {LOOPBACK}, {os.cpu_count()} CPUs, {args.seconds:g} s per phase, "
        f"{args.hostile_clients} hostile clients ({', '.join(ATTACKS[k % len(ATTACKS)] for k in range(args.hostile_clients))}; "
        f"claimed latent {largest_shape(channels)}; own processes at nice +{HOSTILE_NICENESS}), serve.py --body-timeout {BENCH_BODY_TIMEOUT:g}"
    )
    with tempfile.TemporaryDirectory(prefix="mantis-hostile-") as logs:
        try:
            serve_args = ["--backend", args.backend, "--body-timeout", str(BENCH_BODY_TIMEOUT)]
            with ServerProcess(args.artifacts, Path(logs) / "serve.log", serve_args) as server:
                address = (server.host, server.port)
                claimed = claimed_shape_bitstream(bundle.tables, largest_shape(channels))
                run_phase(address, model, bitstreams, claimed, min(2.0, args.seconds), 0)  # warm-up
                alone = run_phase(address, model, bitstreams, claimed, args.seconds, 0)
                loaded = run_phase(address, model, bitstreams, claimed, args.seconds, args.hostile_clients)
            shutdown = shutdown_check(args.artifacts, model, bitstreams[0], Path(logs) / "serve-shutdown.log")
        except ServerError as exc:
            print(f"hostile.py: {exc}", file=sys.stderr)
            return 2
    print(f"{'latency (ms)':<34} {'count':>7} {'p50':>8} {'p99':>8} {'max':>8}")
    print(_row("normal client, alone", alone.normal))
    print(_row("normal client, beside hostile", loaded.normal))
    print(_row("health probe, alone", alone.probe))
    print(_row("health probe, beside hostile", loaded.probe))
    ratio = loaded.normal.percentile(99) / alone.normal.percentile(99)
    probe_p99 = loaded.probe.percentile(99)
    server_errors = sum(
        n for key, n in loaded.hostile.statuses.items() if str(key).rsplit(":", 1)[-1].isdigit() and int(str(key).rsplit(":", 1)[-1]) >= 500
    )
    normal_failed = sum(n for key, n in loaded.normal.statuses.items() if key != 200)
    print(f"hostile clients got: {dict(sorted(loaded.hostile.statuses.items()))}")
    print(
        f"normal client p99 loaded / alone: {ratio:.2f}x (target <= {TARGET_P99_RATIO:g}x: {'met' if ratio <= TARGET_P99_RATIO else 'NOT met'}); "
        f"failed normal requests: {normal_failed}"
    )
    print(
        f"health probe p99 beside hostile clients: {probe_p99:.1f} ms (target <= {TARGET_PROBE_MS:g} ms: "
        f"{'met' if probe_p99 <= TARGET_PROBE_MS else 'NOT met'})"
    )
    print(f"answers >= 500 to hostile clients: {server_errors} (target 0)")
    print(
        f"SIGTERM with a queued request and a stalled upload: exit {shutdown.exit_code} after {shutdown.exit_seconds:.2f} s "
        f"(shutdown timeout 30 s); queued request got {shutdown.queued_status}, stalled upload got {shutdown.stalled_status}"
    )
    data = {
        "model": model,
        "seconds": args.seconds,
        "hostile_clients": args.hostile_clients,
        "normal_alone_ms": {
            "p50": alone.normal.percentile(50),
            "p99": alone.normal.percentile(99),
            "count": len(alone.normal.latencies_ms),
        },
        "normal_loaded_ms": {
            "p50": loaded.normal.percentile(50),
            "p99": loaded.normal.percentile(99),
            "count": len(loaded.normal.latencies_ms),
        },
        "probe_alone_ms": {"p50": alone.probe.percentile(50), "p99": alone.probe.percentile(99)},
        "probe_loaded_ms": {"p50": loaded.probe.percentile(50), "p99": probe_p99, "max": max(loaded.probe.latencies_ms, default=None)},
        "p99_ratio": ratio,
        "hostile_statuses": {str(k): v for k, v in loaded.hostile.statuses.items()},
        "server_errors": server_errors,
        "normal_failed": normal_failed,
        "shutdown": {
            "seconds": shutdown.exit_seconds,
            "exit_code": shutdown.exit_code,
            "queued_status": shutdown.queued_status,
            "stalled_status": shutdown.stalled_status,
        },
    }
    latency_rows = [
        [
            label,
            len(t.latencies_ms),
            round(t.percentile(50), 2),
            round(t.percentile(99), 2),
            round(max(t.latencies_ms, default=float("nan")), 2),
        ]
        for label, t in (
            ("normal client, alone", alone.normal),
            ("normal client, beside hostile", loaded.normal),
            ("health probe, alone", alone.probe),
            ("health probe, beside hostile", loaded.probe),
        )
    ]
    write_results(
        args.results_name,
        title="Hostile traffic: a normal client and the health probe beside hostile clients",
        module="benchmarks.hostile",
        argv=argv,
        headline=[
            Headline("normal client p99 beside hostile clients / alone", round(ratio, 2), "x", f"<= {TARGET_P99_RATIO:g}x"),
            Headline("health probe p99 beside hostile clients", round(probe_p99, 1), "ms", f"<= {TARGET_PROBE_MS:g} ms"),
            Headline("answers >= 500 to hostile clients", server_errors, "", "0"),
        ],
        tables=[
            Table(
                f"{args.seconds:g} s per phase, {args.hostile_clients} hostile clients, ms",
                ["who", "requests", "p50", "p99", "max"],
                latency_rows,
            ),
            Table(
                "what the hostile clients were answered",
                ["attack:status", "answers"],
                [[str(k), v] for k, v in sorted(loaded.hostile.statuses.items(), key=lambda kv: str(kv[0]))],
            ),
            Table(
                "SIGTERM with a queued request and a stalled upload",
                ["exit status", "seconds to exit", "queued request", "stalled upload"],
                [[shutdown.exit_code, round(shutdown.exit_seconds, 2), shutdown.queued_status, shutdown.stalled_status]],
            ),
        ],
        data=data,
        results_dir=args.results_dir,
    )
    ok = server_errors == 0 and normal_failed == 0 and shutdown.exit_code == 0 and shutdown.queued_status == 200
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
