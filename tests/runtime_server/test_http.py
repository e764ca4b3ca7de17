"""serve.py's HTTP server on loopback with a real exported bundle: protocol, answers, hostile input, auth,
batching, and a standard KServe v2 client (tritonclient.http)."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

import codec
from codec.bundle import load_bundle
from runtime_edge.preprocess import preprocess
from runtime_server.dataplane import ServerConfig
from runtime_server.http_frontend import BackgroundServer
from runtime_server.client_budget import ClientErrorLimits
from codec.wire import HEADER_LENGTH, pack_bytes
from training.data.synthetic import SyntheticMultiTask

NUM_SAMPLES = 12


@pytest.fixture(scope="module")
def bundle(onnx_bundle):
    return load_bundle(onnx_bundle)


@pytest.fixture(scope="module")
def samples(bundle):
    """Real bitstreams: held-out synthetic images through the bundle's ONNX edge client and the codec."""
    edge = ort.InferenceSession(str(bundle.path(bundle.manifest.edge.file)), providers=["CPUExecutionProvider"])
    names = [o.name for o in bundle.manifest.edge.outputs]
    h, _ = bundle.manifest.preprocessing.input_size
    data = SyntheticMultiTask(NUM_SAMPLES, image_size=int(h), seed=7, split="test")
    out = []
    for i in range(NUM_SAMPLES):
        latent, task_logits = edge.run(names, {edge.get_inputs()[0].name: preprocess(data.pil(i), bundle.manifest.preprocessing)})
        mask = bundle.task_mask(task_logits[0])
        out.append((codec.encode_latent(latent[0], mask, bundle.tables), mask))
    return out


def _reference(bundle, samples, backend: str) -> list[np.ndarray]:
    """codec decode + the server half run directly, one image at a time."""
    latents = [codec.decode_latent(bs, bundle.tables)[0][None] for bs, _ in samples]
    if backend == "onnxruntime":
        sess = ort.InferenceSession(str(bundle.path("server.onnx")), providers=["CPUExecutionProvider"])
        names = [f"logits_{t}" for t in bundle.task_names]
        rows = [sess.run(names, {"latent": x}) for x in latents]
    else:
        module = torch.export.load(str(bundle.path("server.pt2"))).module()
        with torch.inference_mode():
            rows = [[o.numpy() for o in module(torch.from_numpy(x))] for x in latents]
    return [np.concatenate([r[t] for r in rows]) for t in range(len(bundle.task_names))]


@pytest.fixture(scope="module")
def reference(bundle, samples):
    return _reference(bundle, samples, "onnxruntime")


@pytest.fixture(scope="module")
def server(onnx_bundle):
    config = ServerConfig(
        onnx_bundle,
        max_batch_size=8,
        max_queue_delay_ms=20,
        max_request_bytes=64 * 1024,
        max_request_images=16,
        client_errors=ClientErrorLimits(burst=0),
    )
    with BackgroundServer(config) as srv:
        yield srv


class Http:
    """Keep-alive raw HTTP client for the server under test."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers = headers or {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
        resp = self.conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()

    def infer(self, model: str, bitstreams: list[bytes], parameters: dict | None = None, outputs: list | None = None):
        payload = pack_bytes(bitstreams)
        doc = {
            "inputs": [
                {"name": "bitstream", "datatype": "BYTES", "shape": [len(bitstreams)], "parameters": {"binary_data_size": len(payload)}}
            ],
            "parameters": {"binary_data_output": True, **(parameters or {})},
        }
        if outputs is not None:
            doc["outputs"] = outputs
        head = json.dumps(doc).encode()
        return self.request("POST", f"/v2/models/{model}/infer", head + payload, {HEADER_LENGTH: str(len(head))})


def _outputs(headers: dict, body: bytes) -> dict[str, np.ndarray]:
    length = headers.get(HEADER_LENGTH)
    result = triton.InferenceServerClient.parse_response_body(body, header_length=None if length is None else int(length))
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def _check_answers(bundle, samples, reference, outputs: dict[str, np.ndarray], top_k: int = 1, atol: float = 1e-5) -> None:
    masks = np.array([m for _, m in samples])
    active = ((masks[:, None] >> np.arange(len(bundle.task_names))) & 1).astype(bool)
    np.testing.assert_array_equal(outputs["active_tasks"], active)
    for t, task in enumerate(bundle.task_names):
        np.testing.assert_allclose(outputs[f"logits_{task}"], reference[t], rtol=0, atol=atol)
        labels = bundle.labels(task)
        k = min(top_k, len(labels))
        got = outputs[f"labels_{task}"]
        assert got.shape == (len(samples), k)
        for i in range(len(samples)):
            row = [x.decode() if isinstance(x, bytes) else str(x) for x in got[i]]
            if active[i, t]:
                assert row == [labels[j] for j in np.argsort(-reference[t][i], kind="stable")[:k]]
            else:
                assert row == [""] * k


def _metrics(url: str, headers: dict | None = None) -> dict[str, float]:
    status, _, body = Http(url, headers).request("GET", "/metrics")
    assert status == 200
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            key = s.name + (json.dumps(s.labels, sort_keys=True) if s.labels else "")
            values[key] = s.value
    return values


def test_health_and_metadata(server, bundle):
    c = Http(server.url)
    name = bundle.manifest.model_name
    assert c.request("GET", "/v2/health/live")[0] == 200
    status, _, body = c.request("GET", "/v2/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    meta = json.loads(c.request("GET", "/v2")[2])
    assert meta["name"] == "mantis" and "binary_tensor_data" in meta["extensions"]
    status, _, body = c.request("GET", f"/v2/models/{name}")
    model = json.loads(body)
    assert status == 200 and model["name"] == name and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "bitstream", "datatype": "BYTES", "shape": [-1]}]
    outs = {o["name"]: o for o in model["outputs"]}
    for task in bundle.task_names:
        assert outs[f"logits_{task}"] == {"name": f"logits_{task}", "datatype": "FP32", "shape": [-1, len(bundle.labels(task))]}
        assert outs[f"labels_{task}"]["datatype"] == "BYTES"
    assert outs["active_tasks"]["shape"] == [-1, len(bundle.task_names)]
    assert c.request("GET", f"/v2/models/{name}/ready")[0] == 200
    assert c.request("GET", f"/v2/models/{name}/versions/1")[0] == 200
    config = json.loads(c.request("GET", f"/v2/models/{name}/config")[2])
    assert config["max_batch_size"] == 8 and [t["name"] for t in config["tasks"]] == bundle.task_names
    for path, code in [("/v2/models/nope", 404), (f"/v2/models/{name}/versions/2", 404), ("/nowhere", 404)]:
        status, headers, body = c.request("GET", path)
        assert status == code and "error" in json.loads(body), path
    status, _, body = c.request("GET", f"/v2/models/{name}/infer")
    assert status == 405 and "error" in json.loads(body)


def test_infer_binary_matches_reference(server, bundle, samples, reference):
    c = Http(server.url)
    status, headers, body = c.infer(bundle.manifest.model_name, [bs for bs, _ in samples])
    assert status == 200, body
    assert int(headers[HEADER_LENGTH]) < len(body)
    _check_answers(bundle, samples, reference, _outputs(headers, body))


def test_infer_json_base64_with_top_k(server, bundle, samples, reference):
    c = Http(server.url)
    name = bundle.manifest.model_name
    doc = {
        "id": "abc",
        "inputs": [
            {
                "name": "bitstream",
                "datatype": "BYTES",
                "shape": [len(samples)],
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(bs).decode() for bs, _ in samples],
            }
        ],
        "parameters": {"top_k": 3},
    }
    status, headers, body = c.request("POST", f"/v2/models/{name}/infer", json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert status == 200, body
    assert HEADER_LENGTH not in headers and headers["Content-Type"].startswith("application/json")
    response = json.loads(body)
    assert response["id"] == "abc" and response["model_name"] == name
    assert all("data" in o for o in response["outputs"])
    _check_answers(bundle, samples, reference, _outputs(headers, body), top_k=3)


def test_requested_outputs_and_parameters(server, bundle, samples, reference):
    c = Http(server.url)
    name = bundle.manifest.model_name
    task = bundle.task_names[-1]
    bitstreams = [bs for bs, _ in samples[:3]]
    outputs = [
        {"name": f"labels_{task}", "parameters": {"binary_data": False}},
        {"name": "active_tasks", "parameters": {"binary_data": True}},
    ]
    status, headers, body = c.infer(name, bitstreams, parameters={"top_k": 1000}, outputs=outputs)
    assert status == 200, body
    header = json.loads(body[: int(headers[HEADER_LENGTH])])
    assert [o["name"] for o in header["outputs"]] == [f"labels_{task}", "active_tasks"]
    assert "data" in header["outputs"][0] and "binary_data_size" in header["outputs"][1]["parameters"]
    got = _outputs(headers, body)
    assert got[f"labels_{task}"].shape == (3, len(bundle.labels(task)))  # top_k is capped at the label count
    for params, outs, message in [
        ({"top_k": 0}, None, "top_k"),
        ({"top_k": "3"}, None, "top_k"),
        (None, [{"name": "logits_nope"}], "unknown outputs"),
    ]:
        status, _, body = c.infer(name, bitstreams, parameters=params, outputs=outs)
        assert status == 400 and message in json.loads(body)["error"]


def test_tritonclient_talks_to_server(server, bundle, samples, reference):
    name = bundle.manifest.model_name
    client = triton.InferenceServerClient(urlsplit(server.url).netloc)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        assert meta["inputs"][0]["name"] == "bitstream"
        inp = triton.InferInput("bitstream", [len(samples)], "BYTES")
        inp.set_data_from_numpy(np.array([bs for bs, _ in samples], dtype=np.object_), binary_data=True)
        outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in [f"logits_{t}" for t in bundle.task_names]]
        outputs += [triton.InferRequestedOutput(f"labels_{t}", binary_data=False) for t in bundle.task_names]
        outputs.append(triton.InferRequestedOutput("active_tasks"))
        result = client.infer(name, [inp], outputs=outputs, parameters={"top_k": 2})
        got = {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
        _check_answers(bundle, samples, reference, got, top_k=2)
        # no requested outputs: tritonclient asks for all of them in binary form
        inp1 = triton.InferInput("bitstream", [1], "BYTES")
        inp1.set_data_from_numpy(np.array([samples[0][0]], dtype=np.object_), binary_data=True)
        assert client.infer(name, [inp1]).as_numpy("active_tasks").shape == (1, len(bundle.task_names))
        bad = triton.InferInput("bitstream", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"MT" + bytes(30)], dtype=np.object_), binary_data=True)
        with pytest.raises(InferenceServerException, match="UnsupportedVersionError"):
            client.infer(name, [bad])
    finally:
        client.close()


def _corruptions(bitstream: bytes, count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        b = bytearray(bitstream)
        how = k % 4
        if how == 0:
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        elif how == 1:
            b = b[: int(rng.integers(len(b)))]
        elif how == 2:
            i = int(rng.integers(len(b) + 1))
            b[i:i] = rng.bytes(int(rng.integers(1, 9)))
        else:
            b = bytearray(rng.bytes(int(rng.integers(0, 2 * len(b)))))
        out.append(bytes(b))
    return out


def test_malformed_bitstreams_are_answered_not_crashed(server, bundle, samples):
    c = Http(server.url)
    name = bundle.manifest.model_name
    good = samples[0][0]
    checks = [
        (b"", 400, "TruncatedError"),
        (b"XX" + good[2:], 400, "BadMagicError"),
        (good[:10], 400, "TruncatedError"),
        (good[:-4], 400, "ChecksumError"),
        (good + b"\0\0\0\0", 400, "ChecksumError"),
        (good[:20] + bytes([good[20] ^ 0x10]) + good[21:], 400, "ChecksumError"),
        (good[:2] + bytes([good[2] ^ 0xFF]) + good[3:], 409, "TableMismatchError"),
    ]
    for bs, code, error in checks:
        status, _, body = c.infer(name, [good, bs])
        doc = json.loads(body)
        assert status == code and error in doc["error"] and "bitstream[1]" in doc["error"], (error, doc)
    # Well-formed bitstreams (same tables, valid CRC) that do not fit the served model.
    channels, height, width = bundle.latent_shape
    latent = codec.decode_latent(good, bundle.tables)[0]
    other_shape = codec.encode_latent(np.full((channels, height + 1, width), latent.mean(), np.float32), 1, bundle.tables)
    extra_task = codec.encode_latent(latent, 1 << len(bundle.task_names), bundle.tables)
    for bs, message in [(other_shape, "latent size"), (extra_task, "beyond the model's")]:
        status, _, body = c.infer(name, [bs])
        doc = json.loads(body)
        assert status == 409 and doc["kind"] == "model_mismatch" and message in doc["error"], doc
    statuses = set()
    for bs in _corruptions(good, 120, seed=3):
        status, _, body = c.infer(name, [bs])
        statuses.add(status)
        assert status in (200, 400, 409), body
    assert 400 in statuses
    status, headers, body = c.infer(name, [good])
    assert status == 200


def test_hostile_requests(server, bundle, samples):
    c = Http(server.url)
    name = bundle.manifest.model_name
    url = f"/v2/models/{name}/infer"
    good = samples[0][0]
    ok_head = {"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 4 + len(good)}}]}
    head = json.dumps(ok_head).encode()
    payload = pack_bytes([good])
    cases = [
        (b"{", {}, 400, "not valid JSON"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}', {}, 400, "exactly one input"),
        (b'{"inputs": [{"name": "bitstream", "datatype": "FP32", "shape": [1], "data": [1.0]}]}', {}, 400, "must be BYTES"),
        (b'{"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [0], "data": []}]}', {}, 400, "N >= 1"),
        (head + payload, {HEADER_LENGTH: "lots"}, 400, "must be an integer"),
        (head + payload, {HEADER_LENGTH: str(len(head) + len(payload) + 5)}, 400, "body has"),
        (head + payload, {HEADER_LENGTH: str(len(head) - 3)}, 400, "not valid JSON"),
        (head + payload[:-1], {HEADER_LENGTH: str(len(head))}, 400, "exceeds"),
        (head, {}, 400, "no Inference-Header-Content-Length"),
        (pack_bytes([good] * 17), {}, 400, "not valid JSON"),
    ]
    for body, headers, code, message in cases:
        status, _, answer = c.request("POST", url, body, headers)
        assert status == code and message in json.loads(answer)["error"], (message, answer)
    many = [good] * 17  # over max_request_images=16
    status, _, answer = c.infer(name, many)
    assert status == 413 and "at most 16" in json.loads(answer)["error"]
    status, _, answer = c.request("POST", url, b"x" * (80 * 1024), {"Content-Type": "application/octet-stream"})
    assert status == 413
    status, _, answer = c.infer("other-model", [good])
    assert status == 404 and "other-model" in json.loads(answer)["error"]

    # A chunked body over the limit (no Content-Length to check up front).
    c2 = Http(server.url)
    c2.conn.putrequest("POST", url)
    c2.conn.putheader("Transfer-Encoding", "chunked")
    c2.conn.endheaders()
    chunk = b"y" * 16384
    try:
        for _ in range(6):
            c2.conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        c2.conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert c2.conn.getresponse().status == 413

    address = (urlsplit(server.url).hostname, urlsplit(server.url).port)
    # A Content-Length the client never fills, then it hangs up: the server must simply carry on.
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(f"POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".encode() + head)
    # Garbage instead of HTTP.
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        assert b" 400 " in s.recv(100).split(b"\r\n")[0]

    status, headers, body = Http(server.url).infer(name, [good])
    assert status == 200
    metrics = _metrics(server.url)
    assert metrics['mantis_errors_total{"kind": "too_large"}'] >= 3
    assert metrics['mantis_errors_total{"kind": "bad_request"}'] >= len(cases)
    assert metrics['mantis_errors_total{"kind": "not_found"}'] >= 1
    assert not any(k.startswith("mantis_http_requests_total") and '"status": "500"' in k for k in metrics)


def test_bearer_token(onnx_bundle, bundle, samples, tmp_path):
    config = ServerConfig(onnx_bundle, token="s3cret-token")
    name = bundle.manifest.model_name
    with BackgroundServer(config) as srv:
        c = Http(srv.url)
        assert c.request("GET", "/v2/health/ready")[0] == 200  # probes stay open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            status, h, body = c.request("GET", f"/v2/models/{name}", headers=headers)
            assert status == 401 and h["WWW-Authenticate"].startswith("Bearer") and "token" in json.loads(body)["error"]
        c.headers = {"Authorization": "Bearer wrong"}
        assert c.infer(name, [samples[0][0]])[0] == 401
        assert c.request("GET", "/metrics")[0] == 401
        c.headers = {"Authorization": "Bearer s3cret-token"}
        assert c.infer(name, [samples[0][0]])[0] == 200
        client = triton.InferenceServerClient(urlsplit(srv.url).netloc)
        try:
            assert client.get_model_metadata(name, headers={"Authorization": "Bearer s3cret-token"})["name"] == name
            with pytest.raises(InferenceServerException, match="token"):
                client.get_model_metadata(name)
        finally:
            client.close()
        assert _metrics(srv.url, c.headers)['mantis_errors_total{"kind": "unauthorized"}'] == 6


def test_concurrent_clients_are_batched(onnx_bundle, bundle, samples, reference):
    config = ServerConfig(onnx_bundle, max_batch_size=16, max_queue_delay_ms=50)
    name = bundle.manifest.model_name
    n_clients, rounds = 12, 3

    def client(k: int) -> list[tuple[int, dict]]:
        c = Http(srv.url)
        answers = []
        barrier.wait()
        for r in range(rounds):
            i = (k + r) % len(samples)
            status, headers, body = c.infer(name, [samples[i][0]])
            assert status == 200, body
            answers.append((i, _outputs(headers, body)))
        return answers

    with BackgroundServer(config) as srv:
        barrier = threading.Barrier(n_clients)
        with ThreadPoolExecutor(n_clients) as pool:
            results = [a for answers in pool.map(client, range(n_clients)) for a in answers]
        metrics = _metrics(srv.url)
    for i, out in results:
        for t, task in enumerate(bundle.task_names):
            np.testing.assert_allclose(out[f"logits_{task}"][0], reference[t][i], rtol=0, atol=1e-5)
    batches = metrics["mantis_batch_size_count"]
    images = metrics["mantis_batch_size_sum"]
    assert images == n_clients * rounds
    assert metrics['mantis_batch_size_bucket{"le": "1.0"}'] < batches  # some batches held more than one image
    assert images / batches > 1.5
    assert metrics['mantis_infer_requests_total{"model": "%s"}' % name] == n_clients * rounds


def test_torch_backend_matches_its_reference(onnx_bundle, bundle, samples, reference):
    expected = _reference(bundle, samples, "torch")
    for a, b in zip(expected, reference):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)  # the two exports of one server half agree
    with BackgroundServer(ServerConfig(onnx_bundle, backend="torch")) as srv:
        status, headers, body = Http(srv.url).infer(bundle.manifest.model_name, [bs for bs, _ in samples], parameters={"top_k": 2})
        assert status == 200, body
        _check_answers(bundle, samples, expected, _outputs(headers, body), top_k=2)
