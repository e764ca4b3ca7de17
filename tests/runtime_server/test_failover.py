"""Replicas behind a real load balancer: two serve.py processes, then two tritonserver processes, behind
HAProxy (Debian's package, with ``runtime_server/deploy/haproxy.cfg``), edge clients streaming
single-image requests over HTTP and over gRPC, one replica SIGKILLed mid-load: every image gets exactly
one answer, the right one, through the edge runtime's retries (``benchmarks/failover.py`` measures the
same run)."""

from __future__ import annotations

import grpc
import pytest

from benchmarks.failover import SERVERS, run_failover
from runtime_edge.transport.grpc import _lost
from runtime_edge.client import EdgeRuntime
from runtime_server.load_balancer import haproxy_binary
from runtime_server.triton_serving.install import TritonInstallError, install
from training.data.synthetic import SyntheticMultiTask

IMAGES = 200


@pytest.fixture(scope="module")
def bitstreams(onnx_bundle) -> list[bytes]:
    edge = EdgeRuntime(onnx_bundle)
    h, _ = edge.bundle.manifest.preprocessing.input_size
    data = SyntheticMultiTask(IMAGES, image_size=int(h), seed=29, split="test")
    return [edge.encode(data.pil(i)).bitstream for i in range(IMAGES)]


@pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (Debian package haproxy; .ci/run installs it)")
@pytest.mark.parametrize("server", SERVERS)
def test_a_replica_killed_under_load_loses_no_image(server, onnx_bundle, bitstreams, tmp_path) -> None:
    if server == "triton":
        try:
            install()
        except TritonInstallError as exc:
            pytest.skip(f"Triton Inference Server cannot be installed here: {exc}")
    results = run_failover(onnx_bundle, bitstreams, clients=4, kill_after=0.3, log_dir=tmp_path, server=server)
    assert [(r.server, r.scheme) for r in results] == [(server, "http"), (server, "grpc")]
    for r in results:
        assert r.answered == IMAGES and r.lost == 0 and r.duplicated == 0 and r.wrong == 0, (r.scheme, r.errors[:5])
        assert 0 < r.killed_after_s < r.seconds and r.answered_after_kill > 0, r  # the replica died mid-load


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, kind: str | None = None) -> None:
        self._code, self._kind = code, kind

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> tuple:
        return (("error_kind", self._kind),) if self._kind else ()


def test_grpc_client_retries_calls_lost_on_the_way_only() -> None:
    """A call reset from the other side (a balancer's replica died: CANCELLED naming no error kind) or an
    unavailable connection is retried; a server's refusal, which names its kind, is final."""
    assert _lost(_Error(grpc.StatusCode.UNAVAILABLE)) and _lost(_Error(grpc.StatusCode.CANCELLED))
    assert not _lost(_Error(grpc.StatusCode.CANCELLED, "bad_request"))
    assert not _lost(_Error(grpc.StatusCode.INVALID_ARGUMENT)) and not _lost(_Error(grpc.StatusCode.INTERNAL, "backend"))
