"""The server half on an inference backend: latents (B, C, h, w) float32 -> per-task logits (B, n_labels).

- ``onnxruntime``: ``server.onnx`` on ONNX Runtime, the CUDA provider first when this onnxruntime build
  has it, else the CPU provider.
- ``torch``: ``server.pt2`` loaded with ``torch.export.load`` on the CPU; the reference.
- ``tensorrt``: ``server.plan`` (see :mod:`runtime_server.tensorrt_backend`), only where TensorRT and a
  CUDA GPU exist.

Every backend returns the server half's outputs in the manifest's order (``Manifest.server_outputs``): the
logits of every task, then, for a server half that detects tasks itself, ``detect_logits``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from codec.bundle import Bundle
from runtime_server.backend_base import Backend, BackendUnavailableError
from runtime_server.tensorrt_backend import TensorRTBackend

BACKENDS = ("onnxruntime", "tensorrt", "torch")
MANIFEST_SECTION = {"onnxruntime": "onnx", "torch": "torch", "tensorrt": "tensorrt"}
"""Backend -> the manifest's ``server`` entry whose file it runs."""


class OnnxRuntimeBackend:
    """``server.onnx`` on ONNX Runtime (CUDA provider when available, else CPU)."""

    name = "onnxruntime"

    def __init__(self, path: Path, output_names: Sequence[str], threads: int = 0) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # The compute thread shares the cores with the decode pool and the event loop: idle intra-op
        # threads sleep instead of spinning (5-7 % more requests per second on 2 cores, both batching modes).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise BackendUnavailableError(f"ONNX Runtime cannot load {path}: {exc}") from None
        self.device = self.session.get_providers()[0]
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise BackendUnavailableError(f"{path}: expected one input (the latent), found {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        produced = {o.name for o in self.session.get_outputs()}
        self.output_names = list(output_names)
        missing = [n for n in self.output_names if n not in produced]
        if missing:
            raise BackendUnavailableError(f"{path}: outputs {missing} are missing (model has {sorted(produced)})")

    def run(self, latents: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: latents})


class TorchBackend:
    """``server.pt2`` (a ``torch.export`` program) run eagerly on the CPU: the reference backend."""

    name = "torch"
    device = "cpu"

    def __init__(self, path: Path, output_names: Sequence[str], threads: int = 0) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        try:
            self.module = torch.export.load(str(path)).module()
        except Exception as exc:  # torch.export.load raises several types for foreign or damaged files
            raise BackendUnavailableError(f"torch.export cannot load {path}: {exc}") from None
        self._torch = torch
        self.num_outputs = len(output_names)

    def run(self, latents: np.ndarray) -> list[np.ndarray]:
        with self._torch.inference_mode():
            outs = self.module(self._torch.from_numpy(np.ascontiguousarray(latents)))
        if isinstance(outs, self._torch.Tensor):
            outs = (outs,)
        if len(outs) != self.num_outputs:
            raise RuntimeError(f"server.pt2 returned {len(outs)} outputs, the manifest names {self.num_outputs}")
        return [o.detach().cpu().numpy() for o in outs]


def load_backend(kind: str, bundle: Bundle, threads: int = 0) -> Backend:
    """Build the backend ``kind`` (one of :data:`BACKENDS`) for ``bundle``. ``threads`` bounds the CPU
    threads one batch may use (ONNX Runtime intra-op threads, torch threads; 0: the runtime's default)."""
    if kind not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {kind!r}; choose one of {BACKENDS}")
    section = MANIFEST_SECTION[kind]
    spec = bundle.manifest.server.get(section)
    if spec is None:
        hint = "; export it with `export/split.py --target tensorrt` on the serving machine" if kind == "tensorrt" else ""
        raise BackendUnavailableError(f"bundle {bundle.root}: manifest has no server.{section} entry for backend {kind!r}{hint}")
    return open_backend(kind, bundle.path(spec.file), bundle.manifest.server_outputs, threads)


def open_backend(kind: str, path: Path, output_names: Sequence[str], threads: int = 0) -> Backend:
    """Backend ``kind`` on the server-half file ``path`` with outputs ``output_names`` (the export checks
    its files through this too)."""
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(path, output_names, threads)
    if kind == "torch":
        return TorchBackend(path, output_names, threads)
    if kind == "tensorrt":
        return TensorRTBackend(path, output_names)
    raise BackendUnavailableError(f"unknown backend {kind!r}; choose one of {BACKENDS}")
