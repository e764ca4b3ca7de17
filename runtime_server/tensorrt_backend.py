"""The server half on TensorRT (``server.plan``), for NVIDIA GPUs.

Kept apart from :mod:`runtime_server.backends` because it needs ``tensorrt`` (10.x API: named I/O
tensors, ``execute_async_v3``) and a CUDA build of torch for device buffers; neither is needed by the other
backends. The engine is built by ``export/split.py --target tensorrt`` on the machine that runs it (engines
are specific to the GPU and TensorRT version). This path is not exercised on CPU-only machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from runtime_server.backend_base import BackendUnavailableError


class TensorRTBackend:
    """Deserialises ``server.plan`` and runs it on the current CUDA device, chunking to the engine's profile."""

    name = "tensorrt"

    def __init__(self, path: Path, output_names: Sequence[str]) -> None:
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailableError(
                "backend 'tensorrt' needs the tensorrt package and an NVIDIA GPU "
                "(pip install tensorrt); use --backend onnxruntime or torch here"
            ) from None
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("backend 'tensorrt' needs a CUDA GPU; torch sees none")
        self._trt = trt
        self._torch = torch
        self.device = f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendUnavailableError(f"TensorRT cannot deserialise {path} (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendUnavailableError(f"{path}: expected one input tensor, found {inputs}")
        self.input_name = inputs[0]
        self.output_names = list(output_names)
        missing = [n for n in self.output_names if n not in names]
        if missing:
            raise BackendUnavailableError(f"{path}: output tensors {missing} are missing (engine has {names})")
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])

    def _torch_dtype(self, name: str):
        trt, torch = self._trt, self._torch
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16}
        dtype = self.engine.get_tensor_dtype(name)
        if dtype not in table:
            raise RuntimeError(f"TensorRT tensor {name!r} has unsupported dtype {dtype}")
        return table[dtype]

    def _run_chunk(self, x: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        inp = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self._torch_dtype(self.input_name))
        self.context.set_input_shape(self.input_name, tuple(inp.shape))
        self.context.set_tensor_address(self.input_name, inp.data_ptr())
        outs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self._torch_dtype(name), device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return [outs[n].float().cpu().numpy() for n in self.output_names]

    def run(self, latents: np.ndarray) -> list[np.ndarray]:
        parts = [self._run_chunk(latents[i : i + self.max_batch]) for i in range(0, latents.shape[0], self.max_batch)]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[t] for p in parts]) for t in range(len(self.output_names))]
