"""The aiohttp application: KServe v2 routes, auth, error mapping, metrics, lifecycle.

Statuses: 200 success; 400 malformed request (JSON, headers, tensors, parameters) or malformed bitstream
(the body names the codec error and the element); 401 missing or wrong bearer token; 404 unknown model,
version or route; 405 wrong method; 409 a bitstream coded with other entropy tables or for another model
(latent shape, task count); 408 headers or body not received in time; 413 request body, bitstream count
or JSON header over the limit; 429 too many refused requests from the client's address (``runtime_server/client_budget.py``);
503 not ready or shutting down; 500 only for server faults (a failing
backend). Error bodies are ``{"error": "..."}`` (plus ``"kind"``).

Every limit is checked before the work it bounds: the body's declared length before reading it, the
element count from the JSON header before any element is read, the bitstream headers before anything is
decoded. Connections have header, body and idle deadlines (``runtime_server/connection.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from codec.bundle import load_bundle
from codec.wire import AUTH_HEADER, AUTH_SCHEME, HEADER_LENGTH, ProtocolError, bearer, kind_for_status
from runtime_server.backends import load_backend
from runtime_server.batching import BackendError, BatcherClosedError, DynamicBatcher
from runtime_server.client_budget import ClientErrorBudget, ClientErrorLimits, RateLimitedError, peer_address
from runtime_server.connection import ConnectionLimits, GuardedRequestHandler, GuardedServer, one_line
from runtime_server.metrics import CONTENT_TYPE, ServerMetrics
from runtime_server.model import VERSION, MantisModel
from runtime_server.protocol import BodyCollector, InferRequest, encode_infer_response

log = logging.getLogger("mantis.server")
T = TypeVar("T")

SERVER_NAME = "mantis"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_configuration"]
# Probes need no token: they reveal nothing and orchestrators call them without credentials.
_OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


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


@dataclass
class ServerState:
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
    """Done once shutdown begins: requests still receiving their body are answered 503 at once."""

    def refused(self, kind: str, client: str | None) -> None:
        """Count a refusal of ``kind`` (``mantis_errors_total``) and charge it to ``client``'s budget."""
        self.metrics.errors.labels(kind).inc()
        self.client_errors.charge(client, kind)

    async def within_body_deadline(self, work: Awaitable[T], what: str) -> T:
        """``work``'s result (or its refusal) if it completes within the body deadline; otherwise ``work`` is
        cancelled and the request refused: ``unavailable`` when shutdown began first, else ``timeout``
        ("``what`` not received within ...")."""
        task = asyncio.ensure_future(work)
        timeout = self.limits.body_timeout
        try:
            await asyncio.wait((task,) if self.closing is None else (task, self.closing), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        if self.closing is not None and self.closing.done():
            raise ProtocolError("the server is shutting down; retry", kind="unavailable")
        raise ProtocolError(f"{what} not received within {timeout:g} s", kind="timeout")


STATE = web.AppKey("mantis_state", ServerState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_client(request: web.Request) -> str | None:
    """The budget key of ``request``'s peer (``client_budget.peer_address``)."""
    return peer_address(request.transport.get_extra_info("peername") if request.transport is not None else None)


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": message, "kind": kind}, status=status)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a KServe error body and count requests and errors."""
    state = request.app[STATE]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    kind = None
    client = request_client(request)
    try:
        await state.client_errors.admit(client, state.closing)
        response = await handler(request)
    except ProtocolError as exc:
        kind = exc.kind
        response = _error(exc.status, str(exc), kind)
        if isinstance(exc, RateLimitedError):
            response.headers[hdrs.RETRY_AFTER] = str(exc.retry_after)
    except web.HTTPException as exc:
        known = kind_for_status(exc.status)
        kind = known.name if known is not None else "bad_request"
        response = _error(exc.status, exc.text or exc.reason, kind)
        for name in ("WWW-Authenticate", "Allow"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except BatcherClosedError as exc:
        kind = "unavailable"
        response = _error(503, str(exc), kind)
    except BackendError as exc:
        kind = "backend"
        log.error("backend failure on %s: %s", request.path, exc)
        response = _error(500, f"backend failure: {exc}", kind)
    except (RequestPayloadError, HttpProcessingError) as exc:  # a body that breaks its own framing or encoding
        kind = "bad_request"
        response = _error(400, f"malformed request body: {one_line(exc)}", kind)
    except ConnectionResetError:
        # The client hung up before its request was complete; the answer goes nowhere.
        kind = "disconnected"
        response = _error(400, "the connection was lost before the request was complete", kind)
    except Exception as exc:  # a server bug: log it, answer 500, keep serving
        kind = "internal"
        log.exception("internal error on %s", request.path)
        response = _error(500, f"internal server error: {type(exc).__name__}", kind)
    if kind in ("timeout", "unavailable") or (kind is not None and not request.content.is_eof()):
        response.force_close()  # the rest of the body is not worth waiting for
        if isinstance(request.protocol, GuardedRequestHandler):
            request.protocol.limit_drain()
    if kind is not None:
        state.refused(kind, client)
    state.metrics.http_requests.labels(route, str(response.status)).inc()
    return response


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[STATE].token
    if token is not None and request.path not in _OPEN_PATHS:
        given = request.headers.get(AUTH_HEADER, "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != AUTH_SCHEME.lower() or not hmac.compare_digest(value.strip().encode("utf-8"), token):
            raise web.HTTPUnauthorized(
                text=f"missing or wrong bearer token (send '{AUTH_HEADER}: {bearer('<token>')}')",
                headers={"WWW-Authenticate": f'{AUTH_SCHEME} realm="mantis"'},
            )
    return await handler(request)


async def _read_request(request: web.Request, state: ServerState) -> InferRequest:
    """The inference request, read chunk by chunk within the body deadline and refused as soon as what has
    arrived is over a limit (:class:`BodyCollector`); 408 when the body is late, 503 when shutdown begins first."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding != "identity":
        raise ProtocolError(
            f"Content-Encoding {encoding[:40]!r} is not supported: send the body uncompressed "
            "(entropy-coded bitstreams do not compress)")
    if request.content_length is not None and request.content_length > state.max_request_bytes:
        raise ProtocolError(
            f"request body of {request.content_length} bytes exceeds the limit of {state.max_request_bytes} bytes", kind="too_large")
    collector = BodyCollector(request.headers.get(HEADER_LENGTH), state.max_request_bytes, state.max_request_images)
    await state.within_body_deadline(_collect(request, collector), "request body")  # raises the collector's refusal, if any
    return collector.request()


async def _collect(request: web.Request, collector: BodyCollector) -> None:
    while chunk := await request.content.readany():
        collector.feed(chunk)


def _model(request: web.Request) -> MantisModel:
    model = request.app[STATE].model
    name = request.match_info["name"]
    if name != model.name:
        raise ProtocolError(f"unknown model {name!r}; this server serves {model.name!r}", kind="not_found")
    version = request.match_info.get("version")
    if version is not None and version != VERSION:
        raise ProtocolError(f"model {name!r} has no version {version!r}; versions: [{VERSION!r}]", kind="not_found")
    return model


async def _live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def _ready(request: web.Request) -> web.Response:
    ready = request.app[STATE].ready
    return web.json_response({"ready": ready}, status=200 if ready else 503)


async def _server_metadata(request: web.Request) -> web.Response:
    return web.json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


async def _model_metadata(request: web.Request) -> web.Response:
    return web.json_response(_model(request).metadata())


async def _model_config(request: web.Request) -> web.Response:
    return web.json_response(_model(request).config())


async def _model_ready(request: web.Request) -> web.Response:
    _model(request)
    ready = request.app[STATE].ready
    return web.json_response({"name": request.match_info["name"], "ready": ready}, status=200 if ready else 503)


async def _infer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = _model(request)
    if not state.ready:
        raise ProtocolError("the server is not ready (starting or shutting down)", kind="unavailable")
    start = time.perf_counter()
    parsed = await _read_request(request, state)
    outputs = await model.infer(parsed)
    payload, header_length = encode_infer_response(model.name, VERSION, parsed, outputs)
    state.metrics.infer_requests.labels(model.name).inc()
    state.metrics.infer_images.labels(model.name).inc(len(parsed.inputs[0].data))
    state.metrics.request_seconds.observe(time.perf_counter() - start)
    if header_length is None:
        return web.Response(body=payload, content_type="application/json")
    return web.Response(body=payload, content_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _on_startup(app: web.Application) -> None:
    state = app[STATE]
    await asyncio.get_running_loop().run_in_executor(None, state.model.warm_up)
    state.model.batcher.start()
    state.closing = asyncio.get_running_loop().create_future()
    state.ready = True


async def _on_shutdown(app: web.Application) -> None:
    # Received requests still finish (the batcher runs until cleanup); readiness probes now fail; requests
    # still receiving their body are answered 503 (aiohttp stops reading from connections at shutdown).
    state = app[STATE]
    state.ready = False
    if state.closing is not None and not state.closing.done():
        state.closing.set_result(None)


async def _on_cleanup(app: web.Application) -> None:
    state = app[STATE]
    await state.model.batcher.stop()
    state.decode_pool.shutdown(wait=True)


def create_app(config: ServerConfig) -> web.Application:
    """Load the bundle and the backend (raising a clear error if either is unusable) and build the app."""
    bundle = load_bundle(config.artifacts)
    backend = load_backend(config.backend, bundle, config.compute_threads)
    metrics = ServerMetrics(config.max_batch_size)
    batcher = DynamicBatcher(backend.run, config.max_batch_size, config.max_queue_delay_ms / 1000.0, metrics)
    decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="mantis-decode")
    model = MantisModel(bundle, backend, batcher, decode_pool, metrics, config.max_request_images)
    token = config.token.encode("utf-8") if config.token else None
    app = web.Application(client_max_size=config.max_request_bytes, middlewares=[_errors_middleware, _auth_middleware])
    app[STATE] = ServerState(model, metrics, decode_pool, token, config.max_request_bytes, config.max_request_images, config.limits,
                             ClientErrorBudget(config.client_errors))
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, _model_metadata)
        app.router.add_get(prefix + "/ready", _model_ready)
        app.router.add_get(prefix + "/config", _model_config)
        app.router.add_post(prefix + "/infer", _infer)
    app.router.add_get("/v2", _server_metadata)
    app.router.add_get("/v2/health/live", _live)
    app.router.add_get("/v2/health/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    from runtime_server.stream import add_stream_routes  # here, not above: the stream builds on this module

    add_stream_routes(app)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


class _Runner(web.AppRunner):
    """An ``AppRunner`` whose connections have the app's deadlines (:class:`GuardedServer`)."""

    async def _make_server(self) -> GuardedServer:
        return GuardedServer(await super()._make_server(), self.app[STATE].limits)


async def _start_site(app: web.Application, host: str, port: int, shutdown_timeout: float) -> tuple[web.AppRunner, str]:
    """Start ``app`` (startup hooks, warm-up) and bind it; returns the runner and the bound URL."""
    # Bodies are read as sent: aiohttp would otherwise inflate a compressed body on the event loop.
    runner = _Runner(app, shutdown_timeout=shutdown_timeout, access_log=None, auto_decompress=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    return runner, url


async def serve(
    app: web.Application,
    host: str,
    port: int,
    shutdown_timeout: float = 30.0,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then stop accepting, finish in-flight requests (up to
    ``shutdown_timeout`` seconds) and release the backend. ``on_listening`` gets the bound URL."""
    runner, url = await _start_site(app, host, port, shutdown_timeout)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if on_listening is not None:
            on_listening(url)
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
    finally:
        await runner.cleanup()


class BackgroundServer:
    """The server on its own event loop in a background thread, for embedding it in another program.

    ``with BackgroundServer(config) as srv: ... srv.url ...``; leaving the block shuts down gracefully.
    """

    def __init__(self, config: ServerConfig, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 10.0) -> None:
        self.app = create_app(config)
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            runner, self.url = loop.run_until_complete(_start_site(self.app, self.host, self.port, self.shutdown_timeout))
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def start(self) -> "BackgroundServer":
        """Start serving; returns once the server is ready (or re-raises its startup error)."""
        self._thread = threading.Thread(target=self._main, name="mantis-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        """Stop accepting, finish in-flight requests, release everything."""
        if self._thread is None:
            return
        if self._loop is not None and self._error is None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
