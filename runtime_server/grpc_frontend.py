"""The gRPC frontend: KServe v2 gRPC (``inference.GRPCInferenceService``, ``codec/kserve_grpc.proto``) as a
thin adapter over the data plane (``runtime_server/dataplane.py``).

It runs on grpc.aio in the server's event loop and shares everything with the HTTP frontend through the
plane: the model (``MantisModel.infer`` validates, decodes and batches), the batcher, the readiness flag, the
bearer token (gRPC metadata ``authorization: Bearer <token>``; ServerLive and ServerReady stay open like
the HTTP probes), the limits (a message over the HTTP body limit is refused by gRPC itself with
RESOURCE_EXHAUSTED before any work; the image count by the model) and the Prometheus metrics. A refusal
ends a unary call with the gRPC code of its error kind (``codec.wire``) and the kind in the trailing
metadata ``error_kind``. The HTTP port's deadlines hold here too: a unary call's request message must be
complete within the body deadline of its headers (the unary methods are registered as stream-unary, the
same bytes on the wire, so that the handler runs when the headers arrive), a stream must not idle. On ``ModelStreamInfer`` a
refusal is an answer, as in Triton: ``error_message`` is set and ``infer_response`` carries the request's
id and the kind (parameter ``error_kind``); the stream goes on.

    frontend = GrpcFrontend(plane, "127.0.0.1", 8001)   # before the server starts; serves while it runs
"""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any, Awaitable, Callable

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from codec.wire import (
    DATATYPES,
    ERROR_KIND_PARAMETER,
    GRPC_AUTH_METADATA,
    GRPC_SERVICE,
    ProtocolError,
    WireFormatError,
    bearer,
    unpack_bytes,
)
from codec import kserve_grpc as pb
from runtime_server.client_budget import peer_address
from runtime_server.dataplane import DataPlane
from runtime_server.idle_reader import IdleReader, finish_answers
from runtime_server.model import VERSION
from runtime_server.protocol import ECHO_LIMIT, MAX_RANK, InferRequest, InputTensor, OutputTensor, RequestedOutput, binary_data, echo

MAX_IN_FLIGHT_PER_STREAM = 64
"""Requests of one stream being answered at once; the stream is not read further until one is done."""
MAX_CONCURRENT_STREAMS = 100
"""Calls one gRPC connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)."""
_END = object()
_HOW_TO_AUTHENTICATE_GRPC = f"metadata '{GRPC_AUTH_METADATA}: {bearer('<token>')}'"


async def _next_message(messages: Any) -> Any:
    """The next request message of a call (``_END`` after the last); a message that is not a valid protobuf
    of the method's request type is the client's mistake (``bad_request``), not a server fault."""
    try:
        return await anext(messages, _END)
    except DecodeError as exc:
        raise ProtocolError(f"malformed request message: {exc}") from None


# Where each datatype's elements sit in InferTensorContents (FP16 travels only as raw bytes).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _parameters(params: Any) -> dict[str, Any]:
    return {key: pb.parameter_value(value) for key, value in params.items()}


def _input_data(tensor: Any, count: int, raw: bytes | None) -> list[bytes] | np.ndarray:
    name, datatype = echo(tensor.name), tensor.datatype
    if raw is not None:
        if datatype == "BYTES":
            try:
                return unpack_bytes(raw, count, f"input {name}")
            except WireFormatError as exc:
                raise ProtocolError(str(exc)) from None
        dtype = DATATYPES[datatype]
        if len(raw) != count * dtype.itemsize:
            raise ProtocolError(f"input {name}: {len(raw)} raw bytes for shape {echo(list(tensor.shape))} of {datatype}")
        return np.frombuffer(raw, dtype=dtype).copy()
    field = _CONTENTS.get(datatype)
    if field is None:
        raise ProtocolError(f"input {name}: {datatype} data must come in raw_input_contents")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise ProtocolError(f"input {name}: {len(values)} values for shape {echo(list(tensor.shape))}")
    if datatype == "BYTES":
        return [bytes(v) for v in values]
    try:  # int_contents carries INT8 and INT16 too, uint_contents UINT8 and UINT16: a value may not fit
        return np.asarray(values, dtype=DATATYPES[datatype])
    except (OverflowError, ValueError) as exc:
        raise ProtocolError(f"input {name}: data does not fit {datatype} ({echo(str(exc))})") from None


def to_infer_request(msg: Any, max_elements: int) -> InferRequest:
    """A ``ModelInferRequest`` as the :class:`InferRequest` that ``MantisModel.infer`` takes; whatever the
    client got wrong is a :class:`ProtocolError` that repeats at most a short prefix of what it sent, and
    shapes of more than ``max_elements`` elements in all are ``too_large`` before any element is read."""
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise ProtocolError(f"request has {len(raw)} raw_input_contents for {len(msg.inputs)} inputs")
    inputs = []
    total = 0
    for i, tensor in enumerate(msg.inputs):
        name = echo(tensor.name)
        if tensor.datatype != "BYTES" and tensor.datatype not in DATATYPES:
            raise ProtocolError(f"input {name}: unknown datatype {echo(tensor.datatype)}")
        if len(tensor.shape) > MAX_RANK:
            raise ProtocolError(f"input {name}: 'shape' has {len(tensor.shape)} dimensions, at most {MAX_RANK} are allowed")
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise ProtocolError(f"input {name}: 'shape' must be non-negative, got {shape}")
        count = math.prod(shape)
        total += count
        if total > max_elements:
            raise ProtocolError(
                f"input {name}: shape {shape} makes more than {max_elements} elements in the request; "
                f"this server takes at most {max_elements} per request",
                kind="too_large",
            )
        data = _input_data(tensor, count, raw[i] if raw else None)
        inputs.append(InputTensor(tensor.name, tensor.datatype, shape, _parameters(tensor.parameters), data))
    outputs = [RequestedOutput(o.name, _parameters(o.parameters)) for o in msg.outputs] or None
    return InferRequest(msg.id or None, inputs, outputs, _parameters(msg.parameters))


def to_infer_response(model_name: str, request_id: str | None, outputs: list[OutputTensor]) -> Any:
    """The ``ModelInferResponse``: every output's bytes in ``raw_output_contents`` (WIRE.md layout)."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=VERSION, id=request_id or "")
    for tensor in outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.data.shape))
        response.raw_output_contents.append(binary_data(tensor))
    return response


def _bind_error(host: str, port: int) -> str:
    """Why grpc could not listen on ``host:port``, as the operating system says it (e.g. "address already in use")."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return "grpc could not bind it"


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("utf-8", errors="replace")
    return None


class GrpcFrontend:
    """The gRPC server of one data plane: started by the plane once the model is warm and the batcher runs,
    stopped when shutdown begins (in-flight calls get ``grace`` seconds), before the batcher stops."""

    def __init__(self, plane: DataPlane, host: str, port: int, grace: float = 30.0) -> None:
        self.plane = plane
        self.host = host
        self.port = port
        self.grace = grace
        self.server: grpc.aio.Server | None = None
        self.bound_port: int | None = None
        plane.add_frontend(self)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"grpc://{host}:{self.bound_port}"

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        unary: dict[str, tuple[Callable[[Any], Awaitable[Any]], bool]] = {
            "ServerLive": (self._server_live, True),
            "ServerReady": (self._server_ready, True),
            "ModelReady": (self._model_ready, False),
            "ServerMetadata": (self._server_metadata, False),
            "ModelMetadata": (self._model_metadata, False),
            "ModelInfer": (self._infer, False),
        }
        handlers = {}
        for name, (fn, public) in unary.items():
            m = pb.METHODS[name]
            # Registered as stream-unary (the same bytes on the wire as a unary call) so that the handler runs
            # when the call's headers arrive and can put a deadline on the request message (_first_message).
            handlers[name] = grpc.stream_unary_rpc_method_handler(
                self._unary(name, fn, public), request_deserializer=m.request.FromString, response_serializer=m.response.SerializeToString
            )
        m = pb.METHODS["ModelStreamInfer"]
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self._stream, request_deserializer=m.request.FromString, response_serializer=m.response.SerializeToString
        )
        return handlers

    async def start(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.plane.max_request_bytes),
            ("grpc.http2.bdp_probe", 0),  # no bandwidth-probing PINGs next to small messages
            # the HTTP port's idle deadline: a connection without a call is closed (GOAWAY) after it
            ("grpc.max_connection_idle_ms", int(self.plane.limits.idle_timeout * 1000)),
            ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
            # grpc sets SO_REUSEPORT by default: a second server on the same port would then start and share
            # the clients with the first; without it the port in use is an error, as on the HTTP port
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(GRPC_SERVICE, self._handlers())])
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            self.bound_port = server.add_insecure_port(f"{host}:{self.port}")
        except RuntimeError:
            self.bound_port = 0
        if not self.bound_port:
            raise OSError(f"cannot listen for gRPC on {self.host}:{self.port}: {_bind_error(self.host, self.port)}")
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(self.grace)
            self.server = None

    def _count(self, method: str, code: str) -> None:
        self.plane.metrics.grpc_requests.labels(method, code).inc()

    async def _abort(self, context: grpc.aio.ServicerContext, method: str, err: ProtocolError, client: str | None) -> None:
        """End the call with ``err``'s gRPC code and kind (trailing metadata), counted and charged to
        ``client`` (None: not charged)."""
        self._count(method, err.grpc_code)
        self.plane.refused(err.kind, client)
        await context.abort(grpc.StatusCode[err.grpc_code], str(err), trailing_metadata=((ERROR_KIND_PARAMETER, err.kind),))

    async def _only_message(self, requests: Any) -> Any:
        """The call's one request message and the end of the call, within the HTTP port's body deadline:
        ``timeout`` when they are not complete by then (a client that sends headers and then nothing, or
        drips its message), ``unavailable`` when shutdown begins first, ``bad_request`` when the call ends
        without a message or carries a second one (a unary method takes exactly one)."""

        async def read() -> Any:
            messages = aiter(requests)
            message = await _next_message(messages)
            if message is _END:
                raise ProtocolError("the call ended without a request message")
            if await _next_message(messages) is not _END:
                raise ProtocolError("a unary call carries exactly one request message; this one has more")
            return message

        return await self.plane.within_body_deadline(read(), "request message")

    def _unary(
        self, method: str, fn: Callable[[Any], Awaitable[Any]], public: bool
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """A unary method: ``public`` ones (the health probes) need no token and are never held by the
        client budget, like the HTTP probes."""

        async def handler(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            client = peer_address(context.peer())
            try:
                if not public:
                    await self.plane.admit(client)
                    self.plane.authenticate(_metadata(context, GRPC_AUTH_METADATA), _HOW_TO_AUTHENTICATE_GRPC)
                response = await fn(await self._only_message(requests))
            except Exception as exc:
                err = self.plane.error(exc, method)
            else:
                self._count(method, "OK")
                return response
            # outside the except block: the abort's exception must not chain the refused call's
            await self._abort(context, method, err, client)

        return handler

    async def _server_live(self, request: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, request: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def _model_ready(self, request: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    async def _server_metadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    async def _model_metadata(self, request: Any) -> Any:
        meta = self.plane.model_metadata(request.name, request.version)
        response = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for spec in meta["inputs"]:
            response.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        for spec in meta["outputs"]:
            response.outputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        return response

    async def _infer(self, msg: Any) -> Any:
        model = self.plane.find_model(msg.model_name, msg.model_version)
        request = to_infer_request(msg, self.plane.max_request_images)
        outputs = await self.plane.infer(request)
        return to_infer_response(model.name, request.id, outputs)

    async def _stream(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        method = "ModelStreamInfer"
        client = peer_address(context.peer())
        try:
            await self.plane.admit(client)
            self.plane.authenticate(_metadata(context, GRPC_AUTH_METADATA), _HOW_TO_AUTHENTICATE_GRPC)
        except ProtocolError as exc:
            err = self.plane.error(exc, method)
        else:
            err = None
        if err is not None:
            await self._abort(context, method, err, client)
        write_lock = asyncio.Lock()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_STREAM)
        pending: set[asyncio.Task] = set()

        async def answer(msg: Any) -> None:
            try:
                response = await self._stream_answer(msg, client, method)
                async with write_lock:
                    if not context.done():
                        await context.write(response)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                pass  # the call ended (the client went away): the answer goes nowhere
            finally:
                slots.release()

        it = aiter(requests)
        malformed: list[ProtocolError] = []

        async def read() -> Any:
            try:
                return await _next_message(it)
            except ProtocolError as exc:  # the stream cannot go on past a message it cannot frame
                malformed.append(self.plane.error(exc, method))
                return _END

        reader = IdleReader(read, self.plane.closing, self.plane.limits.idle_timeout)
        try:
            while (msg := await reader.next(lambda: bool(pending))) not in (None, _END):
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(answer(msg))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await finish_answers(pending, self.plane.closing, self.plane.limits.lingering_time)
        finally:
            reader.close()
            for task in pending:
                task.cancel()
        shutdown = reader.stopped == "shutdown" or (self.plane.closing is not None and self.plane.closing.done())
        if malformed or reader.stopped is not None or shutdown:
            err = (
                malformed[0]
                if malformed
                else ProtocolError("the server is shutting down; retry", kind="unavailable")
                if shutdown
                else ProtocolError(f"no message on the stream for {reader.idle:g} s", kind="timeout")
            )
            # an idle stream is no mistake: it ends, as an idle HTTP connection closes, uncharged
            await self._abort(context, method, err, client if malformed else None)
        self._count(method, "OK")

    async def _stream_answer(self, msg: Any, client: str | None, method: str) -> Any:
        """The answer to one message of a stream: the inference response, or a refusal carrying the request's
        id, its model name (when short: at most ``protocol.ECHO_LIMIT`` characters) and the error kind."""
        try:
            await self.plane.admit(client)
            response = pb.ModelStreamInferResponse(infer_response=await self._infer(msg))
            status = "ok"
        except Exception as exc:
            err = self.plane.error(exc, method)
            self.plane.refused(err.kind, client)
            status = err.kind
            response = pb.ModelStreamInferResponse(error_message=str(err))
            if len(msg.model_name) <= ECHO_LIMIT:
                response.infer_response.model_name = msg.model_name
            response.infer_response.id = msg.id
            response.infer_response.parameters[ERROR_KIND_PARAMETER].string_param = err.kind
        self.plane.metrics.stream_messages.labels("grpc", status).inc()
        return response
