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

import codec
from codec.errors import CodecError
from codec.format import TABLE_ID_SIZE
from codec.manifest import Bundle
from codec.wire import (
    ACTIVE_TASKS_OUTPUT,
    BITSTREAM_INPUT,
    LABEL_INDEX_INACTIVE,
    LABEL_INDEX_OUTPUT,
    TOP_K_DEFAULT,
    TOP_K_PARAMETER,
    ProtocolError,
    labels_output,
    logits_output,
    output_names,
    requestable_outputs,
)
from runtime_server.backends import Backend, BackendUnavailableError
from runtime_server.batching import DynamicBatcher
from runtime_server.metrics import ServerMetrics
from runtime_server.protocol import InferRequest, OutputTensor, echo

VERSION = "1"


class MantisModel:
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
        self.bundle = bundle
        self.backend = backend
        self.batcher = batcher
        self.decode_executor = decode_executor
        self.metrics = metrics
        self.max_request_images = max_request_images
        self.name = bundle.manifest.model_name
        self.tasks = bundle.task_names
        self.labels = {t: bundle.labels(t) for t in self.tasks}
        self.edge_tasks = bundle.edge_tasks
        self.latent_shape = bundle.latent_shape
        self.output_names = output_names(self.tasks)
        self.requestable = requestable_outputs(self.tasks)

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

    def _bitstreams(self, request: InferRequest) -> list[bytes]:
        if len(request.inputs) != 1 or request.inputs[0].name != BITSTREAM_INPUT:
            names = [i.name for i in request.inputs]
            raise ProtocolError(f"model {self.name!r} takes exactly one input {BITSTREAM_INPUT!r}, got {echo(names)}")
        tensor = request.inputs[0]
        if tensor.datatype != "BYTES":
            raise ProtocolError(f"input {BITSTREAM_INPUT!r} must be BYTES, got {echo(tensor.datatype)}")
        if len(tensor.shape) != 1 or tensor.shape[0] < 1:
            raise ProtocolError(f"input {BITSTREAM_INPUT!r} must have shape [N] with N >= 1 (one bitstream per image), got {echo(tensor.shape)}")
        if tensor.shape[0] > self.max_request_images:
            raise ProtocolError(
                f"request holds {tensor.shape[0]} bitstreams; this server takes at most {self.max_request_images} per request", kind="too_large")
        return list(tensor.data)

    def _top_k(self, request: InferRequest) -> int:
        k = request.parameters.get(TOP_K_PARAMETER, TOP_K_DEFAULT)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ProtocolError(f"parameter {TOP_K_PARAMETER!r} must be an integer >= 1, got {echo(k)}")
        return k

    def _requested(self, request: InferRequest) -> list[str]:
        if request.outputs is None:
            return self.output_names
        names = [o.name for o in request.outputs]
        unknown = [n for n in names if n not in self.requestable]
        if unknown:
            raise ProtocolError(f"unknown outputs {echo(unknown)}; model {self.name!r} has {self.requestable}")
        return names

    def check_headers(self, bitstreams: list[bytes]) -> None:
        """Refuse, from the 16-byte headers alone, any bitstream the model cannot use: malformed header (400),
        other entropy tables, another latent shape or tasks beyond the model's (409). Costs microseconds per
        bitstream whatever the payloads hold, so nothing is decoded for a request that will be refused."""
        table_id = self.bundle.tables.table_id
        for i, data in enumerate(bitstreams):
            try:
                header = codec.read_header(data)
            except CodecError as exc:
                raise ProtocolError(f"bitstream[{i}]: {type(exc).__name__}: {exc}", kind="codec") from None
            if header.table_id != table_id:
                raise ProtocolError(
                    f"bitstream[{i}]: TableMismatchError: bitstream was written with entropy tables {header.table_id.hex()}, "
                    f"the server's model uses tables {self.bundle.manifest.tables['table_id']}{self._earlier_version(data)}",
                    kind="table_mismatch")
            if header.shape != self.latent_shape:
                raise ProtocolError(
                    f"bitstream[{i}]: latent shape {header.shape} does not match model {self.name!r} "
                    f"(expects {self.latent_shape}; was the image preprocessed for another model?)", kind="model_mismatch")
            if header.task_mask >> self.edge_tasks:
                raise ProtocolError(
                    f"bitstream[{i}]: task mask {header.task_mask:#b} names tasks beyond the model's {self.edge_tasks} "
                    f"edge-detected tasks {self.tasks[:self.edge_tasks]}", kind="model_mismatch")

    def decode(self, bitstreams: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Entropy-decode bitstreams whose headers passed :meth:`check_headers`: latents (N, C, h, w) float32
        and task masks (N,) int64. Raises :class:`ProtocolError` (400) naming the codec error and the element
        for a malformed payload, length or CRC.
        """
        latents = np.empty((len(bitstreams), *self.latent_shape), dtype=np.float32)
        masks = np.empty(len(bitstreams), dtype=np.int64)
        for i, data in enumerate(bitstreams):
            try:
                latent, mask = codec.decode_latent(data, self.bundle.tables)
            except CodecError as exc:  # the header passed: the payload, its length or its CRC is wrong
                raise ProtocolError(f"bitstream[{i}]: {type(exc).__name__}: {exc}", kind="codec") from None
            latents[i] = latent
            masks[i] = int(mask)
        return latents, masks

    def _earlier_version(self, data: bytes) -> str:
        """Names the earlier version of this model whose tables coded ``data``, when the manifest's lineage has it."""
        entry = self.bundle.manifest.earlier_version(bytes(data[4 : 4 + TABLE_ID_SIZE]).hex())  # header bytes 4-5 (FORMAT.md)
        if entry is None:
            return ""
        return (f"; they are the tables of an earlier version {entry['versions']} of this model, this server runs "
                f"version {self.bundle.manifest.versions}: the device needs the current bundle")

    def with_server_detected(self, outputs: list[np.ndarray], masks: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Split the backend's outputs into per-task logits and, for server-detected tasks, set their mask
        bits from the ``detect_logits`` output (active above 0)."""
        if self.edge_tasks == len(self.tasks):
            return outputs, masks
        logits, detect = outputs[: len(self.tasks)], np.asarray(outputs[len(self.tasks)])
        bits = (detect > 0).astype(np.int64) << np.arange(self.edge_tasks, len(self.tasks), dtype=np.int64)[None, :]
        return logits, masks | bits.sum(axis=1)

    def build_outputs(self, logits: list[np.ndarray], masks: np.ndarray, top_k: int, names: list[str]) -> list[OutputTensor]:
        """Assemble the requested output tensors from per-task logits and task masks."""
        active = ((masks[:, None] >> np.arange(len(self.tasks))[None, :]) & 1).astype(bool)
        tensors: dict[str, OutputTensor] = {}
        for t, (task, task_logits) in enumerate(zip(self.tasks, logits)):
            tensors[logits_output(task)] = OutputTensor(logits_output(task), "FP32", np.asarray(task_logits, dtype=np.float32))
            if labels_output(task) in names:
                labels = self.labels[task]
                k = min(top_k, len(labels))
                order = np.argsort(-task_logits, axis=1, kind="stable")[:, :k]
                out = np.full((len(masks), k), b"", dtype=object)
                for i in np.flatnonzero(active[:, t]):
                    out[i] = [labels[j].encode("utf-8") for j in order[i]]
                tensors[labels_output(task)] = OutputTensor(labels_output(task), "BYTES", out)
        tensors[ACTIVE_TASKS_OUTPUT] = OutputTensor(ACTIVE_TASKS_OUTPUT, "BOOL", active)
        if LABEL_INDEX_OUTPUT in names:
            tensors[LABEL_INDEX_OUTPUT] = OutputTensor(LABEL_INDEX_OUTPUT, "INT32", self._label_index(logits, active, top_k))
        return [tensors[n] for n in names]

    def _label_index(self, logits: list[np.ndarray], active: np.ndarray, top_k: int) -> np.ndarray:
        """``[N, T, k]`` int32: per image and task the k best label indices, best first; -1 where the task is
        inactive and past a task's last label (``k = min(top_k, most labels of any task)``)."""
        k = min(top_k, max(len(self.labels[t]) for t in self.tasks))
        out = np.full((active.shape[0], len(self.tasks), k), LABEL_INDEX_INACTIVE, dtype=np.int32)
        for t, task_logits in enumerate(logits):
            kt = min(k, task_logits.shape[1])
            order = np.argsort(-task_logits, axis=1, kind="stable")[:, :kt]
            out[:, t, :kt] = np.where(active[:, t : t + 1], order, LABEL_INDEX_INACTIVE)
        return out

    async def infer(self, request: InferRequest) -> list[OutputTensor]:
        """Validate (the bitstreams from their headers, on the event loop: microseconds each), decode (thread
        pool), run through the batcher, and build the outputs."""
        bitstreams = self._bitstreams(request)
        top_k = self._top_k(request)
        names = self._requested(request)
        self.check_headers(bitstreams)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        latents, masks = await loop.run_in_executor(self.decode_executor, self.decode, bitstreams)
        self.metrics.decode_seconds.observe(time.perf_counter() - start)
        logits, masks = self.with_server_detected(await self.batcher.submit(latents), masks)
        return self.build_outputs(logits, masks, top_k, names)
