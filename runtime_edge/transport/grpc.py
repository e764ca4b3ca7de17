"""The edge runtime's KServe v2 gRPC client (``grpc://HOST:PORT``).

By default every request goes on one ``ModelStreamInfer`` stream that stays open for the client's life
(one HTTP/2 stream: no per-request headers), with one request in flight at a time, so answers come in
order and requests carry no ``id`` (bytes saved on every message); with
``stream=False`` each request is a unary ``ModelInfer`` call. Bitstreams travel in ``raw_input_contents``,
answers come back in ``raw_output_contents``.

A failure before an answer (connection refused or lost: ``UNAVAILABLE``; a call reset by the server or a
proxy in between, e.g. a load balancer whose replica died: ``CANCELLED`` without an error kind) and an
``unavailable`` refusal are retried with back-off, on a fresh stream; every other refusal is final and raises
:class:`~runtime_edge.transport.base.RefusedError` with the kind. Each request waits at most ``timeout``
seconds (then the stream is dropped, so a late answer cannot be taken for the next one), and an answer
over ``max_response_bytes`` is refused by gRPC on the client before it is read
(:class:`~runtime_edge.transport.base.ResponseTooLargeError`).

This module needs ``grpcio`` and ``grpcio-tools`` (``pip install 'mantis-edge[grpc]'``); :func:`runtime_edge.transport.connect`
imports it only for a ``grpc://`` URL.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import grpc
import numpy as np

from codec.wire import (
    BITSTREAM_INPUT,
    ERROR_KIND_PARAMETER,
    ERRORS,
    GRPC_AUTH_METADATA,
    bearer,
    error_kind,
    pack_bytes,
)
from codec import kserve_grpc as pb
from runtime_edge.transport.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    InferResult,
    MalformedResponseError,
    RefusedError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerUnreachableError,
    TransportError,
    decode_output,
)

_KIND_BY_CODE = {}
for _kind in ERRORS.values():
    _KIND_BY_CODE.setdefault(_kind.grpc, _kind)


def _kind_of(error: grpc.RpcError) -> str | None:
    """The error kind serve.py put in the trailing metadata (None from another server)."""
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_KIND_PARAMETER:
            return value
    return None


def _lost(error: grpc.RpcError) -> bool:
    """Whether the call failed before an answer: the connection is gone (``UNAVAILABLE``) or the call was
    reset from the other side (``CANCELLED`` that names no error kind: a server's refusal names one, and
    this client's own cancellation is never read back). Inference is a pure function: such a call is retried."""
    code = error.code()
    return code == grpc.StatusCode.UNAVAILABLE or (code == grpc.StatusCode.CANCELLED and _kind_of(error) is None)


class _Closed:
    """The stream ended (``error`` None: the server closed it cleanly)."""

    def __init__(self, error: grpc.RpcError | None) -> None:
        self.error = error


def build_request(
    model: str, request_id: str, bitstreams: Sequence[bytes], parameters: dict[str, Any] | None, outputs: Sequence[str] | None
) -> Any:
    """A ``ModelInferRequest`` with the bitstreams as one BYTES tensor in ``raw_input_contents``."""
    msg = pb.ModelInferRequest(model_name=model, id=request_id)
    msg.inputs.add(name=BITSTREAM_INPUT, datatype="BYTES", shape=[len(bitstreams)])
    msg.raw_input_contents.append(pack_bytes(bitstreams))
    for key, value in (parameters or {}).items():
        pb.set_parameter(msg.parameters[key], value)
    for name in outputs or ():
        msg.outputs.add(name=name)
    return msg


def parse_response(response: Any) -> dict[str, np.ndarray]:
    """The outputs of a ``ModelInferResponse`` (raw contents) as numpy arrays."""
    raw = list(response.raw_output_contents)
    if len(raw) != len(response.outputs):
        raise MalformedResponseError(f"answer has {len(raw)} raw_output_contents for {len(response.outputs)} outputs")
    return {
        o.name: decode_output({"name": o.name, "datatype": o.datatype, "shape": list(o.shape)}, data)
        for o, data in zip(response.outputs, raw)
    }


class GrpcClient:
    """KServe v2 gRPC client for one server; ``url`` is ``grpc://HOST:PORT``."""

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        token: str | None = None,
        stream: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "grpc" or not parts.hostname or parts.port is None:
            raise ValueError(f"server URL {url!r}: expected grpc://HOST:PORT")
        self.url = f"grpc://{parts.netloc}"
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.stream = stream
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._metadata = ((GRPC_AUTH_METADATA, bearer(token)),) if token else ()
        options = [("grpc.max_receive_message_length", max_response_bytes), ("grpc.http2.bdp_probe", 0)]
        self._channel = grpc.insecure_channel(parts.netloc, options=options)
        infer, stream_infer = pb.METHODS["ModelInfer"], pb.METHODS["ModelStreamInfer"]
        self._unary = self._channel.unary_unary(
            infer.path, request_serializer=infer.request.SerializeToString, response_deserializer=infer.response.FromString
        )
        self._bidi = self._channel.stream_stream(
            stream_infer.path,
            request_serializer=stream_infer.request.SerializeToString,
            response_deserializer=stream_infer.response.FromString,
        )
        self._call: Any = None
        self._outbox: queue.Queue | None = None
        self._inbox: queue.Queue | None = None

    # -- the stream -------------------------------------------------------------------------------------
    def _open_stream(self) -> None:
        outbox: queue.Queue = queue.Queue()
        inbox: queue.Queue = queue.Queue()

        def requests() -> Any:
            while (item := outbox.get()) is not None:
                yield item

        call = self._bidi(requests(), metadata=self._metadata)

        def read() -> None:
            try:
                for response in call:
                    inbox.put(response)
                inbox.put(_Closed(None))
            except grpc.RpcError as exc:
                inbox.put(_Closed(exc))

        threading.Thread(target=read, name="mantis-grpc-stream", daemon=True).start()
        self._call, self._outbox, self._inbox = call, outbox, inbox

    def _drop_stream(self) -> None:
        if self._call is not None:
            self._outbox.put(None)
            self._call.cancel()
        self._call = self._outbox = self._inbox = None

    def _stream_once(self, msg: Any) -> Any:
        """Send ``msg`` on the stream and wait for its answer (the next one: one request is in flight, and
        a stream whose answer is late is dropped): a ``ModelStreamInferResponse`` or a :class:`_Closed`."""
        if self._call is None:
            self._open_stream()
        self._outbox.put(msg)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._drop_stream()
                raise ServerUnreachableError(f"server {self.url}: no answer within {self.timeout:g} s") from None
            if isinstance(item, _Closed):
                self._call = self._outbox = self._inbox = None
                return item
            return item

    def _refusal(self, code: str, message: str, kind_name: str | None = None) -> TransportError:
        if kind_name is None and code == "RESOURCE_EXHAUSTED":  # serve.py names its refusals: this limit is ours
            return ResponseTooLargeError(self.url, self.max_response_bytes, message)
        kind = error_kind(kind_name) if kind_name in ERRORS else _KIND_BY_CODE.get(code, ERRORS["bad_request"])
        return RefusedError(self.url, kind, code, message)

    # -- the interface ----------------------------------------------------------------------------------
    def infer(
        self, model: str, bitstreams: Sequence[bytes], parameters: dict[str, Any] | None = None, outputs: Sequence[str] | None = None
    ) -> InferResult:
        """Send the bitstreams as one request (on the stream, or as a unary call) and decode the answer."""
        if not bitstreams:
            raise ValueError("infer needs at least one bitstream")
        msg = build_request(model, "", bitstreams, parameters, outputs)
        start = time.perf_counter()
        last = ""
        for attempt in range(self.retry.retries + 1):
            if attempt:
                self._sleep(self.retry.delay(attempt - 1))
            if self.stream:
                item = self._stream_once(msg)
                if isinstance(item, _Closed):
                    error = item.error
                    code = error.code().name if error is not None else "OK"
                    if error is None or _lost(error):
                        last = f"stream closed ({code}: {error.details() if error is not None else 'by the server'})"
                        continue
                    raise self._refusal(code, error.details() or "", _kind_of(error))
                if item.error_message:
                    kind = item.infer_response.parameters[ERROR_KIND_PARAMETER].string_param
                    if kind == "unavailable":
                        last = f"unavailable: {item.error_message}"
                        continue
                    raise self._refusal(ERRORS[kind].grpc if kind in ERRORS else "UNKNOWN", item.error_message, kind)
                response = item.infer_response
            else:
                try:
                    response = self._unary(msg, timeout=self.timeout, metadata=self._metadata)
                except grpc.RpcError as exc:
                    if _lost(exc):
                        last = f"{exc.code().name}: {exc.details()}"
                        continue
                    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise ServerUnreachableError(f"server {self.url}: no answer within {self.timeout:g} s") from None
                    raise self._refusal(exc.code().name, exc.details() or "", _kind_of(exc)) from None
            return InferResult(
                outputs=parse_response(response),
                request_bytes=msg.ByteSize(),
                response_bytes=response.ByteSize(),
                elapsed_ms=(time.perf_counter() - start) * 1000.0,
                attempts=attempt + 1,
                model_name=response.model_name,
                parameters={k: pb.parameter_value(v) for k, v in response.parameters.items()},
            )
        raise ServerUnreachableError(f"server {self.url} unreachable after {self.retry.retries + 1} attempts: {last}")

    def close(self) -> None:
        self._drop_stream()
        self._channel.close()

    def __enter__(self) -> "GrpcClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
