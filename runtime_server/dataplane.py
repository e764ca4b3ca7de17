"""The one request path of the server, shared by every frontend (HTTP, gRPC, the compact stream).

Shaped like KServe's data plane: each frontend turns its own messages into calls of one
:class:`DataPlane`, which holds the shared state (the model, the batcher's pools, the readiness flag, the
bearer token, the limits, the client error budget, the metrics) and does, once for all protocols:

- authentication (:meth:`DataPlane.authenticate`),
- the client's budget of refusals (:meth:`DataPlane.admit`, :meth:`DataPlane.refused`),
- readiness (:meth:`DataPlane.check_ready`) and the model and version check (:meth:`DataPlane.find_model`),
- inference with its metrics (:meth:`DataPlane.infer`),
- the mapping of every failure to the wire contract's error kinds (:meth:`DataPlane.error`),
- the deadline on a request's body or message (:meth:`DataPlane.within_body_deadline`),
- the lifecycle (:meth:`DataPlane.start`, :meth:`DataPlane.begin_shutdown`, :meth:`DataPlane.close`),
  which also starts and stops the frontends registered with :meth:`DataPlane.add_frontend`.

A frontend only reads its protocol, calls these, and writes the answer or the refusal in its protocol.

    plane = open_data_plane(ServerConfig(artifacts))
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Protocol, TypeVar

from codec.bundle import load_bundle
from codec.wire import AUTH_SCHEME, ProtocolError
from runtime_server.backends import load_backend
from runtime_server.batching import BackendError, BatcherClosedError, DynamicBatcher
from runtime_server.client_budget import ClientErrorBudget, ClientErrorLimits
from runtime_server.connection import ConnectionLimits
from runtime_server.metrics import ServerMetrics
from runtime_server.model import VERSION, MantisModel
from runtime_server.protocol import InferRequest, OutputTensor, echo

log = logging.getLogger("mantis.server")
T = TypeVar("T")

SERVER_NAME = "mantis"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_configuration"]
MAX_ERROR_MESSAGE = 1024
"""Most characters of a refusal's message (gRPC sends it as a trailer, which clients cap at 16 KiB)."""


@dataclass
class ServerConfig:
    """Everything ``serve.py`` configures."""

    artifacts: Path
    backend: str = "onnxruntime"
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_request_bytes: int = 4 << 20
    max_request_images: int = 256
    token: str | None = None
    decode_threads: int = 2
    compute_threads: int = 0
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    client_errors: ClientErrorLimits = field(default_factory=ClientErrorLimits)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max batch size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_ms < 0:
            raise ValueError(f"max queue delay must be >= 0 ms, got {self.max_queue_delay_ms}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max request bytes must be >= 1024, got {self.max_request_bytes}")
        if self.max_request_images < 1:
            raise ValueError(f"max request images must be >= 1, got {self.max_request_images}")
        if self.decode_threads < 1:
            raise ValueError(f"decode threads must be >= 1, got {self.decode_threads}")
        if self.compute_threads < 0:
            raise ValueError(f"compute threads must be >= 0 (0: the backend's default), got {self.compute_threads}")
        if self.token is not None and not self.token:
            raise ValueError("the bearer token is empty")


class Frontend(Protocol):
    """A protocol server that the data plane starts once the model is warm and stops when shutdown begins."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class DataPlane:
    """The shared state and the one request path (see the module docstring)."""

    model: MantisModel
    metrics: ServerMetrics
    decode_pool: ThreadPoolExecutor
    token: bytes | None
    max_request_bytes: int
    max_request_images: int
    limits: ConnectionLimits
    client_errors: ClientErrorBudget
    """Refusals per client address (``runtime_server/client_budget.py``), shared by every frontend."""
    ready: bool = False
    closing: asyncio.Future | None = None
    """Done once shutdown begins: requests still receiving their body are refused ``unavailable`` at once."""
    frontends: list[Frontend] = field(default_factory=list)

    # ---- lifecycle ------------------------------------------------------------------------------------

    def add_frontend(self, frontend: Frontend) -> None:
        """Start ``frontend`` with the server (after the warm-up) and stop it when shutdown begins."""
        self.frontends.append(frontend)

    async def start(self) -> None:
        """Warm the model up, start the frontends and the batcher, then turn ready. A frontend that cannot
        start (its port in use) stops those started before it and releases the decoding threads."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.model.warm_up)
        self.closing = loop.create_future()
        started: list[Frontend] = []
        try:
            for frontend in self.frontends:
                await frontend.start()
                started.append(frontend)
        except BaseException:
            for frontend in started:
                await frontend.stop()
            self.decode_pool.shutdown(wait=False)
            raise
        self.model.batcher.start()
        self.ready = True

    async def begin_shutdown(self) -> None:
        """Turn unready, refuse requests still receiving their body, stop the frontends (each finishes its
        calls in flight within its grace). Received requests are still answered: the batcher runs until
        :meth:`close`."""
        self.ready = False
        if self.closing is not None and not self.closing.done():
            self.closing.set_result(None)
        for frontend in self.frontends:
            await frontend.stop()

    async def close(self) -> None:
        """Stop the batcher and the decoding threads."""
        await self.model.batcher.stop()
        self.decode_pool.shutdown(wait=True)

    # ---- checks -------------------------------------------------------------------------------------------

    def authenticate(self, given: str | None, how: str) -> None:
        """Raise ``unauthorized`` unless ``given`` is ``Bearer <token>`` (always passes without a token);
        ``how`` tells the client what to send (an HTTP header, gRPC metadata)."""
        if self.token is None:
            return
        scheme, _, value = (given or "").partition(" ")
        if scheme.lower() != AUTH_SCHEME.lower() or not hmac.compare_digest(value.strip().encode("utf-8"), self.token):
            raise ProtocolError(f"missing or wrong bearer token (send {how})", kind="unauthorized")

    async def admit(self, client: str | None) -> None:
        """Hold or refuse (``rate_limited``) a request of a client over its budget of refusals."""
        await self.client_errors.admit(client, self.closing)

    def refused(self, kind: str, client: str | None) -> None:
        """Count a refusal of ``kind`` (``mantis_errors_total``) and charge it to ``client``'s budget."""
        self.metrics.errors.labels(kind).inc()
        self.client_errors.charge(client, kind)

    def check_ready(self) -> None:
        """Raise ``unavailable`` while the server is starting or shutting down."""
        if not self.ready:
            raise ProtocolError("the server is not ready (starting or shutting down)", kind="unavailable")

    def find_model(self, name: str, version: str | None = None) -> MantisModel:
        """The served model if it is called ``name`` and has ``version`` (None or empty: any); else
        ``not_found`` (repeating at most ``protocol.ECHO_LIMIT`` characters of what the client sent)."""
        model = self.model
        if name != model.name:
            raise ProtocolError(f"unknown model {echo(name)}; this server serves {model.name!r}", kind="not_found")
        if version not in (None, "", VERSION):
            raise ProtocolError(f"model {name!r} has no version {echo(version)}; versions: [{VERSION!r}]", kind="not_found")
        return model

    def error(self, exc: BaseException, where: str) -> ProtocolError:
        """The refusal ``exc`` amounts to: a :class:`ProtocolError` as it is, a closed batcher
        ``unavailable``; a failing backend or a server bug is logged (with the traceback for a bug) and
        becomes ``backend``, a server fault.

        The refusal comes back detached (no traceback, no chained exception) and its message at most
        :data:`MAX_ERROR_MESSAGE` characters: the frontend keeps it while it answers, and a traceback would
        keep every frame it passed (with the request's bytes) alive until the cycle collector runs."""
        if isinstance(exc, ProtocolError):
            err = exc
        elif isinstance(exc, BatcherClosedError):
            err = ProtocolError(str(exc), kind="unavailable")
        elif isinstance(exc, BackendError):
            log.error("backend failure on %s: %s", where, exc)
            err = ProtocolError(f"backend failure: {exc}", kind="backend")
        else:
            log.error("internal error on %s", where, exc_info=exc)
            err = ProtocolError(f"internal server error: {type(exc).__name__}", kind="backend")
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        err.__traceback__ = err.__context__ = err.__cause__ = None
        message = str(err)
        if len(message) > MAX_ERROR_MESSAGE:
            err.args = (message[: MAX_ERROR_MESSAGE - 3] + "...",)
        return err

    async def within_body_deadline(self, work: Awaitable[T], what: str) -> T:
        """``work``'s result (or its refusal) if it completes within the body deadline; otherwise ``work`` is
        cancelled and the request refused: ``unavailable`` when shutdown began first, else ``timeout``
        ("``what`` not received within ...")."""
        task = asyncio.ensure_future(work)
        timeout = self.limits.body_timeout
        try:
            await asyncio.wait(
                (task,) if self.closing is None else (task, self.closing), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        if self.closing is not None and self.closing.done():
            raise ProtocolError("the server is shutting down; retry", kind="unavailable")
        raise ProtocolError(f"{what} not received within {timeout:g} s", kind="timeout")

    # ---- the KServe v2 operations ------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.find_model(name, version).metadata()

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.find_model(name, version).config()

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.find_model(name, version)
        return self.ready

    async def infer(self, request: InferRequest, arrived: float | None = None) -> list[OutputTensor]:
        """The served model's outputs for ``request`` (``unavailable`` unless ready), counted in the metrics
        (the latency from ``arrived``, a ``time.perf_counter()``, or from now); the caller checked the
        model's name and version (:meth:`find_model`)."""
        self.check_ready()
        start = time.perf_counter() if arrived is None else arrived
        model = self.model
        outputs = await model.infer(request)
        self.metrics.infer_requests.labels(model.name).inc()
        self.metrics.infer_images.labels(model.name).inc(len(request.inputs[0].data))
        self.metrics.request_seconds.observe(time.perf_counter() - start)
        return outputs


def open_data_plane(config: ServerConfig) -> DataPlane:
    """Load the bundle and the backend (raising a clear error if either is unusable) and build the plane."""
    bundle = load_bundle(config.artifacts)
    backend = load_backend(config.backend, bundle, config.compute_threads)
    metrics = ServerMetrics(config.max_batch_size)
    batcher = DynamicBatcher(backend.run, config.max_batch_size, config.max_queue_delay_ms / 1000.0, metrics)
    decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="mantis-decode")
    model = MantisModel(bundle, backend, batcher, decode_pool, metrics, config.max_request_images)
    token = config.token.encode("utf-8") if config.token else None
    return DataPlane(
        model,
        metrics,
        decode_pool,
        token,
        config.max_request_bytes,
        config.max_request_images,
        config.limits,
        ClientErrorBudget(config.client_errors),
    )
