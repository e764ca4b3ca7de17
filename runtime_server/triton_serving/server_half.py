"""Triton Python-backend model ``<model>_server``: the server half on ONNX Runtime, for a Triton without
the ``onnxruntime`` backend (the ``nvidia-pytriton`` build has only the Python backend).

Dynamic batching gives :meth:`execute` every request of a batch: their latents run as one ONNX Runtime
call (``runtime_server.backends.OnnxRuntimeBackend``, the backend of ``serve.py --backend onnxruntime``),
and each request gets its rows of every output back.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from codec.manifest import SERVER_INPUT
from runtime_server.backends import OnnxRuntimeBackend
from runtime_server.triton_serving.common import COMPUTE_THREADS, load_version_bundle, model_parameter


class TritonPythonModel:
    """One ONNX Runtime session per model instance."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        bundle = load_version_bundle(f"{args['model_repository']}/{args['model_version']}", ["onnx"])
        self.outputs = bundle.manifest.server_outputs
        onnx = bundle.path(bundle.manifest.server["onnx"].file)
        self.backend = OnnxRuntimeBackend(onnx, self.outputs, int(model_parameter(config, COMPUTE_THREADS)))

    def execute(self, requests: list) -> list:
        latents = [pb_utils.get_input_tensor_by_name(r, SERVER_INPUT).as_numpy() for r in requests]
        sizes = [len(x) for x in latents]
        try:
            outs = self.backend.run(np.ascontiguousarray(np.concatenate(latents), dtype=np.float32))
        except Exception as exc:  # whatever ONNX Runtime raises is a server fault for every request of the batch
            error = pb_utils.TritonError(f"backend: ONNX Runtime failed: {type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        bounds = np.cumsum([0, *sizes])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(name, np.ascontiguousarray(out[a:b])) for name, out in zip(self.outputs, outs)])
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
