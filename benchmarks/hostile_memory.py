"""Memory of serve.py under refused largest-size requests and under clients that leave mid-request.

    uv run python -m benchmarks.hostile_memory --artifacts DIR [--requests 200] [--disconnects 200]

Starts serve.py (HTTP, the compact stream and gRPC; the client budget off, so that every request is
refused for what it is rather than rate-limited) and reads its resident set size (``VmRSS``) before and
after, on each protocol in turn, ``--requests`` requests of the largest size the server takes
(``--max-request-bytes``) that it refuses (a malformed bitstream), and after ``--disconnects`` clients that
send requests on the compact stream and on a gRPC stream and drop the connection with them in flight.
Nothing waits for the cycle collector: the RSS is read right after the last answer. Target: at most 50 MB
growth per protocol. Results go to ``results/hostile_memory.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import grpc
import numpy as np

import codec
from benchmarks.results import Headline, Table, write_results
from codec.bundle import BundleError, load_bundle
from codec.stream import encode_request
from codec.wire import BINARY_DATA_SIZE, HEADER_LENGTH, pack_bytes
from codec import kserve_grpc as pb
from runtime_edge.transport.stream import frame
from tests.tools.raw_websocket import open_raw_stream, read_frame
from runtime_server.process import LOOPBACK, ServerError, ServerProcess, free_port

TARGET_MB = 50.0
MB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory written by export/split.py")
    p.add_argument("--requests", type=int, default=200, help="refused largest-size requests per protocol")
    p.add_argument("--disconnects", type=int, default=200, help="clients per stream protocol that leave with requests in flight")
    p.add_argument("--max-request-bytes", type=int, default=4 << 20, help="serve.py's request limit, the size of every request sent")
    p.add_argument("--results-dir", type=Path, help="where results/hostile_memory.json goes (default: the repository's results/)")
    return p.parse_args(argv)


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ServerError(f"/proc/{pid}/status has no VmRSS")


def open_websocket(host: str, port: int, path: str) -> socket.socket:
    """A socket on which the WebSocket handshake to ``path`` succeeded."""
    try:
        return open_raw_stream(f"http://{host}:{port}{path}", timeout=30)
    except ConnectionError as exc:
        raise ServerError(str(exc)) from None


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    """The opcode and payload of the server's next (unmasked, unfragmented) frame."""
    try:
        return read_frame(sock)
    except ConnectionError as exc:
        raise ServerError(f"the server closed the compact stream ({exc})") from None


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset, as a client that vanishes does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Clients:
    """The four protocols' clients of one serve.py, each sending requests of exactly the size limit."""

    def __init__(self, srv: ServerProcess, grpc_port: int, model: str, limit: int) -> None:
        self.host, self.port, self.model, self.limit = srv.host, srv.port, model, limit
        self.channel = grpc.insecure_channel(f"{LOOPBACK}:{grpc_port}", options=[("grpc.max_send_message_length", 2 * limit)])
        m = pb.METHODS["ModelInfer"]
        self.unary = self.channel.unary_unary(
            m.path, request_serializer=m.request.SerializeToString, response_deserializer=m.response.FromString
        )
        ms = pb.METHODS["ModelStreamInfer"]
        self.stream = self.channel.stream_stream(
            ms.path, request_serializer=ms.request.SerializeToString, response_deserializer=ms.response.FromString
        )
        junk = b"MT" + bytes(limit - 512)  # a bitstream header no model has: refused as codec from its header
        self.grpc_message = pb.ModelInferRequest(model_name=model, id="big")
        self.grpc_message.inputs.add(name="bitstream", datatype="BYTES", shape=[1]).contents.bytes_contents.append(junk)
        head = json.dumps({"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [1], "parameters": {BINARY_DATA_SIZE: 10**7}}]})
        element = b"MT" + bytes(limit - len(head) - 4 - 2)
        self.http_head = head.replace(str(10**7), str(len(element) + 4).rjust(8))
        self.http_body = self.http_head.encode() + pack_bytes([element])
        length = next(n for n in range(limit - 11, limit) if len(encode_request(1, [bytes(n)])) == limit)
        compact = encode_request(1, [b"MT" + bytes(length - 2)])
        self.compact = frame(0x2, compact)
        if not (len(self.http_body) == len(compact) == limit and self.grpc_message.ByteSize() <= limit):
            raise ServerError(
                f"request sizes {len(self.http_body)} / {len(compact)} / {self.grpc_message.ByteSize()} do not match the limit {limit}"
            )

    def http(self, n: int) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        for _ in range(n):
            conn.request("POST", f"/v2/models/{self.model}/infer", self.http_body, {HEADER_LENGTH: str(len(self.http_head))})
            response = conn.getresponse()
            response.read()
            if response.status != 400:
                raise ServerError(f"HTTP: expected a 400 refusal, got {response.status}")
        conn.close()

    def grpc_unary(self, n: int) -> None:
        for _ in range(n):
            try:
                self.unary(self.grpc_message, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise ServerError(f"gRPC: expected INVALID_ARGUMENT, got {exc.code()}: {exc.details()}") from None
            else:
                raise ServerError("gRPC: a malformed bitstream was answered")

    def grpc_stream(self, n: int) -> None:
        outbox: queue.Queue = queue.Queue()
        answers = self.stream(iter(outbox.get, None), timeout=600)
        for _ in range(n):
            outbox.put(self.grpc_message)
            if not next(answers).error_message:
                raise ServerError("gRPC stream: a malformed bitstream was answered")
        outbox.put(None)

    def compact_stream(self, n: int) -> None:
        sock = open_websocket(self.host, self.port, f"/v2/models/{self.model}/stream")
        for _ in range(n):
            sock.sendall(self.compact)
            opcode, data = read_message(sock)
            if opcode != 0x2 or data[1] == 0:
                raise ServerError(f"compact stream: expected a refusal, got opcode {opcode} status {data[1:2]!r}")
        sock.close()

    def leave_compact(self, n: int, bitstream: bytes) -> None:
        request = frame(0x2, encode_request(1, [bitstream] * 64, top_k=255))
        for _ in range(n):
            sock = open_websocket(self.host, self.port, f"/v2/models/{self.model}/stream")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request * 16)
            reset(sock)

    def leave_grpc(self, n: int, bitstream: bytes) -> None:
        message = pb.ModelInferRequest(model_name=self.model, id="gone")
        message.inputs.add(name="bitstream", datatype="BYTES", shape=[64]).contents.bytes_contents.extend([bitstream] * 64)
        for _ in range(n):
            call = self.stream(iter([message] * 16), timeout=30)
            next(call)  # the first answer: the other 15 requests are in flight
            call.cancel()

    def close(self) -> None:
        self.channel.close()


def measure(pid: int, phases: list[tuple[str, Callable[[], None]]]) -> list[dict[str, float]]:
    """RSS of ``pid`` before and after each phase (right after its last answer, no wait)."""
    rows = []
    for name, run in phases:
        before = rss_bytes(pid)
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        time.sleep(0.2)  # the last refusals' handlers return
        after = rss_bytes(pid)
        rows.append(
            {
                "phase": name,
                "rss_before_mb": before / MB,
                "rss_after_mb": after / MB,
                "growth_mb": (after - before) / MB,
                "seconds": seconds,
            }
        )
        print(
            f"{name:<40} RSS {before / MB:7.1f} -> {after / MB:7.1f} MB ({(after - before) / MB:+6.1f} MB) in {seconds:5.1f} s", flush=True
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.requests < 1 or args.disconnects < 0 or args.max_request_bytes < 65536:
        print("hostile_memory: --requests must be >= 1, --disconnects >= 0, --max-request-bytes >= 65536", file=sys.stderr)
        return 2
    try:
        bundle = load_bundle(args.artifacts)
    except (BundleError, OSError) as exc:
        print(f"hostile_memory: {exc}", file=sys.stderr)
        return 2
    latent = np.random.default_rng(0).standard_normal(bundle.latent_shape).astype(np.float32)
    bitstream = codec.encode_latent(latent, 1, bundle.tables)  # a valid bitstream: the requests in flight are real work
    grpc_port = free_port()
    serve_args = ["--grpc-port", str(grpc_port), "--max-request-bytes", str(args.max_request_bytes), "--client-error-burst", "0"]
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(args.artifacts, Path(tmp) / "serve.log", serve_args) as srv:
        clients = Clients(srv, grpc_port, bundle.manifest.model_name, args.max_request_bytes)
        try:
            for warm in (clients.http, clients.grpc_unary, clients.grpc_stream, clients.compact_stream):
                warm(2)  # first use of each size by the allocator, and of each code path
            n, d = args.requests, args.disconnects
            rows = measure(
                srv.proc.pid,
                [
                    (f"HTTP: {n} refused", lambda: clients.http(n)),
                    (f"gRPC ModelInfer: {n} refused", lambda: clients.grpc_unary(n)),
                    (f"gRPC ModelStreamInfer: {n} refused", lambda: clients.grpc_stream(n)),
                    (f"compact stream: {n} refused", lambda: clients.compact_stream(n)),
                    (f"compact stream: {d} left mid-request", lambda: clients.leave_compact(d, bitstream)),
                    (f"gRPC stream: {d} left mid-request", lambda: clients.leave_grpc(d, bitstream)),
                ],
            )
        finally:
            clients.close()
    worst = max(r["growth_mb"] for r in rows)
    mib = args.max_request_bytes / MB
    write_results(
        "hostile_memory",
        title="Server memory under refused largest-size requests and clients that leave",
        module="benchmarks.hostile_memory",
        argv=argv,
        headline=[Headline("largest RSS growth of a phase", round(worst, 1), "MB", f"<= {TARGET_MB:g} MB")],
        tables=[
            Table(
                f"serve.py's RSS around each phase ({mib:g} MiB requests, read right after the last answer, no garbage collection waited for)",
                ["phase", "RSS before (MB)", "RSS after (MB)", "growth (MB)", "seconds"],
                [
                    [
                        r["phase"],
                        round(r["rss_before_mb"], 1),
                        round(r["rss_after_mb"], 1),
                        round(r["growth_mb"], 1),
                        round(r["seconds"], 1),
                    ]
                    for r in rows
                ],
            )
        ],
        notes=[
            "Refused requests carry a bitstream whose header no model has (refused as codec from its 8 header bytes), each request "
            "exactly --max-request-bytes long on HTTP and the compact stream (the gRPC message just under it).",
            "Clients that leave send 16 requests of 64 images and reset the connection at once (compact stream) or cancel "
            "the call after the first answer (gRPC).",
        ],
        data={
            "requests": args.requests,
            "disconnects": args.disconnects,
            "max_request_bytes": args.max_request_bytes,
            "bundle": bundle.manifest.model_name,
            "rows": rows,
            "target_mb": TARGET_MB,
        },
        results_dir=args.results_dir,
    )
    return 0 if worst <= TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
