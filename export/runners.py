"""Running exported files on their real runtimes (ExecuTorch, ONNX Runtime, Core ML on macOS)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

import numpy as np

Runner = Callable[[np.ndarray], list[np.ndarray]]


def executorch_runner(path: Path) -> Runner:
    """``.pte`` program's ``forward`` on the ExecuTorch runtime."""
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(x: np.ndarray) -> list[np.ndarray]:
        return [o.detach().numpy().copy() for o in method.execute([torch.from_numpy(np.ascontiguousarray(x, np.float32))])]

    return run


def onnx_runner(path: Path) -> Runner:
    """ONNX model on ONNX Runtime's CPU provider; one input, all outputs in graph order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {name: np.ascontiguousarray(x, np.float32)})

    return run


def coreml_available() -> tuple[bool, str]:
    """Core ML prediction needs macOS; ``(ok, reason)``."""
    if platform.system() != "Darwin":
        return False, f"Core ML prediction needs macOS, this is {platform.system()}"
    return True, ""


def coreml_runner(path: Path, input_name: str, output_names: list[str]) -> Runner:
    """``.mlpackage`` on Core ML (macOS only)."""
    import coremltools as ct

    model = ct.models.MLModel(str(path))

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = model.predict({input_name: np.ascontiguousarray(x, np.float32)})
        return [np.asarray(out[n], dtype=np.float32) for n in output_names]

    return run


def edge_runner(path: Path, runtime: str, input_name: str = "image", output_names: tuple[str, ...] = ("latent", "task_logits")) -> Runner:
    """The runner for an edge client file on the runtime its manifest names."""
    if runtime == "executorch":
        return executorch_runner(path)
    if runtime == "onnxruntime":
        return onnx_runner(path)
    if runtime == "coreml":
        return coreml_runner(path, input_name, list(output_names))
    raise ValueError(f"unknown edge runtime {runtime!r}")
