"""A deployed model after a task addition, served by serve.py: old devices' bitstreams (coded by the tiny
bundle's ONNX edge client) are answered for every task after a server-only addition, and refused with a 409
naming the earlier version after a full addition, whose edge client codes with new tables."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

import codec
from codec.bundle import load_bundle
from codec.wire import HEADER_LENGTH, pack_bytes
from export.split import main as split_main
from runtime_edge.preprocess import preprocess
from runtime_server.dataplane import ServerConfig
from runtime_server.http_frontend import BackgroundServer
from training.config import load_config
from training.data.synthetic import SyntheticMultiTask
from training.task_addition import run_addition

pytestmark = pytest.mark.slow

TINY = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml"
N = 16


def _added_bundle(checkpoint: Path, mode: str, factory: pytest.TempPathFactory) -> Path:
    out = factory.mktemp(f"add_{mode}")
    sets = [
        "data.synthetic.tasks=[shape,orientation,count,texture]",
        f"add_task.base_checkpoint={checkpoint}",
        f"add_task.mode={mode}",
        "add_task.compare_naive=false",
        "data.batch_size=16",
        "add_task.replay_size=16",
        "add_task.fisher_samples=8",
        "add_task.epochs=1",
        "add_task.export_target=null",
    ]
    metrics = run_addition(load_config(TINY, sets), out)
    bundle = out / "bundle"
    argv = [
        "--checkpoint",
        metrics["checkpoint"],
        "--target",
        "onnx",
        "--out",
        str(bundle),
        "--calibration-samples",
        "16",
        "--check-samples",
        "8",
    ]
    assert split_main(argv) == 0
    return bundle


@pytest.fixture(scope="module")
def old_device(onnx_bundle: Path):
    """Bitstreams of an old device: the deployed bundle's ONNX edge client and tables, on four-task images."""
    bundle = load_bundle(onnx_bundle)
    edge = ort.InferenceSession(str(bundle.path(bundle.manifest.edge.file)), providers=["CPUExecutionProvider"])
    names = [o.name for o in bundle.manifest.edge.outputs]
    data = SyntheticMultiTask(
        N,
        image_size=int(bundle.manifest.preprocessing.input_size[0]),
        seed=9,
        split="test",
        tasks=["shape", "orientation", "count", "texture"],
    )
    streams = []
    for i in range(N):
        latent, logits = edge.run(names, {edge.get_inputs()[0].name: preprocess(data.pil(i), bundle.manifest.preprocessing)})
        streams.append(codec.encode_latent(latent[0], bundle.task_mask(logits[0]), bundle.tables))
    return bundle, streams


def _infer(url: str, model: str, streams: list[bytes]):
    payload = pack_bytes(streams)
    doc = {
        "inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [len(streams)], "parameters": {"binary_data_size": len(payload)}}],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(doc).encode()
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", f"/v2/models/{model}/infer", head + payload, {HEADER_LENGTH: str(len(head))})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def _outputs(headers: dict, body: bytes) -> dict[str, np.ndarray]:
    result = triton.InferenceServerClient.parse_response_body(body, header_length=int(headers[HEADER_LENGTH]))
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def test_server_only_addition_answers_old_devices_for_every_task(tiny_checkpoint, old_device, tmp_path_factory):
    old, streams = old_device
    path = _added_bundle(tiny_checkpoint, "server", tmp_path_factory)
    new = load_bundle(path)
    assert new.tables.sha256 == old.tables.sha256 and new.manifest.tables["table_id"] == old.manifest.tables["table_id"]
    assert new.manifest.server_detected_tasks == ("texture",) and new.edge_tasks == 3 and new.task_names[:3] == old.task_names
    assert new.manifest.versions == {"edge": 1, "server": 2} and old.manifest.versions == {"edge": 1, "server": 1}
    assert new.manifest.lineage[-1]["table_id"] == old.manifest.tables["table_id"]
    # what the deployed server half answered for the old tasks
    sess = ort.InferenceSession(str(old.path("server.onnx")), providers=["CPUExecutionProvider"])
    latents = np.stack([codec.decode_latent(bs, old.tables)[0] for bs in streams])
    before = sess.run([f"logits_{t}" for t in old.task_names], {"latent": latents})
    detect = ort.InferenceSession(str(new.path("server.onnx")), providers=["CPUExecutionProvider"]).run(
        ["detect_logits"], {"latent": latents}
    )[0]
    with BackgroundServer(ServerConfig(path, max_batch_size=8, max_queue_delay_ms=5)) as srv:
        status, headers, body = _infer(srv.url, new.manifest.model_name, streams)
    assert status == 200, body
    out = _outputs(headers, body)
    masks = np.array([codec.decode_latent(bs, old.tables)[1] for bs in streams])
    edge_active = ((masks[:, None] >> np.arange(3)) & 1).astype(bool)
    np.testing.assert_array_equal(out["active_tasks"][:, :3], edge_active)
    np.testing.assert_array_equal(out["active_tasks"][:, 3], detect[:, 0] > 0)
    for t, task in enumerate(old.task_names):
        np.testing.assert_allclose(out[f"logits_{task}"], before[t], rtol=0, atol=1e-5)
    assert out["logits_texture"].shape == (N, 6)


def test_full_addition_refuses_old_devices_with_409(tiny_checkpoint, old_device, tmp_path_factory):
    old, streams = old_device
    path = _added_bundle(tiny_checkpoint, "full", tmp_path_factory)
    new = load_bundle(path)
    assert new.tables.sha256 != old.tables.sha256 and new.manifest.tables["table_id"] != old.manifest.tables["table_id"]
    assert new.manifest.server_detected_tasks == () and new.edge_tasks == 4 and new.manifest.versions == {"edge": 2, "server": 2}
    edge = ort.InferenceSession(str(new.path(new.manifest.edge.file)), providers=["CPUExecutionProvider"])
    names = [o.name for o in new.manifest.edge.outputs]
    image = SyntheticMultiTask(1, image_size=32, seed=9, split="test", tasks=new.task_names).pil(0)
    latent, logits = edge.run(names, {edge.get_inputs()[0].name: preprocess(image, new.manifest.preprocessing)})
    fresh = codec.encode_latent(latent[0], new.task_mask(logits[0]), new.tables)
    with BackgroundServer(ServerConfig(path, max_batch_size=8, max_queue_delay_ms=5)) as srv:
        status, _, body = _infer(srv.url, new.manifest.model_name, streams[:2])
        assert status == 409, body
        text = body.decode()
        assert "TableMismatchError" in text and "earlier version" in text and old.manifest.tables["table_id"] in text
        status, headers, body = _infer(srv.url, new.manifest.model_name, [fresh])
        assert status == 200, body
        assert _outputs(headers, body)["active_tasks"].shape == (1, 4)
