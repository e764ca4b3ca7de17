"""Triton Python-backend model ``<model>_decode``: the ``bitstream`` BYTES tensor [N] -> ``latent``
float32 [N, C, h, w] and ``task_mask`` int64 [N], with the bundle's entropy tables.

Runs the checks of ``serve.py`` (:class:`runtime_server.answers.ModelContract`) in its order: image count,
``top_k``, the 8-byte headers (other tables, latent size, task mask), then the payloads. A refused
request gets its own error response naming the codec error and the element; the requests that came with
it in the same call are answered.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from codec.wire import BITSTREAM_INPUT, ProtocolError
from runtime_server.answers import ModelContract
from runtime_server.triton_serving.common import (
    LATENT,
    MAX_REQUEST_IMAGES,
    TASK_MASK,
    load_version_bundle,
    model_parameter,
    refusal_message,
    request_parameters,
    triton_code,
)


class TritonPythonModel:
    """Entropy decoding of one request's bitstreams per request."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        bundle = load_version_bundle(f"{args['model_repository']}/{args['model_version']}")
        self.contract = ModelContract(bundle, int(model_parameter(config, MAX_REQUEST_IMAGES)))

    def _decode(self, request: object) -> tuple[np.ndarray, np.ndarray]:
        tensor = pb_utils.get_input_tensor_by_name(request, BITSTREAM_INPUT).as_numpy()
        if tensor.ndim != 1 or tensor.shape[0] < 1:
            raise ProtocolError(
                f"input {BITSTREAM_INPUT!r} must have shape [N] with N >= 1 (one bitstream per image), got {list(tensor.shape)}"
            )
        self.contract.check_count(tensor.shape[0])
        self.contract.top_k(request_parameters(request))
        bitstreams = [bytes(b) for b in tensor]
        self.contract.check_headers(bitstreams)
        return self.contract.decode(bitstreams)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                latents, masks = self._decode(request)
            except ProtocolError as exc:
                code = getattr(pb_utils.TritonError, triton_code(exc.status))
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(refusal_message(exc), code)))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(LATENT, latents), pb_utils.Tensor(TASK_MASK, masks)]))
        return responses
