"""The next message of a streaming connection (the compact stream, the gRPC stream) under the HTTP port's
connection deadlines: ends a connection that only waits, or drips its messages, and one open when
shutdown begins."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")


class IdleReader(Generic[T]):
    """The next message of a streaming connection (compact stream, gRPC stream) under the connection
    deadlines of the HTTP port: :meth:`next` gives ``None`` once the server begins shutting down
    (``stopped = "shutdown"``; received requests are still answered) or when no complete message arrived
    within ``idle`` seconds while no answer was pending (``stopped = "idle"``): a connection that only
    waits, or drips a message slower than that, is ended.

    It costs one float per message: a timer checks the time of the last message once per idle period, and
    stopping cancels the read the handler is waiting in (a cancellation it takes back, so the handler goes
    on to answer what it received). Call :meth:`close` when the connection ends."""

    def __init__(self, read: Callable[[], Awaitable[T]], closing: asyncio.Future | None, idle: float) -> None:
        self._read = read
        self._closing = closing
        self.idle = idle
        self.stopped: str | None = None
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy: Callable[[], bool] = lambda: False
        self._reading = False
        self._cancelled = False
        self._last = 0.0

    async def next(self, busy: Callable[[], bool]) -> T | None:
        """The next message, or ``None`` (see :attr:`stopped`); ``busy()`` tells whether answers are pending."""
        if self._task is None:
            self._start()
        self._busy = busy
        if self.stopped is None and self._closing is not None and self._closing.done():
            self.stopped = "shutdown"
        if self.stopped is not None:
            return None
        self._reading = True
        try:
            message = await self._read()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._cancelled or task is None or task.uncancel() > 0:
                raise  # not (only) this reader's doing
            return None
        finally:
            self._reading = False
        self._last = asyncio.get_running_loop().time()
        return message

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._last = loop.time()
        self._timer = loop.call_later(self.idle, self._check)
        if self._closing is not None:
            self._closing.add_done_callback(self._on_closing)

    def _check(self) -> None:
        self._timer = None
        if self.stopped is not None:
            return
        loop = asyncio.get_running_loop()
        now, due = loop.time(), self._last + self.idle
        if due <= now + 0.001 and self._reading and not self._busy():
            self._stop("idle")
            return
        self._timer = loop.call_at(due if due > now + 0.001 else now + self.idle, self._check)

    def _on_closing(self, _: asyncio.Future) -> None:
        if self.stopped is None:
            self._stop("shutdown")

    def _stop(self, reason: str) -> None:
        self.stopped = reason
        if self._reading and self._task is not None and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    def close(self) -> None:
        """Stop the timer and stop watching for shutdown."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closing is not None:
            self._closing.remove_done_callback(self._on_closing)


async def finish_answers(pending: set[asyncio.Task], closing: asyncio.Future | None, linger: float) -> None:
    """Wait for the answers of a streaming connection that are still in flight; once shutdown has begun
    (``closing`` done), at most ``linger`` seconds more, then cancel the rest: a client that stopped
    reading its answers cannot hold the server's shutdown."""
    while pending and closing is not None and not closing.done():
        await asyncio.wait({*pending, closing}, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        await asyncio.wait(set(pending), timeout=linger)
    for task in pending:
        task.cancel()
