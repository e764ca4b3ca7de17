"""The compact stream's frontend (``codec/STREAM.md``): WebSocket binary messages on the HTTP server's
route ``/v2/models/{model}/stream``, a thin adapter over the data plane (``runtime_server/dataplane.py``).

The handshake is an ordinary request of the aiohttp app, so the bearer token (``Authorization`` header),
the unknown-model 404 and the not-ready 503 apply before the upgrade. Then every binary message is one
request (``codec.stream``): its size is capped by the HTTP body limit (a bigger message closes the
connection with 1009 before it is read), its image count is checked before any bitstream is copied, and
it runs through ``MantisModel.infer`` like every other request, asking for the ``top`` output
only. Requests of one connection are answered concurrently (up to :data:`MAX_IN_FLIGHT`), each answer
carrying its request's id; a refusal is an answer with the error kind's code, the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from codec.stream import StreamFormatError, TooManyImagesError, decode_request, encode_answer, encode_refusal, read_request_id
from codec.wire import BITSTREAM_INPUT, LABEL_INDEX_OUTPUT, STREAM_PATH, TOP_K_PARAMETER, ProtocolError
from runtime_server.connection import request_client
from runtime_server.dataplane import DataPlane
from runtime_server.idle_reader import IdleReader
from runtime_server.protocol import InferRequest, InputTensor, RequestedOutput

log = logging.getLogger("mantis.server")

MAX_IN_FLIGHT = 64
"""Requests of one connection being answered at once; the connection is not read further until one is done."""
PROTOCOL = "compact"


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


async def _serve_stream(plane: DataPlane, request: web.Request) -> web.StreamResponse:
    """Upgrade to a WebSocket and answer binary request messages until the client closes."""
    plane.find_model(request.match_info["name"], request.match_info.get("version"))
    plane.check_ready()
    # timeout: how long a closing connection waits for the client's close frame
    ws = web.WebSocketResponse(max_msg_size=plane.max_request_bytes, compress=False, autoping=True, timeout=plane.limits.lingering_time)
    await ws.prepare(request)
    client = request_client(request)
    send_lock = asyncio.Lock()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    pending: set[asyncio.Task] = set()

    async def serve_one(data: bytes) -> None:
        try:
            answer = await _answer(plane, request.path, client, data)
            async with send_lock:
                if not ws.closed:
                    await ws.send_bytes(answer)
        finally:
            slots.release()

    reader = IdleReader(ws.receive, plane.closing, plane.limits.idle_timeout)
    try:
        while True:
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
                async with send_lock:
                    await ws.send_bytes(encode_refusal(read_request_id(b""), "bad_request", "the compact stream takes binary messages only"))
            elif msg.type == WSMsgType.ERROR:
                # aiohttp closes the connection itself (1009 for a message over max_msg_size).
                plane.metrics.errors.labels("too_large" if ws.close_code == 1009 else "bad_request").inc()
                log.info("compact stream closed on a protocol error: %s", ws.exception())
                break
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
        if pending:
            await asyncio.gather(*pending)
        if reader.stopped == "shutdown" and not ws.closed:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
        elif reader.stopped == "idle" and not ws.closed:
            log.info("compact stream closed: no message for %g s", reader.idle)
            await ws.close(code=WSCloseCode.OK, message=f"no message for {reader.idle:g} s".encode())
    finally:
        reader.close()
        for task in pending:
            task.cancel()
        if not ws.closed:
            await ws.close()
    return ws


def add_stream_routes(app: web.Application, plane: DataPlane) -> None:
    """Register the compact stream's route on ``app`` (also under ``/versions/{version}``), served by ``plane``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _serve_stream(plane, request)

    base, _, tail = STREAM_PATH.partition("{model}")
    app.router.add_get(f"{base}{{name}}{tail}", handler)
    app.router.add_get(f"{base}{{name}}/versions/{{version}}{tail}", handler)
