"""Replicas behind a real load balancer: two serve.py processes behind HAProxy (Debian's package, with
``runtime_server/deploy/haproxy.cfg``), edge clients streaming single-image requests over HTTP and over
gRPC, one replica SIGKILLed mid-load: every image gets exactly one answer, the right one, through the
edge runtime's retries (``benchmarks/failover.py`` measures the same run)."""

from __future__ import annotations

import pytest

from benchmarks.failover import run_failover
from runtime_edge.client import EdgeRuntime
from runtime_server.load_balancer import haproxy_binary
from training.data.synthetic import SyntheticMultiTask

IMAGES = 200


@pytest.fixture(scope="module")
def bitstreams(onnx_bundle) -> list[bytes]:
    edge = EdgeRuntime(onnx_bundle)
    h, _ = edge.bundle.manifest.preprocessing.input_size
    data = SyntheticMultiTask(IMAGES, image_size=int(h), seed=29, split="test")
    return [edge.encode(data.pil(i)).bitstream for i in range(IMAGES)]


@pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (Debian package haproxy; .ci/run installs it)")
def test_a_replica_killed_under_load_loses_no_image(onnx_bundle, bitstreams, tmp_path) -> None:
    results = run_failover(onnx_bundle, bitstreams, clients=4, kill_after=0.3, log_dir=tmp_path)
    assert [r.scheme for r in results] == ["http", "grpc"]
    for r in results:
        assert r.answered == IMAGES and r.lost == 0 and r.duplicated == 0 and r.wrong == 0, (r.scheme, r.errors[:5])
        assert 0 < r.killed_after_s < r.seconds and r.answered_after_kill > 0, r  # the replica died mid-load
