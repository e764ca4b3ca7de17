"""Edge client programs on their runtimes: the one runner stack that devices, the export's checks and the
int8 accuracy check all use.

``load_edge_model(path, runtime)`` loads a program on the runtime a bundle's manifest names (the schema
ties each runtime to its file suffix, so nothing is guessed from the file name):

- ``executorch``: ``edge.pte`` on the ExecuTorch runtime (``executorch.runtime``; its Python wheel links libtorch),
- ``onnxruntime``: ``edge.onnx`` on ONNX Runtime's CPU provider,
- ``coreml``: ``edge.mlpackage`` on Core ML, macOS only.

Every model maps ``image`` float32 ``(1, 3, H, W)`` to ``(latent (1, C, h, w), task_logits (1, T))``.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Protocol

import numpy as np

from codec.manifest import EDGE_INPUT, EDGE_OUTPUTS, EDGE_RUNTIMES


class EdgeRuntimeError(RuntimeError):
    """The edge client cannot be loaded or run (wrong platform, missing runtime, unexpected outputs)."""


class EdgeModel(Protocol):
    """A loaded edge client: ``run(x (1,3,H,W) float32) -> (latent (1,C,h,w), task_logits (1,T))``."""

    runtime: str

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _two_outputs(outputs: list | tuple, what: str) -> tuple[np.ndarray, np.ndarray]:
    if len(outputs) != len(EDGE_OUTPUTS):
        raise EdgeRuntimeError(f"{what} returned {len(outputs)} outputs, expected {list(EDGE_OUTPUTS)}")
    return outputs[0], outputs[1]


class ExecuTorchModel:
    """``.pte`` program on the ExecuTorch runtime (XNNPACK-delegated int8 kernels where exported so)."""

    runtime = "executorch"

    def __init__(self, path: Path) -> None:
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError as exc:
            raise EdgeRuntimeError(f"{path.name} needs the ExecuTorch runtime: pip install executorch ({exc})") from None
        self._torch = torch
        try:
            self._method = Runtime.get().load_program(path).load_method("forward")
        except Exception as exc:  # the runtime raises plain RuntimeError/ValueError with its own codes
            raise EdgeRuntimeError(f"ExecuTorch cannot load {path}: {exc}") from None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._method.execute([self._torch.from_numpy(np.ascontiguousarray(x, np.float32))])
        latent, logits = _two_outputs(outputs, "the .pte program")
        return latent.detach().numpy().copy(), logits.detach().numpy().copy()


class OnnxModel:
    """``.onnx`` edge client on ONNX Runtime's CPU provider; its tensors must carry the manifest's names."""

    runtime = "onnxruntime"

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EdgeRuntimeError(f"{path.name} needs ONNX Runtime: pip install onnxruntime ({exc})") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EdgeRuntimeError(f"ONNX Runtime cannot load {path}: {exc}") from None
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [EDGE_INPUT] or not set(EDGE_OUTPUTS) <= set(outputs):
            raise EdgeRuntimeError(f"{path.name}: inputs {inputs} and outputs {outputs}; an edge client has input {EDGE_INPUT!r} and outputs {list(EDGE_OUTPUTS)}")

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        latent, logits = self._session.run(list(EDGE_OUTPUTS), {EDGE_INPUT: np.ascontiguousarray(x, np.float32)})
        return latent, logits


def coreml_available() -> tuple[bool, str]:
    """Core ML prediction needs macOS; ``(ok, reason)``."""
    if platform.system() != "Darwin":
        return False, f"Core ML prediction needs macOS, this is {platform.system()}"
    return True, ""


class CoreMLModel:
    """``.mlpackage`` edge client; Core ML predicts on macOS only."""

    runtime = "coreml"

    def __init__(self, path: Path) -> None:
        ok, reason = coreml_available()
        if not ok:
            raise EdgeRuntimeError(
                f"{path.name} is a Core ML model: {reason}; export the bundle with --target executorch or --target onnx for this device"
            )
        try:
            import coremltools as ct
        except ImportError as exc:
            raise EdgeRuntimeError(f"{path.name} needs coremltools: pip install coremltools ({exc})") from None
        self._model = ct.models.MLModel(str(path))

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._model.predict({EDGE_INPUT: np.ascontiguousarray(x, np.float32)})
        try:
            return np.asarray(out[EDGE_OUTPUTS[0]]), np.asarray(out[EDGE_OUTPUTS[1]])
        except KeyError as exc:
            raise EdgeRuntimeError(f"Core ML model has no output {exc}; it has {sorted(out)}") from None


_LOADERS = {"executorch": ExecuTorchModel, "onnxruntime": OnnxModel, "coreml": CoreMLModel}


def load_edge_model(path: Path, runtime: str) -> EdgeModel:
    """Load the program at ``path`` on ``runtime`` (one of the manifest's edge runtimes)."""
    if runtime not in _LOADERS:
        raise EdgeRuntimeError(f"unknown edge runtime {runtime!r}; this code runs {sorted(_LOADERS)}")
    suffix = EDGE_RUNTIMES[runtime]
    if not str(path).endswith(suffix):
        raise EdgeRuntimeError(f"{path.name} is not a {runtime} program (expected a {suffix} file)")
    return _LOADERS[runtime](Path(path))
