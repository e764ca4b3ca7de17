"""HTTP connections that a slow, idle, pipelining or malformed client cannot hold or flood.

aiohttp's connection protocol (``RequestHandler``) with four changes, built by :class:`GuardedServer`:

- **Header deadline.** Once the first byte of a request arrives on an idle connection, its headers must be
  complete within ``header_timeout`` seconds; otherwise the client gets ``408`` and the connection closes.
  A connection that sends nothing is closed after ``idle_timeout`` (aiohttp's keep-alive timer, which
  also runs from the moment the connection opens). The body's deadline is the handler's (``http_frontend.py``).
- **Pipelining in order.** aiohttp parses up to 32 pipelined requests in one go, and one malformed
  request among them made the parser drop the requests before it. Here the parser stops after each
  complete request and parses the next only once that one is taken for handling, so every valid request
  before a malformed one is answered, then the ``400``.
- **Bounded drain.** Of a refused request's unread body at most ``drain_bytes`` more are read (so that a
  client still sending can finish and read its answer); then the connection stops reading and closes at
  the end of the lingering time, so that a client repeating refused multi-megabyte requests costs the
  server little reading.
- **Bounded logs, JSON errors.** A malformed HTTP message (the client's fault) is answered with the wire
  contract's JSON error body (``{"error", "kind"}``), and logged as one warning line without a traceback, at most ``LOG_BURST`` per ``LOG_PERIOD`` seconds (then a count of those left out); server
  faults keep their traceback.

This reaches into aiohttp's ``RequestHandler`` internals (``_parser``, ``_waiter``, ``_messages``), as
pinned in ``uv.lock``; ``tests/runtime_server/test_hostile.py`` checks each behaviour against the real server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.http_parser import HttpRequestParser
from aiohttp import web
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_server import Server

from codec.wire import error_kind, kind_for_status
from runtime_server.client_budget import peer_address

log = logging.getLogger("mantis.server")

LOG_BURST = 10
LOG_PERIOD = 10.0


class RateLimitedLog:
    """At most ``burst`` messages per ``period`` seconds to ``logger``; the rest are counted, and the count
    is logged with the next message that gets through."""

    def __init__(self, logger: logging.Logger, burst: int = LOG_BURST, period: float = LOG_PERIOD) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._window = 0.0
        self._sent = 0
        self.suppressed = 0

    def warning(self, message: str, *args: Any) -> None:
        """Log ``message % args`` at WARNING (no traceback) unless this window's budget is spent."""
        now = time.monotonic()
        if now - self._window >= self.period:
            self._window, self._sent = now, 0
        if self._sent >= self.burst:
            self.suppressed += 1
            return
        self._sent += 1
        if self.suppressed:
            message += " (%d similar messages suppressed before this one)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self.logger.warning(message, *args)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection deadlines, in seconds."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 30.0
    lingering_time: float = 2.0
    """How long the connection of a refused request with an unread body stays open (draining at most
    ``drain_bytes`` of it) so that its client can read the answer, before it is closed."""
    drain_bytes: int = 256 * 1024
    """How much more of a refused request's unread body is read (so that a client still sending can finish
    and read its answer) before the server stops reading that connection and closes it at the end of the
    lingering time, the rest unread: a client repeating refused multi-megabyte requests then costs the
    server at most this much reading each, and gets at most one answer per lingering time per connection.
    A client whose unread rest does not fit the sockets' buffers (several MB on loopback) may see the
    connection reset instead of its 4xx."""

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', ' ')} must be > 0 s, got {getattr(self, name)}")
        if self.lingering_time < 0:
            raise ValueError(f"lingering time must be >= 0 s, got {self.lingering_time}")
        if self.drain_bytes < 0:
            raise ValueError(f"drain bytes must be >= 0, got {self.drain_bytes}")


def raw_error_response(status: int, reason: str, message: str, kind: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 error response with the wire contract's JSON body, for
    answering where no request object exists (a request whose headers never completed)."""
    body = json.dumps({"error": message, "kind": kind}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode("ascii") + body


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a header deadline, in-order pipelining and bounded logs."""

    def __init__(self, manager: "GuardedServer", *, limits: ConnectionLimits, bad_traffic: RateLimitedLog, **kwargs: Any) -> None:
        kwargs["keepalive_timeout"] = limits.idle_timeout
        kwargs["lingering_time"] = limits.lingering_time
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._bad_traffic = bad_traffic
        self._header_deadline: asyncio.TimerHandle | None = None
        self._drain_left: int | None = None  # set by limit_drain(): how much more of a refused body to read
        self._drain_done = False  # reading stopped for good: the connection waits out its lingering time
        # One request at a time from the parser: it pauses after each complete message and resumes when
        # start() takes that message, instead of parsing (and, on an error, dropping) a batch of 32.
        self._max_msg_queue_size = 1
        self._msg_queue_resume_size = 0
        self._parser = HttpRequestParser(
            self,
            kwargs["loop"],
            self._read_bufsize,
            max_line_size=self.max_line_size,
            max_field_size=self.max_field_size,
            max_headers=self.max_headers,
            payload_exception=RequestPayloadError,
            auto_decompress=kwargs.get("auto_decompress", True),
            max_msg_queue_size=1,
        )

    def limit_drain(self) -> None:
        """Read at most ``drain_bytes`` more of this connection: the rest of a refused request's body is only
        read so that a client still sending it can finish and read the answer."""
        if self._drain_left is None:
            self._drain_left = self._limits.drain_bytes
            self._count_drained(0)

    def _count_drained(self, received: int) -> None:
        self._drain_left -= received
        if self._drain_left <= 0 and not self._drain_done:
            self._drain_done = True
            self.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        if not self._drain_done:  # aiohttp's flow control must not restart reading a refused body
            super().resume_reading(resume_parser)

    def data_received(self, data: bytes) -> None:
        if self._drain_left is not None:
            self._count_drained(len(data))
        idle = self._waiter is not None and not self._waiter.done()  # waiting for the next request's headers
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._cancel_header_deadline()
            self._drain_left = None  # a new request: the refused body is behind it
        elif idle and data and self._header_deadline is None and not (self._close or self._force_close):
            self._header_deadline = self._loop.call_later(self._limits.header_timeout, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.transport is None or self._force_close or not (self._waiter is not None and not self._waiter.done()):
            return
        timeout = self._limits.header_timeout
        self._bad_traffic.warning("closing connection from %s: request headers incomplete after %g s", self._peer(), timeout)
        kind = error_kind("timeout")
        self.transport.write(
            raw_error_response(kind.http, "Request Timeout", f"request headers not received within {timeout:g} s", kind.name)
        )
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A malformed request (aiohttp's 4xx before any handler runs) is answered with the wire contract's
        JSON error body, logged at the bounded rate; a server fault keeps aiohttp's 500."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        if headers_too_large(exc):
            status = 431
        known = kind_for_status(status)
        text = one_line(exc) if exc is not None else (message or "bad request")
        response = web.json_response(
            {"error": f"malformed HTTP request: {text}", "kind": known.name if known else "bad_request"}, status=status
        )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):  # a malformed message: the client's fault, not the server's
            self._bad_traffic.warning("malformed HTTP request from %s: %s", self._peer(), one_line(exc))
            return
        super().log_exception(*args, **kw)


def headers_too_large(exc: BaseException | None) -> bool:
    """Whether aiohttp refused a request for having too many header fields (answered 431). A line over the
    parser's limit stays a 400: aiohttp's error does not say whether it was a header or the request line."""
    return isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower()


def request_client(request: web.Request) -> str | None:
    """The client budget's key of ``request``'s peer (``client_budget.peer_address``)."""
    return peer_address(request.transport.get_extra_info("peername") if request.transport is not None else None)


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line, at most 200 characters (for logs and error bodies)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


class GuardedServer(Server):
    """aiohttp's low-level server, making :class:`GuardedRequestHandler` connections."""

    def __init__(self, server: Server, limits: ConnectionLimits) -> None:
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
        self.limits = limits
        self.bad_traffic = RateLimitedLog(log)

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, limits=self.limits, bad_traffic=self.bad_traffic, **self._kwargs)
