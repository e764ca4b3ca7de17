"""A small KServe v2 HTTP client for sending bitstreams to ``runtime_server/serve.py``.

Standard library only (``http.client``), so a device installs nothing for it. Requests use the binary
tensor data extension: the JSON inference header is followed by the raw tensor bytes, its length in the
``Inference-Header-Content-Length`` header. The bitstreams travel as one ``BYTES`` tensor named
``bitstream`` with one element per image (each element: 4-byte little-endian length, then the bytes).

Inference is a pure function of the request, so a request that failed before the server answered
(connection refused or reset, 503 Service Unavailable) is retried with exponential back-off; any other
answer is final. Errors name the server and quote the reason it gave.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import numpy as np

from codec.wire import (
    BINARY_DATA_OUTPUT,
    BINARY_DATA_SIZE,
    BITSTREAM_INPUT,
    DATATYPES,
    HEADER_LENGTH,
    AUTH_HEADER,
    WireFormatError,
    bearer,
    pack_bytes,
    unpack_bytes,
)


class TransportError(RuntimeError):
    """Base class: the bitstream did not get an answer."""


class ServerUnreachableError(TransportError):
    """No answer from the server after all retries (refused, reset, timed out, or unavailable)."""


class ServerRejectedError(TransportError):
    """The server answered with an error status; ``status`` and ``reason`` hold what it said."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        super().__init__(f"server {url} rejected the request: HTTP {status}: {reason}")


class MalformedResponseError(TransportError):
    """The server's answer is not a well-formed KServe v2 inference response."""


@dataclass
class RetryPolicy:
    """Exponential back-off: attempt ``i`` (0-based) waits ``min(max_delay, base_delay * 2**i)`` first."""

    retries: int = 3
    base_delay: float = 0.2
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * (2**attempt))


@dataclass
class InferResult:
    """Decoded outputs of one inference response, by output name, plus the sizes that crossed the wire."""

    outputs: dict[str, np.ndarray]
    request_bytes: int
    response_bytes: int
    elapsed_ms: float
    attempts: int
    model_name: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


def build_infer_request(
    bitstreams: Sequence[bytes], parameters: dict[str, Any] | None = None, binary_output: bool = True,
    outputs: Sequence[str] | None = None,
) -> tuple[bytes, int]:
    """Return ``(body, json_header_length)`` for a KServe v2 binary-extension infer request (asking for
    the ``outputs`` named, or for all when None)."""
    payload = pack_bytes(bitstreams)
    header = {
        "inputs": [
            {
                "name": BITSTREAM_INPUT,
                "shape": [len(bitstreams)],
                "datatype": "BYTES",
                "parameters": {BINARY_DATA_SIZE: len(payload)},
            }
        ],
        "parameters": {**(parameters or {}), BINARY_DATA_OUTPUT: binary_output},
    }
    if outputs is not None:
        header["outputs"] = [{"name": name} for name in outputs]
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + payload, len(head)


def _output_array(spec: dict, binary: bytes | None) -> np.ndarray:
    name = spec.get("name", "?")
    datatype = spec.get("datatype")
    shape = [int(d) for d in spec.get("shape", [])]
    count = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        if binary is not None:
            try:
                elems = unpack_bytes(binary, count, f"output {name!r}")
            except WireFormatError as exc:
                raise MalformedResponseError(str(exc)) from None
        else:
            elems = [e.encode() if isinstance(e, str) else bytes(e) for e in spec.get("data", [])]
        arr = np.empty(len(elems), dtype=object)
        arr[:] = elems
    elif datatype in DATATYPES:
        dtype = DATATYPES[datatype]
        if binary is not None:
            if len(binary) != count * dtype.itemsize:
                raise MalformedResponseError(f"output {name!r}: {len(binary)} bytes for shape {shape} of {datatype}")
            arr = np.frombuffer(binary, dtype=dtype).copy()
        else:
            arr = np.asarray(spec.get("data", []), dtype=dtype)
    else:
        raise MalformedResponseError(f"output {name!r}: unsupported datatype {datatype!r}")
    if arr.size != count:
        raise MalformedResponseError(f"output {name!r}: {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def parse_infer_response(body: bytes, header_length: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """Split a response into its JSON header and its outputs as numpy arrays (BYTES as object arrays)."""
    json_len = len(body) if header_length is None else header_length
    if json_len > len(body):
        raise MalformedResponseError(f"inference header length {json_len} exceeds the body ({len(body)} bytes)")
    try:
        header = json.loads(body[:json_len])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedResponseError(f"response header is not JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("outputs"), list):
        raise MalformedResponseError("response has no 'outputs' list")
    outputs: dict[str, np.ndarray] = {}
    pos = json_len
    for spec in header["outputs"]:
        size = (spec.get("parameters") or {}).get(BINARY_DATA_SIZE)
        binary = None
        if size is not None:
            binary = body[pos : pos + int(size)]
            if len(binary) != int(size):
                raise MalformedResponseError(f"output {spec.get('name')!r}: binary data truncated")
            pos += int(size)
        outputs[spec["name"]] = _output_array(spec, binary)
    return header, outputs


def _error_reason(body: bytes) -> str:
    """The ``error`` field of a KServe error body, else the body text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return text or "(empty body)"
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])
    return text


class KServeClient:
    """Keep-alive HTTP client for one KServe v2 server.

    ``url`` is ``http://host:port`` (``https`` too). ``timeout`` bounds connecting and each read;
    ``retry`` bounds the attempts for failures that happened before any answer. ``token`` is sent as
    ``Authorization: Bearer <token>``.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        token: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL {url!r}: expected http://HOST:PORT")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.token = token
        self._sleep = sleep
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "KServeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _once(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        conn = self._connection()
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, int]:
        """Send one request with retries; returns ``(status, headers, body, attempts)``.

        Raises ``ServerUnreachableError`` when every attempt failed before an answer (or got 503).
        """
        headers = dict(headers or {})
        if self.token:
            headers[AUTH_HEADER] = bearer(self.token)
        last = ""
        for attempt in range(self.retry.retries + 1):
            if attempt:
                self._sleep(self.retry.delay(attempt - 1))
            try:
                status, resp_headers, data = self._once(method, path, body, headers)
            except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
                # also http.client.RemoteDisconnected: a kept-alive connection the server had closed
                last = f"{type(exc).__name__}: {exc}"
                continue
            except http.client.HTTPException as exc:
                raise MalformedResponseError(f"server {self.url}: malformed HTTP answer ({type(exc).__name__}: {exc})") from None
            except (socket.timeout, TimeoutError):
                raise ServerUnreachableError(f"server {self.url}: no answer within {self.timeout:g} s") from None
            except socket.gaierror as exc:
                raise ServerUnreachableError(f"server {self.url}: cannot resolve host {self._host!r} ({exc})") from None
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if status == 503:
                last = f"HTTP 503: {_error_reason(data)}"
                continue
            return status, resp_headers, data, attempt + 1
        raise ServerUnreachableError(
            f"server {self.url} unreachable after {self.retry.retries + 1} attempts: {last}"
        )

    def _check(self, status: int, data: bytes) -> None:
        if status >= 400:
            raise ServerRejectedError(self.url, status, _error_reason(data))

    def infer(
        self, model: str, bitstreams: Sequence[bytes], parameters: dict[str, Any] | None = None, outputs: Sequence[str] | None = None
    ) -> InferResult:
        """Send the bitstreams as one request (a batch of ``len(bitstreams)``) and decode the outputs.

        ``parameters`` are request parameters (``{"top_k": 3}`` for serve.py's top-k labels); ``outputs``
        names the outputs wanted (None: every output).
        """
        if not bitstreams:
            raise ValueError("infer needs at least one bitstream")
        body, head_len = build_infer_request(bitstreams, parameters, outputs=outputs)
        headers = {HEADER_LENGTH: str(head_len), "Content-Type": "application/octet-stream"}
        start = time.perf_counter()
        status, resp_headers, data, attempts = self.request("POST", f"/v2/models/{model}/infer", body, headers)
        elapsed = (time.perf_counter() - start) * 1000.0
        self._check(status, data)
        raw_len = resp_headers.get(HEADER_LENGTH.lower())
        try:
            header_len = int(raw_len) if raw_len is not None else None
        except ValueError:
            raise MalformedResponseError(f"server {self.url}: {HEADER_LENGTH} is not an integer ({raw_len!r})") from None
        header, outputs = parse_infer_response(data, header_len)
        return InferResult(
            outputs=outputs,
            request_bytes=len(body),
            response_bytes=len(data),
            elapsed_ms=elapsed,
            attempts=attempts,
            model_name=str(header.get("model_name", "")),
            parameters=header.get("parameters") or {},
        )
