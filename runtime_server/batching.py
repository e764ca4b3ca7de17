"""Dynamic batching: concurrent requests' latents are stacked into one backend call.

A batch starts with the oldest queued request and takes more requests until it holds ``max_batch_size``
images or the oldest request has waited ``max_queue_delay`` seconds. Requests larger than
``max_batch_size`` images are split into several queue items. The backend runs in one dedicated thread,
so the event loop never blocks on compute; while a batch computes, the next one fills up.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from runtime_server.metrics import ServerMetrics

RunBatch = Callable[[np.ndarray], list[np.ndarray]]


class BackendError(RuntimeError):
    """The backend failed on a batch (a server-side fault, not the client's)."""


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down and takes no new work."""


@dataclass
class _Item:
    latents: np.ndarray
    future: asyncio.Future
    enqueued: float


_STOP = object()


class DynamicBatcher:
    """Queue + batching loop in front of a blocking ``run_batch(latents (B,C,h,w)) -> [per-task (B, n_t)]``."""

    def __init__(self, run_batch: RunBatch, max_batch_size: int, max_queue_delay: float, metrics: ServerMetrics) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_delay < 0:
            raise ValueError(f"max_queue_delay must be >= 0, got {max_queue_delay}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.metrics = metrics
        self._queue: asyncio.Queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mantis-compute")
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="mantis-batcher")

    async def stop(self) -> None:
        """Refuse new work, finish everything already queued, then stop the loop and the compute thread."""
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(_STOP)
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, latents: np.ndarray) -> list[np.ndarray]:
        """Queue ``latents`` (N, C, h, w) and wait for the per-task outputs, each (N, n_t)."""
        if self._closing or self._task is None:
            raise BatcherClosedError("the server is shutting down")
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, latents.shape[0], self.max_batch_size):
            fut = loop.create_future()
            self._queue.put_nowait(_Item(latents[start : start + self.max_batch_size], fut, loop.time()))
            futures.append(fut)
        parts = await asyncio.gather(*futures)
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[t] for p in parts]) for t in range(len(parts[0]))]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        pending = None
        while True:
            first = pending if pending is not None else await self._queue.get()
            pending = None
            if first is _STOP:
                return
            batch = [first]
            size = first.latents.shape[0]
            deadline = first.enqueued + self.max_queue_delay
            while size < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                    except asyncio.TimeoutError:
                        break
                if item is _STOP or size + item.latents.shape[0] > self.max_batch_size:
                    pending = item
                    break
                batch.append(item)
                size += item.latents.shape[0]
            await self._execute(batch)

    def _timed_run(self, x: np.ndarray) -> tuple[list[np.ndarray], float]:
        start = time.perf_counter()
        outs = self.run_batch(x)
        return outs, time.perf_counter() - start

    async def _execute(self, batch: list[_Item]) -> None:
        live = [it for it in batch if not it.future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        x = live[0].latents if len(live) == 1 else np.concatenate([it.latents for it in live])
        started = loop.time()
        for it in live:
            self.metrics.queue_seconds.observe(started - it.enqueued)
        try:
            outs, seconds = await loop.run_in_executor(self._executor, self._timed_run, x)
            bad = [o.shape for o in outs if o.shape[0] != x.shape[0]]
            if bad:
                raise BackendError(f"backend returned outputs of shapes {bad} for a batch of {x.shape[0]}")
        except Exception as exc:  # the backend's failure goes to every waiting request, the loop lives on
            err = exc if isinstance(exc, BackendError) else BackendError(f"{type(exc).__name__}: {exc}")
            for it in live:
                if not it.future.done():
                    it.future.set_exception(err)
            return
        self.metrics.compute_seconds.observe(seconds)
        self.metrics.batch_size.observe(x.shape[0])
        offset = 0
        for it in live:
            n = it.latents.shape[0]
            if not it.future.done():
                it.future.set_result([o[offset : offset + n] for o in outs])
            offset += n
