"""The edge runtime's compact-stream client (``ws://HOST:PORT``; ``codec/STREAM.md``).

A minimal RFC 6455 WebSocket client on the standard library (a device installs nothing for it): one
connection per model, kept open; each request is one masked binary frame, each answer one binary frame
with the request's id. Failures before an answer (refused, reset, closed connection) and ``unavailable``
refusals are retried with back-off on a new connection; every other refusal is final
(:class:`~runtime_edge.transport.base.RefusedError`). Each request waits at most ``timeout`` seconds, and an
answer frame or handshake over ``max_response_bytes`` is refused before it is read
(:class:`~runtime_edge.transport.base.ResponseTooLargeError`).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import os
import re
import socket
import struct
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import numpy as np

from codec.stream import StreamFormatError, decode_answer, encode_request
from codec.wire import (
    AUTH_HEADER,
    LABEL_INDEX_INACTIVE,
    LABEL_INDEX_OUTPUT,
    STREAM_PATH,
    TOP_K_DEFAULT,
    TOP_K_PARAMETER,
    bearer,
    kind_for_status,
)
from runtime_edge.transport.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    InferResult,
    MalformedResponseError,
    RefusedError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerUnreachableError,
    printable,
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's handshake constant
_BINARY, _CLOSE, _PING, _PONG = 0x2, 0x8, 0x9, 0xA


class _Lost(Exception):
    """The connection ended or broke before the answer came."""


def frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame (RFC 6455 section 5.2)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    data = np.frombuffer(payload, dtype=np.uint8) ^ np.resize(np.frombuffer(mask, dtype=np.uint8), n)
    return head + mask + data.tobytes()


_HEAD, _, _TAIL = STREAM_PATH.partition("{model}")
_ROUTE = re.compile(re.escape(_HEAD) + "([^/]+)(?:/versions/[^/]+)?" + re.escape(_TAIL) + "/?$")


def stream_route(path: str) -> tuple[str, str | None]:
    """A ``ws://`` URL's path as ``(prefix, model)``: when it ends in a model's stream route
    (``/v2/models/M/stream``, as codec/STREAM.md documents it, or ``/v2/models/M/versions/V/stream``) the route is
    used as it is and ``model`` is ``M``; any other path is a prefix put in front of the route (a server behind a
    reverse proxy) and ``model`` is None."""
    if (found := _ROUTE.search(path)) is not None:
        return path.rstrip("/"), found.group(1)
    return path.rstrip("/"), None


class StreamClient:
    """Compact-stream client for one server; ``label_counts`` are the model's labels per task.

    ``url`` is ``ws://HOST:PORT``; the stream's route for a model (``ws://HOST:PORT/v2/models/M/stream``) is
    accepted too, and then requests for another model than ``M`` are a ``ValueError``."""

    def __init__(
        self,
        url: str,
        label_counts: Sequence[int],
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        token: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"server URL {url!r}: expected ws://HOST:PORT")
        self.url = f"ws://{parts.netloc}"
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix, self.route_model = stream_route(parts.path)
        self.label_counts = list(label_counts)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.token = token
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._sock: socket.socket | None = None
        self._model: str | None = None
        self._buf = b""
        self._ids = itertools.count(1)

    # -- bytes on the socket ----------------------------------------------------------------------------
    def _fill(self, deadline: float, want: int = 65536) -> None:
        """One ``recv`` (of up to ``want`` bytes) onto the buffer, within the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self._sock.settimeout(left)
        chunk = self._sock.recv(max(65536, want))
        if not chunk:
            raise _Lost("the server closed the connection")
        self._buf += chunk

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self._fill(deadline, n - len(self._buf))
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _handshake(self, model: str, deadline: float) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        path = self._prefix if self.route_model is not None else self._prefix + STREAM_PATH.replace("{model}", model)
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {self._host}:{self._port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.token:
            lines.append(f"{AUTH_HEADER}: {bearer(self.token)}")
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > self.max_response_bytes:
                raise ResponseTooLargeError(self.url, self.max_response_bytes, "the handshake's answer")
            self._fill(deadline)
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        try:
            status = int(status_line.split()[1])
        except (IndexError, ValueError):
            raise MalformedResponseError(f"server {self.url}: not an HTTP answer ({status_line[:80]!r})") from None
        if status != 101:
            length = int(headers.get("content-length", "0") or 0)
            if length > self.max_response_bytes:
                raise ResponseTooLargeError(self.url, self.max_response_bytes, f"a refusal of {length} bytes")
            body = self._read(length, deadline) if length else b""
            try:
                reason = str(json.loads(body)["error"])
            except (ValueError, KeyError, TypeError):
                reason = body.decode("utf-8", errors="replace") or http.client.responses.get(status, "")
            kind = kind_for_status(status)
            if kind is None:
                raise MalformedResponseError(f"server {self.url}: HTTP {status} to the stream handshake: {printable(reason)}")
            raise RefusedError(self.url, kind, f"HTTP {status}", reason)
        expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise MalformedResponseError(f"server {self.url}: wrong Sec-WebSocket-Accept in the handshake")

    def _connect(self, model: str, deadline: float) -> None:
        self.close()
        self._sock = socket.create_connection((self._host, self._port), timeout=max(0.001, deadline - time.monotonic()))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        try:
            self._handshake(model, deadline)
        except BaseException:
            self.close()
            raise
        self._model = model

    def _receive(self, deadline: float) -> bytes:
        """The next binary message (answering pings, skipping pongs)."""
        while True:
            b0, b1 = self._read(2, deadline)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if b1 & 0x80 or not b0 & 0x80:
                raise MalformedResponseError(f"server {self.url}: masked or fragmented frame (the compact stream sends neither)")
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2, deadline))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8, deadline))
            if n > self.max_response_bytes:
                raise ResponseTooLargeError(self.url, self.max_response_bytes, f"a frame of {n} bytes")
            payload = self._read(n, deadline)
            if opcode == _BINARY:
                return payload
            if opcode == _PING:
                self._sock.sendall(frame(_PONG, payload))
            elif opcode == _CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                raise _Lost(f"the server closed the stream (code {code}: {payload[2:].decode('utf-8', errors='replace')})")
            elif opcode != _PONG:
                raise MalformedResponseError(f"server {self.url}: unexpected frame opcode {opcode:#x}")

    # -- the interface ----------------------------------------------------------------------------------
    def infer(
        self, model: str, bitstreams: Sequence[bytes], parameters: dict[str, Any] | None = None, outputs: Sequence[str] | None = None
    ) -> InferResult:
        """Send the bitstreams as one request message; the answer as the ``top`` output."""
        if outputs is not None and list(outputs) != [LABEL_INDEX_OUTPUT]:
            raise ValueError(f"the compact stream answers {LABEL_INDEX_OUTPUT!r} only, not {list(outputs)}")
        unknown = set(parameters or {}) - {TOP_K_PARAMETER}
        if unknown:
            raise ValueError(f"the compact stream takes no parameters but {TOP_K_PARAMETER!r}, got {sorted(unknown)}")
        if self.route_model is not None and model != self.route_model:
            base = self.url + self._prefix[: _ROUTE.search(self._prefix).start()]
            raise ValueError(
                f"server URL {self.url}{self._prefix} is model {self.route_model!r}'s stream, the request is for model"
                f" {model!r}: give {base} (the client adds each model's route) or model {model!r}'s route"
            )
        top_k = int((parameters or {}).get(TOP_K_PARAMETER, TOP_K_DEFAULT))
        request_id = next(self._ids)
        message = encode_request(request_id, bitstreams, top_k)
        start = time.perf_counter()
        last = ""
        for attempt in range(self.retry.retries + 1):
            if attempt:
                self._sleep(self.retry.delay(attempt - 1))
            deadline = time.monotonic() + self.timeout
            try:
                if self._sock is None or self._model != model:
                    self._connect(model, deadline)
                self._sock.sendall(frame(_BINARY, message))
                while True:
                    data = self._receive(deadline)
                    answer = decode_answer(data, len(bitstreams), top_k, self.label_counts)
                    if answer.id == request_id:
                        break
            except RefusedError as exc:
                if exc.kind.name != "unavailable":
                    raise
                last = str(exc)
                continue
            except (socket.timeout, TimeoutError):
                self.close()
                raise ServerUnreachableError(f"server {self.url}: no answer within {self.timeout:g} s") from None
            except socket.gaierror as exc:
                raise ServerUnreachableError(f"server {self.url}: cannot resolve host {self._host!r} ({exc})") from None
            except StreamFormatError as exc:
                self.close()
                raise MalformedResponseError(f"server {self.url}: malformed answer: {exc}") from None
            except MalformedResponseError:
                self.close()  # the rest of the answer is unread: the connection cannot carry another request
                raise
            except (_Lost, OSError) as exc:
                self.close()
                last = f"{type(exc).__name__}: {exc}"
                continue
            if answer.error is not None:
                if answer.error.name == "unavailable":
                    last = f"unavailable: {answer.message}"
                    continue
                raise RefusedError(self.url, answer.error, f"stream status {answer.error.stream}", answer.message)
            return InferResult(
                outputs={LABEL_INDEX_OUTPUT: self._label_index(answer.labels, top_k)},
                request_bytes=len(message),
                response_bytes=len(data),
                elapsed_ms=(time.perf_counter() - start) * 1000.0,
                attempts=attempt + 1,
                model_name=model,
            )
        raise ServerUnreachableError(f"server {self.url} unreachable after {self.retry.retries + 1} attempts: {last}")

    def _label_index(self, labels: list[dict[int, list[int]]], top_k: int) -> np.ndarray:
        k = min(top_k, max(self.label_counts))
        out = np.full((len(labels), len(self.label_counts), k), LABEL_INDEX_INACTIVE, dtype=np.int32)
        for i, image in enumerate(labels):
            for t, ids in image.items():
                out[i, t, : len(ids)] = ids
        return out

    def close(self) -> None:
        """Close the connection; an open WebSocket first gets a close frame (none after a refused handshake:
        the connection then still speaks HTTP, and a frame would reach the server as a malformed request)."""
        if self._sock is not None:
            if self._model is not None:
                try:
                    self._sock.sendall(frame(_CLOSE, struct.pack(">H", 1000)))
                except OSError:
                    pass
            self._sock.close()
            self._sock = None
            self._model = None

    def __enter__(self) -> "StreamClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
