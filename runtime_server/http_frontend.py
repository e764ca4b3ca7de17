"""The HTTP frontend: the KServe v2 REST routes, ``/metrics`` and the compact stream's route on aiohttp,
a thin adapter over the data plane (``runtime_server/dataplane.py``: authentication, readiness, the
model check, inference, error kinds and metrics); its startup and shutdown run the plane's.

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
import logging
import signal
import threading
import time
from typing import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from codec.wire import AUTH_HEADER, AUTH_SCHEME, HEADER_LENGTH, ProtocolError, bearer, kind_for_status
from runtime_server.client_budget import RateLimitedError
from runtime_server.connection import GuardedRequestHandler, GuardedServer, one_line, request_client
from runtime_server.dataplane import DataPlane, ServerConfig, open_data_plane
from runtime_server.metrics import CONTENT_TYPE
from runtime_server.model import VERSION
from runtime_server.protocol import BodyCollector, InferRequest, encode_infer_response
from runtime_server.stream_frontend import add_stream_routes

log = logging.getLogger("mantis.server")

PLANE = web.AppKey("mantis_plane", DataPlane)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes need no token and are never held or refused by the client budget: they reveal nothing, orchestrators
# call them without credentials, and a probe held for a second or answered 429 would take a healthy server
# out of rotation.
_OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
_HOW_TO_AUTHENTICATE_HTTP = f"'{AUTH_HEADER}: {bearer('<token>')}'"


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": message, "kind": kind}, status=status)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a KServe error body (``DataPlane.error``) and count requests and errors."""
    plane = request.app[PLANE]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    kind = None
    client = request_client(request)
    try:
        if request.path not in _OPEN_PATHS:  # probes are never held by the client budget
            await plane.admit(client)
        response = await handler(request)
    except web.HTTPException as exc:  # aiohttp's own: no route (404), wrong method (405)
        known = kind_for_status(exc.status)
        kind = known.name if known is not None else "bad_request"
        response = _error(exc.status, exc.text or exc.reason, kind)
        if hdrs.ALLOW in exc.headers:
            response.headers[hdrs.ALLOW] = exc.headers[hdrs.ALLOW]
    except (RequestPayloadError, HttpProcessingError) as exc:  # a body that breaks its own framing or encoding
        kind = "bad_request"
        response = _error(400, f"malformed request body: {one_line(exc)}", kind)
    except ConnectionResetError:
        # The client hung up before its request was complete; the answer goes nowhere.
        kind = "disconnected"
        response = _error(400, "the connection was lost before the request was complete", kind)
    except Exception as exc:
        err = plane.error(exc, request.path)
        kind = err.kind
        response = _error(err.status, str(err), kind)
        if isinstance(err, RateLimitedError):
            response.headers[hdrs.RETRY_AFTER] = str(err.retry_after)
        elif kind == "unauthorized":
            response.headers[hdrs.WWW_AUTHENTICATE] = f'{AUTH_SCHEME} realm="mantis"'
    if kind in ("timeout", "unavailable") or (kind is not None and not request.content.is_eof()):
        response.force_close()  # the rest of the body is not worth waiting for
        if isinstance(request.protocol, GuardedRequestHandler):
            request.protocol.limit_drain()
    if kind is not None:
        plane.refused(kind, client)
    plane.metrics.http_requests.labels(route, str(response.status)).inc()
    return response


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in _OPEN_PATHS:
        request.app[PLANE].authenticate(request.headers.get(AUTH_HEADER), _HOW_TO_AUTHENTICATE_HTTP)
    return await handler(request)


async def _read_request(request: web.Request, plane: DataPlane) -> InferRequest:
    """The inference request, read chunk by chunk within the body deadline and refused as soon as what has
    arrived is over a limit (:class:`BodyCollector`); 408 when the body is late, 503 when shutdown begins first."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding != "identity":
        raise ProtocolError(
            f"Content-Encoding {encoding[:40]!r} is not supported: send the body uncompressed (entropy-coded bitstreams do not compress)"
        )
    codings = [c.strip().lower() for c in request.headers.get(hdrs.TRANSFER_ENCODING, "").split(",") if c.strip()]
    if [c for c in codings if c != "chunked"]:
        raise ProtocolError(
            f"Transfer-Encoding {request.headers[hdrs.TRANSFER_ENCODING][:40]!r} is not supported: send the body "
            "uncompressed, chunked or with a Content-Length"
        )
    if request.content_length is not None and request.content_length > plane.max_request_bytes:
        raise ProtocolError(
            f"request body of {request.content_length} bytes exceeds the limit of {plane.max_request_bytes} bytes", kind="too_large"
        )
    collector = BodyCollector(request.headers.get(HEADER_LENGTH), plane.max_request_bytes, plane.max_request_images)
    await plane.within_body_deadline(_collect(request, collector), "request body")  # raises the collector's refusal, if any
    return collector.request()


async def _collect(request: web.Request, collector: BodyCollector) -> None:
    while chunk := await request.content.readany():
        collector.feed(chunk)


def _model_route(request: web.Request) -> tuple[DataPlane, str, str | None]:
    return request.app[PLANE], request.match_info["name"], request.match_info.get("version")


async def _live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def _ready(request: web.Request) -> web.Response:
    ready = request.app[PLANE].ready
    return web.json_response({"ready": ready}, status=200 if ready else 503)


async def _server_metadata(request: web.Request) -> web.Response:
    return web.json_response(request.app[PLANE].server_metadata())


async def _model_metadata(request: web.Request) -> web.Response:
    plane, name, version = _model_route(request)
    return web.json_response(plane.model_metadata(name, version))


async def _model_config(request: web.Request) -> web.Response:
    plane, name, version = _model_route(request)
    return web.json_response(plane.model_config(name, version))


async def _model_ready(request: web.Request) -> web.Response:
    plane, name, version = _model_route(request)
    ready = plane.model_ready(name, version)
    return web.json_response({"name": name, "ready": ready}, status=200 if ready else 503)


async def _infer(request: web.Request) -> web.Response:
    plane, name, version = _model_route(request)
    model = plane.find_model(name, version)
    plane.check_ready()
    arrived = time.perf_counter()
    parsed = await _read_request(request, plane)
    outputs = await plane.infer(parsed, arrived)
    payload, header_length = encode_infer_response(model.name, VERSION, parsed, outputs)
    if header_length is None:
        return web.Response(body=payload, content_type="application/json")
    return web.Response(body=payload, content_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[PLANE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _on_startup(app: web.Application) -> None:
    await app[PLANE].start()


async def _on_shutdown(app: web.Application) -> None:
    # Received requests still finish (the batcher runs until cleanup); readiness probes now fail; requests
    # still receiving their body are answered 503 (aiohttp stops reading from connections at shutdown).
    await app[PLANE].begin_shutdown()


async def _on_cleanup(app: web.Application) -> None:
    await app[PLANE].close()


def create_app(plane: DataPlane) -> web.Application:
    """The HTTP frontend of ``plane``: the KServe v2 routes, ``/metrics`` and the compact stream; its
    startup and shutdown run the plane's (and so its other frontends')."""
    app = web.Application(client_max_size=plane.max_request_bytes, middlewares=[_errors_middleware, _auth_middleware])
    app[PLANE] = plane
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, _model_metadata)
        app.router.add_get(prefix + "/ready", _model_ready)
        app.router.add_get(prefix + "/config", _model_config)
        app.router.add_post(prefix + "/infer", _infer)
    app.router.add_get("/v2", _server_metadata)
    app.router.add_get("/v2/health/live", _live)
    app.router.add_get("/v2/health/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    add_stream_routes(app, plane)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


class _Runner(web.AppRunner):
    """An ``AppRunner`` whose connections have the app's deadlines (:class:`GuardedServer`)."""

    async def _make_server(self) -> GuardedServer:
        return GuardedServer(await super()._make_server(), self.app[PLANE].limits)


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
        self.plane = open_data_plane(config)
        self.app = create_app(self.plane)
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

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
