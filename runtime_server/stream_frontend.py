"""The compact stream's frontend (``codec/STREAM.md``): WebSocket binary messages on the HTTP server's
route ``/v2/models/{model}/stream``, a thin adapter over the data plane (``runtime_server/dataplane.py``).

The handshake is an ordinary request of the aiohttp app, so the bearer token (``Authorization`` header),
the unknown-model 404 and the not-ready 503 apply before the upgrade. Then every binary message is one
request (``codec.stream``): its size is capped by the HTTP body limit (a bigger message closes the
connection with 1009 before it is read; the refusal is charged to the client's budget and logged at a
bounded rate, as is a broken frame's 1002), its image count is checked before any bitstream is copied, and
it runs through ``MantisModel.infer`` like every other request, asking for the ``top`` output
only. Requests of one connection are answered concurrently (up to :data:`MAX_IN_FLIGHT`), each answer
carrying its request's id; a refusal is an answer with the error kind's code, the stream goes on. A client
that closes or loses its connection with requests in flight gets no more work done for it: they are
cancelled. At shutdown the stream stops reading, answers what it received within the lingering time and
closes with 1001; a client that does not read is cut off then.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from codec.stream import StreamFormatError, TooManyImagesError, decode_request, encode_answer, encode_refusal, read_request_id
from codec.wire import BITSTREAM_INPUT, LABEL_INDEX_OUTPUT, STREAM_PATH, TOP_K_PARAMETER, ProtocolError
from runtime_server.connection import RateLimitedLog, one_line, request_client
from runtime_server.dataplane import DataPlane
from runtime_server.idle_reader import IdleReader, finish_answers
from runtime_server.protocol import InferRequest, InputTensor, RequestedOutput

log = logging.getLogger("mantis.server")

MAX_IN_FLIGHT = 64
"""Requests of one connection being answered at once; the connection is not read further until one is done."""
PROTOCOL = "compact"
_PROTOCOL_CLOSES = {WSCloseCode.MESSAGE_TOO_BIG: "too_large", WSCloseCode.PROTOCOL_ERROR: "bad_request"}
"""The closes aiohttp makes for a client's mistake, and the error kind each is counted and charged as."""


async def _answer(plane: DataPlane, where: str, client: str | None, data: bytes) -> bytes:
    model = plane.model
    request_id = read_request_id(data)
    try:
        await plane.admit(client)
        try:
            parsed = decode_request(data, model.max_request_images)
        except TooManyImagesError as exc:
            raise ProtocolError(str(exc), kind="too_large") from None
        except StreamFormatError as exc:
            raise ProtocolError(f"malformed stream message: {exc}") from None
        infer = InferRequest(
            None,
            [InputTensor(BITSTREAM_INPUT, "BYTES", [len(parsed.bitstreams)], {}, parsed.bitstreams)],
            [RequestedOutput(LABEL_INDEX_OUTPUT)],
            {TOP_K_PARAMETER: parsed.top_k},
        )
        [label_index] = await plane.infer(infer)
    except Exception as exc:
        err = plane.error(exc, where)
        plane.refused(err.kind, client)
        plane.metrics.stream_messages.labels(PROTOCOL, err.kind).inc()
        return encode_refusal(request_id, err.kind, str(err))
    plane.metrics.stream_messages.labels(PROTOCOL, "ok").inc()
    return encode_answer(parsed.id, label_index.data, [len(model.labels[t]) for t in model.tasks])


async def _serve_stream(plane: DataPlane, bad_traffic: RateLimitedLog, request: web.Request) -> web.StreamResponse:
    """Upgrade to a WebSocket and answer binary request messages until the client closes."""
    plane.find_model(request.match_info["name"], request.match_info.get("version"))
    plane.check_ready()
    # max_msg_size: aiohttp refuses a message of max_msg_size bytes or more; the limit itself is allowed.
    # timeout: how long a closing connection waits for the client's close frame.
    linger = plane.limits.lingering_time
    ws = web.WebSocketResponse(max_msg_size=plane.max_request_bytes + 1, compress=False, autoping=True, timeout=linger)
    await ws.prepare(request)
    client = request_client(request)
    send_lock = asyncio.Lock()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    pending: set[asyncio.Task] = set()
    lost: list[str] = []

    async def send(answer: bytes) -> None:
        async with send_lock:
            if ws.closed or lost:
                return
            try:
                await ws.send_bytes(answer)
            except ConnectionError as exc:  # the client went away: no more answers, no more work for it
                lost.append(str(exc))
                for task in pending:
                    if task is not asyncio.current_task():
                        task.cancel()

    async def serve_one(data: bytes) -> None:
        try:
            await send(await _answer(plane, request.path, client, data))
        finally:
            slots.release()

    reader = IdleReader(ws.receive, plane.closing, plane.limits.idle_timeout)
    client_left = False
    try:
        while not lost:
            msg = await reader.next(lambda: bool(pending))
            if msg is None:
                break
            if msg.type == WSMsgType.BINARY:
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(serve_one(msg.data))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif msg.type == WSMsgType.TEXT:
                plane.refused("bad_request", client)
                plane.metrics.stream_messages.labels(PROTOCOL, "bad_request").inc()
                await send(encode_refusal(read_request_id(b""), "bad_request", "the compact stream takes binary messages only"))
            elif msg.type == WSMsgType.ERROR:
                # aiohttp closed the connection itself: 1009 for a message over the limit, 1002 for a broken
                # frame (the client's mistakes), or the connection was lost
                code = getattr(msg.data, "code", None)  # a WebSocketError carries the close code aiohttp sent
                if code in _PROTOCOL_CLOSES:
                    plane.refused(_PROTOCOL_CLOSES[code], client)
                    bad_traffic.warning("compact stream from %s closed with %d: %s", client, code, one_line(msg.data))
                client_left = True
                break
            else:  # CLOSE, CLOSING, CLOSED: the client is gone or going; its answers cannot be sent
                client_left = True
                break
        if client_left or lost:
            for task in pending:
                task.cancel()
        else:
            await finish_answers(pending, plane.closing, linger)
        if lost:
            bad_traffic.warning("compact stream to %s lost with %d answers in flight: %s", client, len(pending), one_line(lost[0]))
        if reader.stopped == "shutdown" and not ws.closed:
            await _close(ws, request, WSCloseCode.GOING_AWAY, b"server shutting down", linger)
        elif reader.stopped == "idle" and not ws.closed:
            log.info("compact stream closed: no message for %g s", reader.idle)
            await _close(ws, request, WSCloseCode.OK, f"no message for {reader.idle:g} s".encode(), linger)
    finally:
        reader.close()
        for task in pending:
            task.cancel()
        if not ws.closed:
            await _close(ws, request, WSCloseCode.OK, b"", linger)
    return ws


async def _close(ws: web.WebSocketResponse, request: web.Request, code: int, message: bytes, linger: float) -> None:
    """Close ``ws`` with ``code``; a client that reads nothing (so that the close frame cannot be written)
    loses its connection after ``linger`` seconds."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), linger)
    except (asyncio.TimeoutError, ConnectionError):
        if request.transport is not None:
            request.transport.abort()


def add_stream_routes(app: web.Application, plane: DataPlane) -> None:
    """Register the compact stream's route on ``app`` (also under ``/versions/{version}``), served by ``plane``."""
    bad_traffic = RateLimitedLog(log)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _serve_stream(plane, bad_traffic, request)

    base, _, tail = STREAM_PATH.partition("{model}")
    app.router.add_get(f"{base}{{name}}{tail}", handler)
    app.router.add_get(f"{base}{{name}}/versions/{{version}}{tail}", handler)
