"""Bytes on the wire, measured: a byte-counting TCP proxy on loopback between the edge runtime's clients
and serve.py, and the per-image accounting of every transport.

    with ByteCountingProxy(("127.0.0.1", server_port)) as proxy:
        ... a client talks to proxy.port ...
        up, down = proxy.totals()

The proxy counts what ``recv`` returns on each side of every connection it relays: the bytes that cross the
socket (HTTP headers, HTTP/2 frames, WebSocket frames, handshakes and connection set-up included; TCP/IP
headers are below the socket and not counted). :func:`measure_transports` sends the same payloads through
each transport's client, one configuration after another, and divides each direction by the images sent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from codec.wire import LABEL_INDEX_OUTPUT
from runtime_edge.transport import Transport, TransportError, connect
from runtime_edge.transport.grpc import GrpcClient
from runtime_server.process import LOOPBACK

BUFFER = 65536


class ByteCountingProxy:
    """A TCP relay on 127.0.0.1 (a free port) to ``target``, counting bytes each way, on its own thread."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.up = 0
        self.down = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._active: set[asyncio.Task] = set()

    def _add(self, up: int, down: int) -> None:
        with self._lock:
            self.up += up
            self.down += down

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        try:
            while data := await reader.read(BUFFER):
                self._add(len(data), 0) if upstream else self._add(0, len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except RuntimeError:
                pass

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._active.add(task)
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                client_writer.close()
                return
            with self._lock:
                self.connections += 1
            await asyncio.gather(self._pipe(client_reader, server_writer, True), self._pipe(server_reader, client_writer, False))
        finally:
            self._active.discard(task)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._relay, LOOPBACK, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        self._server.close()
        for task in list(self._active):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    def start(self) -> "ByteCountingProxy":
        self._thread = threading.Thread(target=self._main, name="mantis-byte-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def reset(self) -> None:
        with self._lock:
            self.up = self.down = self.connections = 0

    def totals(self, settle: float = 0.2) -> tuple[int, int]:
        """``(up, down)`` bytes so far, after ``settle`` seconds for bytes still in flight."""
        time.sleep(settle)
        with self._lock:
            return self.up, self.down

    def __enter__(self) -> "ByteCountingProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class WireRow:
    """One payload set over one transport: bytes per image each way, as counted on the socket."""

    payload: str
    transport: str
    images: int
    payload_bytes: float
    up_bytes: int
    down_bytes: int
    connections: int
    refused: int = 0
    answered: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def up_per_image(self) -> float:
        return self.up_bytes / self.images

    @property
    def down_per_image(self) -> float:
        return self.down_bytes / self.images

    @property
    def up_ratio(self) -> float:
        """Uplink wire bytes over payload bytes (the bitstream, or the image file)."""
        return self.up_per_image / self.payload_bytes

    def summary(self) -> dict:
        return {
            "payload": self.payload,
            "transport": self.transport,
            "images": self.images,
            "payload_bytes": self.payload_bytes,
            "up_per_image": self.up_per_image,
            "down_per_image": self.down_per_image,
            "up_ratio": self.up_ratio,
            "connections": self.connections,
            "answered": self.answered,
            "refused": self.refused,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class TransportConfig:
    """How the client talks: ``scheme`` (``http``, ``grpc``, ``ws``), images per request, gRPC unary or
    stream, and whether it asks only for ``top`` (the small answer) or for every output."""

    label: str
    scheme: str
    batch_size: int = 1
    grpc_stream: bool = True
    small: bool = True


TRANSPORTS = (
    TransportConfig("HTTP, batch 1, every output", "http", 1, small=False),
    TransportConfig("HTTP, batch 1", "http", 1),
    TransportConfig("HTTP, batch 16", "http", 16),
    TransportConfig("gRPC unary", "grpc", 1, grpc_stream=False),
    TransportConfig("gRPC unary, batch 16", "grpc", 16, grpc_stream=False),
    TransportConfig("gRPC stream", "grpc", 1),
    TransportConfig("gRPC stream, batch 16", "grpc", 16),
    TransportConfig("compact stream", "ws", 1),
    TransportConfig("compact stream, batch 16", "ws", 16),
)


def _client(config: TransportConfig, http_port: int, grpc_port: int, label_counts: Sequence[int], timeout: float) -> Transport:
    if config.scheme == "grpc":
        return GrpcClient(f"grpc://{LOOPBACK}:{grpc_port}", timeout=timeout, stream=config.grpc_stream)
    return connect(f"{config.scheme}://{LOOPBACK}:{http_port}", timeout=timeout, label_counts=label_counts)


def measure_transports(
    http_target: tuple[str, int],
    grpc_target: tuple[str, int],
    model: str,
    payloads: dict[str, list[bytes]],
    label_counts: Sequence[int],
    transports: Sequence[TransportConfig] = TRANSPORTS,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
) -> list[WireRow]:
    """Every payload set over every transport, each through a fresh client and connection behind its own
    counting proxy; a refused request (an image file is no bitstream) still counts its bytes."""
    rows = []
    with ByteCountingProxy(http_target) as http_proxy, ByteCountingProxy(grpc_target) as grpc_proxy:
        for name, items in payloads.items():
            mean = sum(map(len, items)) / len(items)
            for config in transports:
                proxy = grpc_proxy if config.scheme == "grpc" else http_proxy
                proxy.reset()
                row = WireRow(name, config.label, len(items), mean, 0, 0, 0)
                with _client(config, http_proxy.port, grpc_proxy.port, label_counts, timeout) as client:
                    for start in range(0, len(items), config.batch_size):
                        chunk = items[start : start + config.batch_size]
                        outputs = [LABEL_INDEX_OUTPUT] if config.small else None
                        try:
                            client.infer(model, chunk, None, outputs)  # top-1: the contract's default
                            row.answered += len(chunk)
                        except TransportError as exc:
                            row.refused += len(chunk)
                            key = type(exc).__name__
                            row.errors[key] = row.errors.get(key, 0) + 1
                row.up_bytes, row.down_bytes = proxy.totals()
                row.connections = proxy.connections
                log(
                    f"{name:<16} {config.label:<28} up {row.up_per_image:8.1f} B/image ({row.up_ratio:5.2f}x payload), "
                    f"down {row.down_per_image:8.1f} B/image, {row.answered} answered, {row.refused} refused"
                )
                rows.append(row)
    return rows
