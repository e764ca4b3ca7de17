"""The edge runtime's KServe v2 HTTP client (``http://HOST:PORT``, ``https://HOST:PORT``).

Standard library only (``http.client``), so a device installs nothing for it. Requests use the binary
tensor data extension: the JSON inference header is followed by the raw tensor bytes, its length in the
``Inference-Header-Content-Length`` header. The bitstreams travel as one ``BYTES`` tensor named
``bitstream`` with one element per image (each element: 4-byte little-endian length, then the bytes).

Inference is a pure function of the request, so a request that failed before the server answered
(connection refused or reset, 503 Service Unavailable) is retried with exponential back-off; any other
answer is final. Errors name the server and quote the reason it gave, with anything unprintable escaped
(a server's words never reach a terminal raw).

Whatever the server does, a request ends by its deadline: ``timeout`` bounds the whole request (connecting,
sending, every byte of the answer, retries and back-off), not each socket read, so a server that drips
bytes, floods ``100 Continue`` or stalls mid-answer is cut off on time. The answer is capped at
``max_response_bytes`` (headers included), read no further than that
(:class:`~runtime_edge.transport.base.ResponseTooLargeError`).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import numpy as np

from codec.wire import AUTH_HEADER, BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, BITSTREAM_INPUT, HEADER_LENGTH, bearer, pack_bytes
from runtime_edge.transport.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    InferResult,
    MalformedResponseError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerRejectedError,
    ServerUnreachableError,
    decode_output,
    printable,
)


def build_infer_request(
    bitstreams: Sequence[bytes],
    parameters: dict[str, Any] | None = None,
    binary_output: bool = True,
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


def parse_infer_response(body: bytes, header_length: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """Split a response into its JSON header and its outputs as numpy arrays (BYTES as object arrays);
    :class:`MalformedResponseError` for anything that does not fit the protocol."""
    json_len = len(body) if header_length is None else header_length
    if not 0 <= json_len <= len(body):
        raise MalformedResponseError(f"inference header length {json_len} does not fit the body ({len(body)} bytes)")
    try:
        header = json.loads(body[:json_len])
    except RecursionError:
        raise MalformedResponseError("response header is not JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer over Python's digit limit
        raise MalformedResponseError(f"response header is not JSON ({printable(str(exc), 120)})") from None
    if not isinstance(header, dict) or not isinstance(header.get("outputs"), list):
        raise MalformedResponseError("response has no 'outputs' list")
    outputs: dict[str, np.ndarray] = {}
    pos = json_len
    for spec in header["outputs"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise MalformedResponseError("response output is not an object with a 'name' string")
        params = spec.get("parameters") or {}
        size = params.get(BINARY_DATA_SIZE) if isinstance(params, dict) else None
        binary = None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise MalformedResponseError(f"output {printable(spec['name'], 80)!r}: 'binary_data_size' is not a non-negative integer")
            binary = body[pos : pos + size]
            if len(binary) != size:
                raise MalformedResponseError(f"output {printable(spec['name'], 80)!r}: binary data truncated")
            pos += size
        outputs[spec["name"]] = decode_output(spec, binary)
    return header, outputs


def _error_reason(body: bytes) -> str:
    """The ``error`` field of a KServe error body, else the body text (printable, shortened)."""
    text = body[:4096].decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return printable(text) or "(empty body)"
    if isinstance(doc, dict) and "error" in doc:
        return printable(str(doc["error"]))
    return printable(text)


class _Budget:
    """What one request may still spend: time until ``deadline`` (``time.monotonic``) and response bytes."""

    def __init__(self, url: str, deadline: float, max_bytes: int) -> None:
        self.url = url
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.received = 0

    def remaining(self) -> float:
        """Seconds left; ``TimeoutError`` once the deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's deadline passed")
        return left


class _BudgetReader(io.RawIOBase):
    """A socket's receiving side that stops at the request's deadline and at its byte cap."""

    def __init__(self, owner: "_BudgetSocket", budget: _Budget) -> None:
        super().__init__()
        self._owner = owner
        self._sock = owner.raw
        self._budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        budget = self._budget
        room = budget.max_bytes - budget.received
        if room <= 0:
            raise ResponseTooLargeError(budget.url, budget.max_bytes)
        self._sock.settimeout(budget.remaining())
        n = self._sock.recv_into(buffer, min(len(buffer), room))
        budget.received += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._owner.reader_closed()
        super().close()


class _BudgetSocket:
    """The socket as ``http.client`` sees it: sending and every read bounded by the current request's budget.
    Like a socket's own ``makefile``, a reader keeps the socket open until it is closed too (``http.client``
    closes the connection as soon as it has an answer's headers when the server will close)."""

    def __init__(self, sock: socket.socket, conn: "_Budgeted") -> None:
        self.raw = sock
        self._conn = conn
        self._readers = 0
        self._closing = False

    def sendall(self, data: bytes) -> None:
        self.raw.settimeout(self._conn.budget.remaining())
        self.raw.sendall(data)

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_BudgetReader(self, self._conn.budget))

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closing and not self._readers:
            self.raw.close()

    def close(self) -> None:
        self._closing = True
        if not self._readers:
            self.raw.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.raw, name)


class _Budgeted:
    """Mixin for ``http.client`` connections: every request runs on ``budget``, set before it is sent."""

    budget = _Budget("", 0.0, 0)
    timeout: float | None
    sock: object

    def connect(self) -> None:
        self.timeout = self.budget.remaining()
        super().connect()  # type: ignore[misc]
        self.sock = _BudgetSocket(self.sock, self)  # type: ignore[arg-type]


class _Connection(_Budgeted, http.client.HTTPConnection):
    pass


class _TLSConnection(_Budgeted, http.client.HTTPSConnection):
    pass


class KServeClient:
    """Keep-alive HTTP client for one KServe v2 server.

    ``url`` is ``http://host:port`` (``https`` too). ``timeout`` is each request's deadline, retries
    included; ``retry`` bounds the attempts for failures that happened before any answer;
    ``max_response_bytes`` caps what is read of an answer. ``token`` is sent as
    ``Authorization: Bearer <token>``. Redirects are not followed (reported with their target).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        token: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 s, got {timeout}")
        if max_response_bytes < 1024:
            raise ValueError(f"max_response_bytes must be >= 1024, got {max_response_bytes}")
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
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._conn: _Connection | _TLSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "KServeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self, budget: _Budget) -> _Connection | _TLSConnection:
        if self._conn is None:
            cls = _TLSConnection if self._scheme == "https" else _Connection
            self._conn = cls(self._host, self._port)
        self._conn.budget = budget
        return self._conn

    def _once(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], budget: _Budget
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self._connection(budget)
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            if resp.length is not None and resp.length > budget.max_bytes - budget.received:
                raise ResponseTooLargeError(self.url, budget.max_bytes, f"it announces {resp.length} bytes")
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes, int]:
        """Send one request with retries, all within ``timeout`` seconds; returns ``(status, headers, body,
        attempts)``.

        Raises ``ServerUnreachableError`` when the deadline passed or every attempt failed before an answer
        (or got 503), ``MalformedResponseError`` for an answer that is not HTTP or is too large.
        """
        headers = dict(headers or {})
        if self.token:
            headers[AUTH_HEADER] = bearer(self.token)
        deadline = time.monotonic() + self.timeout
        unavailable = ""  # the last 503's reason: what the server said outranks how a later attempt failed
        last = ""
        attempts = 0
        while attempts <= self.retry.retries:
            if attempts:
                delay = self.retry.delay(attempts - 1)
                if time.monotonic() + delay >= deadline:
                    break
                self._sleep(delay)
            attempts += 1
            budget = _Budget(self.url, deadline, self.max_response_bytes)
            reused = self._conn is not None and self._conn.sock is not None
            try:
                try:
                    status, resp_headers, data = self._once(method, path, body, headers, budget)
                except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                    if not (reused and budget.received == 0):
                        raise
                    # The server had closed the kept-alive connection: not an attempt, try a fresh one.
                    status, resp_headers, data = self._once(method, path, body, headers, budget)
            except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
                # also http.client.RemoteDisconnected: a connection the server closed without answering
                last = printable(f"{type(exc).__name__}: {exc}")
                continue
            except http.client.HTTPException as exc:
                raise MalformedResponseError(
                    f"server {self.url}: malformed HTTP answer ({type(exc).__name__}: {printable(str(exc))})"
                ) from None
            except (socket.timeout, TimeoutError):
                said = f" (before that: {unavailable})" if unavailable else ""
                raise ServerUnreachableError(f"server {self.url}: no answer within {self.timeout:g} s{said}") from None
            except socket.gaierror as exc:
                raise ServerUnreachableError(f"server {self.url}: cannot resolve host {self._host!r} ({exc})") from None
            except OSError as exc:
                last = printable(f"{type(exc).__name__}: {exc}")
                continue
            if status == 503:
                unavailable = last = f"HTTP 503: {_error_reason(data)}"
                self.close()  # a server that is going away often closes right after saying so
                continue
            return status, resp_headers, data, attempts
        if not attempts:
            raise ServerUnreachableError(f"server {self.url}: no answer within {self.timeout:g} s")
        reason = last if not unavailable or last == unavailable else f"{unavailable}; then {last}"
        cut = " (the deadline left no time for more)" if attempts <= self.retry.retries else ""
        raise ServerUnreachableError(f"server {self.url} unreachable after {attempts} attempts{cut}: {reason}")

    def _check(self, status: int, headers: dict[str, str], data: bytes) -> None:
        if 300 <= status < 400:
            target = printable(headers.get("location", "(no Location header)"), 200)
            raise ServerRejectedError(self.url, status, f"redirect to {target}; not followed (use the final URL as the server address)")
        if status != 200:
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
        self._check(status, resp_headers, data)
        raw_len = resp_headers.get(HEADER_LENGTH.lower())
        try:
            header_len = int(raw_len) if raw_len is not None else None
        except ValueError:
            raise MalformedResponseError(
                f"server {self.url}: {HEADER_LENGTH} is not an integer ({printable(raw_len or '', 60)!r})"
            ) from None
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
