"""One small interface over the edge runtime's transports, chosen by the server URL's scheme.

| scheme | module | protocol |
| --- | --- | --- |
| ``http://``, ``https://`` | :mod:`runtime_edge.transport` | KServe v2 HTTP/REST, binary tensor data |
| ``grpc://`` | :mod:`runtime_edge.grpc_transport` | KServe v2 gRPC; one ``ModelStreamInfer`` stream kept open |
| ``ws://`` | :mod:`runtime_edge.stream_transport` | the compact stream (``codec/STREAM.md``) |

Every transport retries failures before an answer and ``unavailable`` with back-off (:class:`RetryPolicy`),
bounds each request by ``timeout`` seconds and each answer by ``max_response_bytes``, and raises the
errors of :mod:`runtime_edge.transport`. The gRPC and stream modules are imported only when their scheme
is used, so an HTTP-only device needs neither grpcio nor protobuf.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence
from urllib.parse import urlsplit

from codec.wire import ErrorKind
from runtime_edge.transport import InferResult, KServeClient, RetryPolicy, ServerRejectedError

SCHEMES = ("http", "https", "grpc", "ws")
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20


class Transport(Protocol):
    """What the edge runtime needs from a transport."""

    url: str

    def infer(
        self, model: str, bitstreams: Sequence[bytes], parameters: dict[str, Any] | None = None, outputs: Sequence[str] | None = None
    ) -> InferResult:
        """Send ``bitstreams`` as one request; ``outputs`` names the outputs wanted (None: all)."""
        ...

    def close(self) -> None:
        ...

    def __enter__(self) -> "Transport":
        ...

    def __exit__(self, *exc: object) -> None:
        ...


class RefusedError(ServerRejectedError):
    """The server refused the request with an error kind of the wire contract; ``status`` is the kind's
    HTTP status, ``kind`` the kind and ``code`` what the protocol itself said (a gRPC code, a stream code)."""

    def __init__(self, url: str, kind: ErrorKind, code: str, reason: str) -> None:
        super().__init__(url, kind.http, reason)
        self.kind = kind
        self.code = code
        self.args = (f"server {url} rejected the request: {code} ({kind.name}): {reason}",)


def connect(
    url: str,
    timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    token: str | None = None,
    label_counts: Sequence[int] | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Transport:
    """The transport for ``url``'s scheme. ``label_counts`` (labels per task, from the bundle) is needed by
    the compact stream, whose answers are label indices without lengths. Unknown scheme: ``ValueError``."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("", "http", "https"):  # HOST:PORT alone means HTTP, as it always has
        return KServeClient(url, timeout=timeout, retry=retry, token=token)
    if scheme == "grpc":
        from runtime_edge.grpc_transport import GrpcClient

        return GrpcClient(url, timeout=timeout, retry=retry, token=token, max_response_bytes=max_response_bytes)
    if scheme == "ws":
        from runtime_edge.stream_transport import StreamClient

        if label_counts is None:
            raise ValueError("the compact stream (ws://) needs the model's label counts per task (from its bundle)")
        return StreamClient(url, label_counts, timeout=timeout, retry=retry, token=token, max_response_bytes=max_response_bytes)
    raise ValueError(f"server URL {url!r}: unknown scheme {scheme or '(none)'!r}; use one of " + ", ".join(f"{s}://" for s in SCHEMES))
