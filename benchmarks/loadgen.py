"""Load generation against serve.py on loopback: the server-throughput benchmark's logic.

Each configuration runs as its own ``serve.py`` process on ``127.0.0.1`` (a free port), loaded by
``clients`` concurrent keep-alive HTTP clients (aiohttp, one event loop) that send single-image KServe v2
binary inference requests until ``requests`` are done or ``time_cap`` seconds have passed; the
configurations take turns in several rounds.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

from runtime_server.process import LOOPBACK, ServerProcess, free_port, scrape_metrics
from codec.wire import BINARY_DATA, BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, BITSTREAM_INPUT, HEADER_LENGTH, LABEL_INDEX_OUTPUT, pack_bytes


@dataclass
class LoadResult:
    """One configuration's run: counts, wall time, latencies (ms) and the server's batch statistics."""

    label: str
    server_args: list[str]
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    batches: float = 0.0
    batched_images: float = 0.0

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def mean_batch(self) -> float:
        return self.batched_images / self.batches if self.batches else 0.0

    def record(self, error: str | None, started: float) -> None:
        """Count one request that started at ``started`` (``time.perf_counter()``): its latency when it
        succeeded, else its error."""
        if not error:
            self.ok += 1
            self.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        else:
            self.failed += 1
            self.errors[error] = self.errors.get(error, 0) + 1

    def add(self, part: "LoadResult") -> None:
        """Fold one round's counts, time and latencies into this result."""
        self.ok += part.ok
        self.failed += part.failed
        self.seconds += part.seconds
        self.latencies_ms += part.latencies_ms
        for k, v in part.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v

    def summary(self) -> dict:
        d = asdict(self)
        del d["latencies_ms"]
        d.update(throughput_rps=self.throughput, p50_ms=self.percentile(50), p99_ms=self.percentile(99), mean_batch=self.mean_batch)
        return d


def synthetic_bitstreams(artifacts: Path, count: int, seed: int = 0) -> list[bytes]:
    """Real bitstreams from the bundle's edge client on ``count`` deterministic random-texture images."""
    from runtime_edge.client import EdgeRuntime

    edge = EdgeRuntime(artifacts)
    h, w = edge.bundle.manifest.preprocessing.input_size
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
        image = Image.fromarray(coarse, "RGB").resize((w, h), Image.BILINEAR)
        out.append(edge.encode(image).bitstream)
    return out


def read_bitstreams(directory: Path) -> list[bytes]:
    """Every ``*.mtb`` file of ``directory`` (as written by ``runtime_edge/run.py --save``), sorted by name."""
    files = sorted(directory.glob("*.mtb"))
    if not files:
        raise FileNotFoundError(f"no *.mtb bitstreams in {directory}")
    return [f.read_bytes() for f in files]


def _request(bitstream: bytes, small: bool = False) -> tuple[bytes, dict[str, str]]:
    payload = pack_bytes([bitstream])
    doc = {
        "inputs": [{"name": BITSTREAM_INPUT, "datatype": "BYTES", "shape": [1], "parameters": {BINARY_DATA_SIZE: len(payload)}}],
        "parameters": {BINARY_DATA_OUTPUT: True},
    }
    if small:  # the labels-only answer the edge runtime asks for (binary: Triton applies binary_data_output only to unnamed outputs)
        doc["outputs"] = [{"name": LABEL_INDEX_OUTPUT, "parameters": {BINARY_DATA: True}}]
    head = json.dumps(doc).encode()
    return head + payload, {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}


async def drive_http(
    url: str,
    model: str,
    bitstreams: list[bytes],
    clients: int,
    requests: int,
    time_cap: float,
    result: LoadResult | None,
    small: bool = False,
) -> None:
    """``clients`` workers share ``requests`` requests; ``result`` None is a warm-up (nothing recorded);
    ``small`` asks for ``top`` alone."""
    bodies = [_request(b, small) for b in bitstreams]
    endpoint = f"{url}/v2/models/{model}/infer"
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(i: int) -> str:
            body, headers = bodies[i % len(bodies)]
            try:
                async with session.post(endpoint, data=body, headers=headers) as resp:
                    data = await resp.read()
                    if resp.status != 200:
                        return f"HTTP {resp.status}"
                    if HEADER_LENGTH not in resp.headers or int(resp.headers[HEADER_LENGTH]) > len(data):
                        return "malformed response"
                    return ""
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return type(exc).__name__

        start = time.perf_counter()
        stop_at = start + time_cap

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() >= stop_at:
                    return
                t0 = time.perf_counter()
                error = await one(i)
                if result is not None:
                    result.record(error, t0)

        await asyncio.gather(*(worker() for _ in range(clients)))
        if result is not None:
            result.seconds = time.perf_counter() - start


def _batch_stats(url: str) -> tuple[float, float]:
    """(batches, images) from the server's ``mantis_batch_size`` histogram."""
    totals = scrape_metrics(url)
    return totals.get("mantis_batch_size_count", 0.0), totals.get("mantis_batch_size_sum", 0.0)


def run_configs(
    artifacts: Path,
    model: str,
    configs: list[tuple[str, list[str]]],
    bitstreams: list[bytes],
    clients: int,
    requests: int,
    time_cap: float,
    rounds: int = 4,
) -> list[LoadResult]:
    """Start one serve.py per ``(label, server_args)``, warm each up (``2 * clients`` requests, not
    counted), then drive them in ``rounds`` alternating rounds of ``requests / rounds`` requests (and at
    most ``time_cap / rounds`` seconds) each, so that a change in the machine's load hits every
    configuration alike. Returns one result per configuration, with the batches its server formed."""
    results = [LoadResult(label, args) for label, args in configs]
    servers: list[ServerProcess] = []
    logs = tempfile.TemporaryDirectory(prefix="mantis-loadgen-")
    try:
        for i, (_, args) in enumerate(configs):
            servers.append(ServerProcess(artifacts, Path(logs.name) / f"serve{i}.log", args).start())
        for server in servers:
            asyncio.run(drive_http(server.url, model, bitstreams, clients, 2 * clients, time_cap, None))
        before = [_batch_stats(s.url) for s in servers]
        for r in range(rounds):
            share = requests // rounds + (1 if r < requests % rounds else 0)
            for server, result in zip(servers, results):
                part = LoadResult(result.label, result.server_args)
                asyncio.run(drive_http(server.url, model, bitstreams, clients, share, time_cap / rounds, part))
                result.add(part)
        for server, result, (b0, i0) in zip(servers, results, before):
            b1, i1 = _batch_stats(server.url)
            result.batches, result.batched_images = b1 - b0, i1 - i0
    finally:
        for server in servers:
            server.stop()
        logs.cleanup()
    return results


async def drive_grpc_stream(
    target: str, model: str, bitstreams: list[bytes], clients: int, requests: int, time_cap: float, result: LoadResult | None
) -> None:
    """Like :func:`drive_http` over gRPC: ``clients`` workers, each with its own channel and one
    ``ModelStreamInfer`` stream, sending one single-image request at a time (asking for ``top``)."""
    import grpc

    from codec import kserve_grpc as pb
    from runtime_edge.transport.grpc import build_request

    method = pb.METHODS["ModelStreamInfer"]
    counter = iter(range(requests))
    start = time.perf_counter()
    stop_at = start + time_cap

    async def worker() -> None:
        async with grpc.aio.insecure_channel(target, options=[("grpc.http2.bdp_probe", 0)]) as channel:
            call = channel.stream_stream(
                method.path, request_serializer=method.request.SerializeToString, response_deserializer=method.response.FromString
            )()
            try:
                for i in counter:
                    if time.perf_counter() >= stop_at:
                        return
                    t0 = time.perf_counter()
                    closed = False
                    try:
                        await call.write(build_request(model, "", [bitstreams[i % len(bitstreams)]], None, [LABEL_INDEX_OUTPUT]))
                        answer = await asyncio.wait_for(call.read(), 60)
                        closed = answer is grpc.aio.EOF
                        error = f"stream closed: {(await call.code()).name}" if closed else answer.error_message
                    except (grpc.RpcError, asyncio.TimeoutError, asyncio.InvalidStateError) as exc:
                        closed = not isinstance(exc, asyncio.TimeoutError)
                        error = type(exc).__name__
                    if result is not None:
                        result.record(error[:80] if error else error, t0)
                    if closed:  # the stream is over: this worker stops, the others take the remaining requests
                        return
            finally:
                if not call.done():
                    await call.done_writing()

    await asyncio.gather(*(worker() for _ in range(clients)))
    if result is not None:
        result.seconds = time.perf_counter() - start


def run_transports(
    artifacts: Path,
    model: str,
    server_args: list[str],
    bitstreams: list[bytes],
    clients: int,
    requests: int,
    time_cap: float,
    rounds: int = 4,
) -> list[LoadResult]:
    """One serve.py with ``--grpc-port``, loaded by ``clients`` concurrent HTTP clients and, in alternating
    rounds, by as many gRPC stream clients (single-image requests, labels only); a warm-up of ``2 * clients``
    requests each is not counted. Returns ``[HTTP, gRPC stream]``."""
    grpc_port = free_port()
    http = LoadResult("HTTP/1.1 keep-alive", server_args)
    stream = LoadResult("gRPC stream", server_args)
    logs = tempfile.TemporaryDirectory(prefix="mantis-loadgen-")
    try:
        with ServerProcess(artifacts, Path(logs.name) / "serve.log", [*server_args, "--grpc-port", str(grpc_port)]) as server:
            target = f"{LOOPBACK}:{grpc_port}"
            asyncio.run(drive_http(server.url, model, bitstreams, clients, 2 * clients, time_cap, None, small=True))
            asyncio.run(drive_grpc_stream(target, model, bitstreams, clients, 2 * clients, time_cap, None))
            for r in range(rounds):
                share = requests // rounds + (1 if r < requests % rounds else 0)
                for result, drive in (
                    (http, lambda p, n=share: drive_http(server.url, model, bitstreams, clients, n, time_cap / rounds, p, small=True)),
                    (stream, lambda p, n=share: drive_grpc_stream(target, model, bitstreams, clients, n, time_cap / rounds, p)),
                ):
                    part = LoadResult(result.label, server_args)
                    asyncio.run(drive(part))
                    result.add(part)
    finally:
        logs.cleanup()
    return [http, stream]
