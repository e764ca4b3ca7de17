"""What every edge transport shares: its errors, its retry policy, its response cap, the result it returns and
the decoding of an output tensor from the bytes that arrived.

The protocol modules (:mod:`~runtime_edge.transport.http`, :mod:`~runtime_edge.transport.grpc`,
:mod:`~runtime_edge.transport.stream`) import this module and nothing of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from codec.wire import DATATYPES, ErrorKind, WireFormatError, unpack_bytes

DEFAULT_MAX_RESPONSE_BYTES = 64 << 20
"""Largest answer a client reads, on every transport (over HTTP the headers count too): far above any
inference answer (serve.py takes up to 256 images a request; with ``--scores`` each image's answer holds
every task's logits, 4 KB for 1,000 labels), far below what would strain a device's memory."""


class TransportError(RuntimeError):
    """Base class: the bitstream did not get an answer."""


class ServerUnreachableError(TransportError):
    """No answer from the server after all retries (refused, reset, timed out, or unavailable)."""


class ServerRejectedError(TransportError):
    """The server answered with an error status; ``status`` and ``reason`` hold what it said."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        self.url = url
        self.status = status
        self.reason = printable(reason)
        super().__init__(f"server {url} rejected the request: HTTP {status}: {self.reason}")


class RefusedError(ServerRejectedError):
    """The server refused the request with an error kind of the wire contract; ``status`` is the kind's
    HTTP status, ``kind`` the kind and ``code`` what the protocol itself said (a gRPC code, a stream code)."""

    def __init__(self, url: str, kind: ErrorKind, code: str, reason: str) -> None:
        super().__init__(url, kind.http, reason)
        self.kind = kind
        self.code = code
        self.args = (f"server {url} rejected the request: {code} ({kind.name}): {self.reason}",)


class MalformedResponseError(TransportError):
    """The server's answer does not fit the protocol."""


class ResponseTooLargeError(MalformedResponseError):
    """The server's answer is larger than the client reads (``max_response_bytes``); nothing past the cap was read."""

    def __init__(self, url: str, cap: int, detail: str = "") -> None:
        self.url = url
        self.cap = cap
        said = f" ({detail})" if detail else ""
        super().__init__(f"server {url}: the answer is larger than the {cap} bytes this client reads (max_response_bytes){said}")


class MissingTransportError(ImportError):
    """A transport's packages are not installed; the message names the install command."""


def printable(text: str, limit: int = 300) -> str:
    """``text`` with every unprintable character escaped (no terminal control sequence survives) and cut
    to ``limit`` characters."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 3] + "..."


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


class Transport(Protocol):
    """What the edge runtime needs from a transport."""

    url: str
    max_response_bytes: int

    def infer(
        self, model: str, bitstreams: Sequence[bytes], parameters: dict[str, Any] | None = None, outputs: Sequence[str] | None = None
    ) -> InferResult:
        """Send ``bitstreams`` as one request; ``outputs`` names the outputs wanted (None: all)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> "Transport": ...

    def __exit__(self, *exc: object) -> None: ...


def decode_output(spec: dict, binary: bytes | None) -> np.ndarray:
    """One output (``spec``: its ``name``, ``datatype``, ``shape`` and, without ``binary``, its JSON ``data``)
    as a numpy array; BYTES as an object array. Nothing is allocated from the declared shape, only from the
    data that arrived, so a hostile header cannot make the client allocate more than it received."""
    name = printable(str(spec.get("name")), 80)
    datatype = spec.get("datatype")
    shape = spec.get("shape", [])
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MalformedResponseError(f"output {name!r}: 'shape' is not a list of non-negative integers")
    count = 1
    for d in shape:
        count *= d  # exact (Python integers): compared with what arrived, never allocated
    data = spec.get("data", [])
    if binary is None and not isinstance(data, list):
        raise MalformedResponseError(f"output {name!r}: 'data' is not a list")
    if datatype == "BYTES":
        if binary is not None:
            try:
                elems = unpack_bytes(binary, count, f"output {name!r}")
            except WireFormatError as exc:
                raise MalformedResponseError(str(exc)) from None
        else:
            if not all(isinstance(e, str) for e in data):
                raise MalformedResponseError(f"output {name!r}: BYTES elements in JSON must be strings")
            elems = [e.encode("utf-8", errors="surrogatepass") for e in data]
        arr = np.empty(len(elems), dtype=object)
        arr[:] = elems
    elif isinstance(datatype, str) and datatype in DATATYPES:
        dtype = DATATYPES[datatype]
        if binary is not None:
            if len(binary) != count * dtype.itemsize:
                raise MalformedResponseError(f"output {name!r}: {len(binary)} bytes for shape {shape} of {datatype}")
            arr = np.frombuffer(binary, dtype=dtype).copy()
        else:
            try:
                arr = np.asarray(data, dtype=dtype)
            except (ValueError, TypeError, OverflowError) as exc:
                raise MalformedResponseError(f"output {name!r}: data is not {datatype} ({printable(str(exc), 80)})") from None
    else:
        raise MalformedResponseError(f"output {name!r}: unsupported datatype {printable(str(datatype), 40)!r}")
    if arr.size != count:
        raise MalformedResponseError(f"output {name!r}: {arr.size} values for shape {printable(str(shape), 80)}")
    try:
        return arr.reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise MalformedResponseError(f"output {name!r}: shape {printable(str(shape), 80)} is not usable ({exc})") from None
