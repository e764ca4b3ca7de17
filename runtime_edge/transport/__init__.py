"""The edge runtime's transports, one module per protocol over one base, chosen by the server URL's scheme.

| URL | module | protocol |
| --- | --- | --- |
| ``http://HOST:PORT``, ``https://HOST:PORT``, ``HOST:PORT`` | :mod:`~runtime_edge.transport.http` | KServe v2 HTTP/REST, binary tensor data |
| ``grpc://HOST:PORT`` | :mod:`~runtime_edge.transport.grpc` | KServe v2 gRPC; one ``ModelStreamInfer`` stream kept open |
| ``ws://HOST:PORT`` | :mod:`~runtime_edge.transport.stream` | the compact stream (``codec/STREAM.md``) |

:mod:`~runtime_edge.transport.base` holds what they share: the errors, :class:`RetryPolicy`, the response cap
(:data:`DEFAULT_MAX_RESPONSE_BYTES`), :class:`InferResult` and the decoding of output tensors. Every transport
retries failures before an answer and ``unavailable`` with back-off, bounds each request by ``timeout`` seconds
and refuses an answer over ``max_response_bytes`` with :class:`ResponseTooLargeError`. HTTP and the stream need
the standard library only; the gRPC module, which needs grpcio (the ``grpc`` extra), is imported only for a
``grpc://`` URL.
"""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlsplit

from runtime_edge.extras import install_command
from runtime_edge.transport.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    InferResult,
    MalformedResponseError,
    MissingTransportError,
    RefusedError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerRejectedError,
    ServerUnreachableError,
    Transport,
    TransportError,
)
from runtime_edge.transport.http import KServeClient
from runtime_edge.transport.stream import StreamClient

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "SCHEMES",
    "InferResult",
    "MalformedResponseError",
    "MissingTransportError",
    "RefusedError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "ServerRejectedError",
    "ServerUnreachableError",
    "Transport",
    "TransportError",
    "connect",
    "scheme_of",
]

SCHEMES = ("http", "https", "grpc", "ws")
_GRPC_PACKAGES = ("grpc", "grpc_tools", "google")  # grpcio, grpcio-tools and the protobuf they bring


def scheme_of(url: str) -> str:
    """The transport scheme of a server URL; ``HOST:PORT`` alone is ``http``. Unknown scheme: ``ValueError``."""
    scheme = urlsplit(url).scheme if "://" in url else "http"
    if scheme not in SCHEMES:
        raise ValueError(f"server URL {url!r}: unknown scheme {scheme!r}; use one of " + ", ".join(f"{s}://" for s in SCHEMES))
    return scheme


def connect(
    url: str,
    timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    token: str | None = None,
    label_counts: Sequence[int] | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Transport:
    """The transport for ``url``'s scheme, every one with the same ``timeout``, ``retry``, ``token`` and
    ``max_response_bytes``. ``label_counts`` (labels per task, from the bundle) is needed by the compact stream,
    whose answers are label indices without lengths. Unknown scheme: ``ValueError``; ``grpc://`` without the
    gRPC packages: :class:`MissingTransportError` naming the install command."""
    scheme = scheme_of(url)
    if scheme in ("http", "https"):
        return KServeClient(url, timeout=timeout, retry=retry, token=token, max_response_bytes=max_response_bytes)
    if scheme == "grpc":
        try:
            from runtime_edge.transport.grpc import GrpcClient
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in _GRPC_PACKAGES:
                raise
            raise MissingTransportError(
                f"server URL {url}: grpc:// needs the gRPC transport's packages (grpcio, grpcio-tools), which are not installed"
                f" ({exc}): {install_command('grpc')}; http:// and ws:// need nothing more"
            ) from None
        return GrpcClient(url, timeout=timeout, retry=retry, token=token, max_response_bytes=max_response_bytes)
    if label_counts is None:
        raise ValueError("the compact stream (ws://) needs the model's label counts per task (from its bundle)")
    return StreamClient(url, label_counts, timeout=timeout, retry=retry, token=token, max_response_bytes=max_response_bytes)
