"""What the served model accepts and answers, from the bundle alone: one definition for ``serve.py`` and
for the Triton Inference Server models (``runtime_server/triton_serving/``).

- request checks: the ``bitstream`` input, the image-count limit (413), the ``top_k`` parameter, the
  outputs a request may name;
- refusals from the 8-byte headers alone (malformed header 400, other entropy tables 409, another latent
  shape or task mask 409), before anything is decoded;
- entropy decoding into latents and task masks (a malformed payload is 400 naming the codec error);
- the answer: ``logits_<t>``, ``labels_<t>``, ``active_tasks`` and ``top`` from the server half's outputs.

Needs numpy and ``codec`` alone (no server stack), so a Triton Python-backend model runs the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import codec
from codec.errors import CodecError
from codec.bundle import Bundle
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
from runtime_server.protocol import InferRequest, OutputTensor, echo


class ModelContract:
    """The bundle's model as the wire contract (``codec/WIRE.md``) serves it: checks, refusals, decoding
    and answers, without a backend."""

    def __init__(self, bundle: Bundle, max_request_images: int) -> None:
        self.bundle = bundle
        self.max_request_images = max_request_images
        self.name = bundle.manifest.model_name
        self.tasks = bundle.task_names
        self.labels = {t: bundle.labels(t) for t in self.tasks}
        self.edge_tasks = bundle.edge_tasks
        self.latent_shape = bundle.latent_shape
        self.output_names = output_names(self.tasks)
        self.requestable = requestable_outputs(self.tasks)

    def _bitstreams(self, request: InferRequest) -> list[bytes]:
        if len(request.inputs) != 1 or request.inputs[0].name != BITSTREAM_INPUT:
            names = [i.name for i in request.inputs]
            raise ProtocolError(f"model {self.name!r} takes exactly one input {BITSTREAM_INPUT!r}, got {echo(names)}")
        tensor = request.inputs[0]
        if tensor.datatype != "BYTES":
            raise ProtocolError(f"input {BITSTREAM_INPUT!r} must be BYTES, got {echo(tensor.datatype)}")
        if len(tensor.shape) != 1 or tensor.shape[0] < 1:
            raise ProtocolError(
                f"input {BITSTREAM_INPUT!r} must have shape [N] with N >= 1 (one bitstream per image), got {echo(tensor.shape)}"
            )
        self.check_count(tensor.shape[0])
        return list(tensor.data)

    def check_count(self, count: int) -> None:
        """Refuse (413) a request of more than ``max_request_images`` bitstreams."""
        if count > self.max_request_images:
            raise ProtocolError(
                f"request holds {count} bitstreams; this server takes at most {self.max_request_images} per request", kind="too_large"
            )

    def top_k(self, parameters: dict[str, Any]) -> int:
        """The request parameter ``top_k`` (default 1); :class:`ProtocolError` unless an integer >= 1."""
        k = parameters.get(TOP_K_PARAMETER, TOP_K_DEFAULT)
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
        """Refuse, from the 8-byte headers alone, any bitstream the model cannot use: malformed header (400),
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
                    f"the server's model uses tables {self.bundle.manifest.tables['table_id']}{self._earlier_version(header.table_id)}",
                    kind="table_mismatch",
                )
            if header.latent_size != self.latent_shape[1:]:
                raise ProtocolError(
                    f"bitstream[{i}]: latent size {header.latent_size} does not match model {self.name!r} "
                    f"(expects {self.latent_shape[1:]}; was the image preprocessed for another model?)",
                    kind="model_mismatch",
                )
            if header.task_mask >> self.edge_tasks:
                raise ProtocolError(
                    f"bitstream[{i}]: task mask {header.task_mask:#b} names tasks beyond the model's {self.edge_tasks} "
                    f"edge-detected tasks {self.tasks[: self.edge_tasks]}",
                    kind="model_mismatch",
                )

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

    def _earlier_version(self, table_id: bytes) -> str:
        """Names the earlier version of this model whose tables have ``table_id``, when the manifest's lineage has it."""
        entry = self.bundle.manifest.earlier_version(table_id.hex())
        if entry is None:
            return ""
        return (
            f"; they are the tables of an earlier version {entry['versions']} of this model, this server runs "
            f"version {self.bundle.manifest.versions}: the device needs the current bundle"
        )

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
