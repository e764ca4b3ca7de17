"""The served model: bitstreams in, per-task logits, top-k labels and active tasks out.

One input, ``bitstream`` (BYTES, shape ``[N]``): one MANTiS bitstream per image. Outputs, for tasks
``t`` in the manifest's order:

- ``logits_<t>`` (FP32, ``[N, n_labels_t]``): the task head's logits, computed for every image.
- ``labels_<t>`` (BYTES, ``[N, k_t]``): the ``k_t = min(top_k, n_labels_t)`` most likely labels, best
  first, for images where task ``t`` is active; ``k_t`` empty strings where it is not.
- ``active_tasks`` (BOOL, ``[N, T]``): the task mask each bitstream carries (the edge's task detector),
  followed, for tasks added on the server only (the manifest's ``server_detected_tasks``), by the server
  half's own decision from the decoded latent (its ``detect_logits`` above 0).
- ``top`` (INT32, ``[N, T, k]``): the k best label indices per task (the manifest's label order),
  best first, -1 where the task is inactive: the smallest answer, all a client needs to print labels.
  Sent only when a request names it; a request without ``outputs`` gets the three above.

A task's logits for an image where it is inactive are still computed (the batch runs every head), but the
encoder was not conditioned for that task, so they carry no meaning; clients read ``active_tasks``.
Request parameter ``top_k`` (integer >= 1, default 1) sets ``k``.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any

import numpy as np

from codec.bundle import Bundle
from codec.wire import ACTIVE_TASKS_OUTPUT, BITSTREAM_INPUT, LABEL_INDEX_OUTPUT, labels_output, logits_output
from runtime_server.answers import ModelContract
from runtime_server.backends import Backend, BackendUnavailableError
from runtime_server.batching import DynamicBatcher
from runtime_server.metrics import ServerMetrics
from runtime_server.protocol import InferRequest, OutputTensor

VERSION = "1"


class MantisModel(ModelContract):
    """Validates requests, decodes bitstreams in a thread pool, batches latents, and builds the outputs."""

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        batcher: DynamicBatcher,
        decode_executor: Executor,
        metrics: ServerMetrics,
        max_request_images: int,
    ) -> None:
        super().__init__(bundle, max_request_images)
        self.backend = backend
        self.batcher = batcher
        self.decode_executor = decode_executor
        self.metrics = metrics

    def metadata(self) -> dict[str, Any]:
        """KServe v2 model metadata (``-1``: a dimension of any size)."""
        outputs = [{"name": logits_output(t), "datatype": "FP32", "shape": [-1, len(self.labels[t])]} for t in self.tasks]
        outputs += [{"name": labels_output(t), "datatype": "BYTES", "shape": [-1, -1]} for t in self.tasks]
        outputs.append({"name": ACTIVE_TASKS_OUTPUT, "datatype": "BOOL", "shape": [-1, len(self.tasks)]})
        outputs.append({"name": LABEL_INDEX_OUTPUT, "datatype": "INT32", "shape": [-1, len(self.tasks), -1]})
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": f"mantis_{self.backend.name}",
            "inputs": [{"name": BITSTREAM_INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": outputs,
        }

    def config(self) -> dict[str, Any]:
        """Serving configuration plus what a client needs to read the outputs (tasks and their labels)."""
        return {
            "name": self.name,
            "platform": f"mantis_{self.backend.name}",
            "backend": self.backend.name,
            "device": self.backend.device,
            "max_batch_size": self.batcher.max_batch_size,
            "dynamic_batching": {"max_queue_delay_microseconds": int(round(self.batcher.max_queue_delay * 1e6))},
            "max_request_images": self.max_request_images,
            "tasks": [{"name": t, "labels": self.labels[t]} for t in self.tasks],
            "bitstream_version": self.bundle.manifest.bitstream_version,
            "table_id": self.bundle.manifest.tables["table_id"],
            "latent": {"channels": self.latent_shape[0], "height": self.latent_shape[1], "width": self.latent_shape[2]},
        }

    def warm_up(self) -> None:
        """Run the backend on zeros at the largest and the smallest batch, checking that it returns one
        ``(B, n_labels)`` array per task; :class:`BackendUnavailableError` otherwise."""
        for n in sorted({self.batcher.max_batch_size, 1}, reverse=True):
            try:
                outs = self.backend.run(np.zeros((n, *self.latent_shape), dtype=np.float32))
            except Exception as exc:  # whatever the runtime raises, the server cannot start
                raise BackendUnavailableError(f"backend {self.backend.name} fails on a batch of {n}: {type(exc).__name__}: {exc}") from None
            expected = [(n, len(self.labels[t])) for t in self.tasks]
            if self.edge_tasks < len(self.tasks):
                expected.append((n, len(self.tasks) - self.edge_tasks))
            shapes = [tuple(np.shape(o)) for o in outs]
            if shapes != expected:
                raise BackendUnavailableError(
                    f"backend {self.backend.name} returns outputs of shapes {shapes} for a batch of {n}; "
                    f"the manifest's tasks {self.tasks} need {expected}"
                )

    async def infer(self, request: InferRequest) -> list[OutputTensor]:
        """Validate (the bitstreams from their headers, on the event loop: microseconds each), decode (thread
        pool), run through the batcher, and build the outputs."""
        bitstreams = self._bitstreams(request)
        top_k = self.top_k(request.parameters)
        names = self._requested(request)
        self.check_headers(bitstreams)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        latents, masks = await loop.run_in_executor(self.decode_executor, self.decode, bitstreams)
        self.metrics.decode_seconds.observe(time.perf_counter() - start)
        logits, masks = self.with_server_detected(await self.batcher.submit(latents), masks)
        return self.build_outputs(logits, masks, top_k, names)
