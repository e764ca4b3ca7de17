"""What the gRPC service and the compact stream share with the HTTP routes: one inference path
(``MantisModel.infer`` behind the same readiness check and metrics) and one mapping of failures to the
wire contract's error kinds."""

from __future__ import annotations

import hmac
import logging
import time

from codec.wire import AUTH_SCHEME, ProtocolError, bearer
from runtime_server.app import ServerState
from runtime_server.batching import BackendError, BatcherClosedError
from runtime_server.protocol import InferRequest, OutputTensor

log = logging.getLogger("mantis.server")


async def run_inference(state: ServerState, request: InferRequest) -> list[OutputTensor]:
    """``state.model.infer(request)`` when the server is ready, counted in the inference metrics."""
    if not state.ready:
        raise ProtocolError("the server is not ready (starting or shutting down)", kind="unavailable")
    start = time.perf_counter()
    outputs = await state.model.infer(request)
    state.metrics.infer_requests.labels(state.model.name).inc()
    state.metrics.infer_images.labels(state.model.name).inc(len(request.inputs[0].data))
    state.metrics.request_seconds.observe(time.perf_counter() - start)
    return outputs


def as_protocol_error(exc: Exception, where: str) -> ProtocolError:
    """The refusal ``exc`` amounts to (a server bug is logged and becomes ``backend``: a server fault)."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, BatcherClosedError):
        return ProtocolError(str(exc), kind="unavailable")
    if isinstance(exc, BackendError):
        log.error("backend failure on %s: %s", where, exc)
        return ProtocolError(f"backend failure: {exc}", kind="backend")
    log.exception("internal error on %s", where)
    return ProtocolError(f"internal server error: {type(exc).__name__}", kind="backend")


def check_bearer(token: bytes | None, given: str | None) -> None:
    """Raise ``unauthorized`` unless ``given`` is ``Bearer <token>`` (always passes without a token)."""
    if token is None:
        return
    scheme, _, value = (given or "").partition(" ")
    if scheme.lower() != AUTH_SCHEME.lower() or not hmac.compare_digest(value.strip().encode("utf-8"), token):
        raise ProtocolError(f"missing or wrong bearer token (send {bearer('<token>')!r})", kind="unauthorized")
