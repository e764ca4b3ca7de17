"""Triton Python-backend model ``<model>_answer``: the server half's outputs (``server_logits_<t>``, ...)
and the task masks -> ``logits_<t>``, ``labels_<t>``, ``active_tasks`` and ``top`` for the request's ``top_k``.

The same answer as ``serve.py``'s (:meth:`runtime_server.answers.ModelContract.build_outputs`), with the
task bits of server-detected tasks set from ``detect_logits`` first.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from codec.wire import LABEL_INDEX_OUTPUT, ProtocolError
from runtime_server.answers import ModelContract
from runtime_server.triton_serving.common import (
    SERVER_OUTPUT_PREFIX,
    TASK_MASK,
    load_version_bundle,
    refusal_message,
    request_parameters,
    triton_code,
)


class TritonPythonModel:
    """The answer step of the ensemble."""

    def initialize(self, args: dict) -> None:
        bundle = load_version_bundle(f"{args['model_repository']}/{args['model_version']}")
        self.contract = ModelContract(bundle, 1)
        self.inputs = bundle.manifest.server_outputs
        self.names = [*self.contract.output_names, LABEL_INDEX_OUTPUT]

    def _answer(self, request: object) -> list:
        top_k = self.contract.top_k(request_parameters(request))
        outputs = [pb_utils.get_input_tensor_by_name(request, SERVER_OUTPUT_PREFIX + name).as_numpy() for name in self.inputs]
        masks = pb_utils.get_input_tensor_by_name(request, TASK_MASK).as_numpy().astype(np.int64)
        logits, masks = self.contract.with_server_detected(outputs, masks)
        # only what the ensemble asks of this step: a response with outputs nobody requested crashed Triton 2.51
        # (SIGSEGV in TRITONBACKEND_ResponseSend) under concurrent load
        requested = set(request.requested_output_names())
        tensors = self.contract.build_outputs(logits, masks, top_k, [n for n in self.names if n in requested])
        return [pb_utils.Tensor(t.name, t.data) for t in tensors]

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(self._answer(request)))
            except ProtocolError as exc:
                code = getattr(pb_utils.TritonError, triton_code(exc.status))
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(refusal_message(exc), code)))
        return responses
