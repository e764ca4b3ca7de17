"""serve.py's KServe v2 gRPC endpoint and compact stream on loopback with a real exported bundle: a standard
client (tritonclient.grpc: unary, streaming, metadata, auth), every error kind's gRPC code, small answers
over HTTP and gRPC, the compact stream's round trip and refusals, and the edge runtime's clients."""

from __future__ import annotations

import json
import queue
import socket
import time
from urllib.parse import urlsplit

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

import codec
from codec.stream import decode_answer, encode_request
from codec.wire import ERRORS, HEADER_LENGTH, pack_bytes
from runtime_edge.predict import request_predictions
from runtime_edge.preprocess import preprocess
from runtime_edge.transport import RefusedError, ResponseTooLargeError, RetryPolicy, ServerUnreachableError, connect
from runtime_edge.transport.grpc import GrpcClient
from runtime_edge.transport.http import KServeClient
from runtime_edge.transport.stream import StreamClient, frame
from runtime_server.dataplane import ServerConfig
from runtime_server.http_frontend import BackgroundServer
from runtime_server.client_budget import ClientErrorLimits
from runtime_server.grpc_frontend import GrpcFrontend
from tests.tools.raw_websocket import open_raw_stream, read_frame
from training.data.synthetic import SyntheticMultiTask

NUM_SAMPLES = 8
TOKEN = "grpc-s3cret"


@pytest.fixture(scope="module")
def samples(bundle):
    """Real bitstreams of held-out synthetic images through the bundle's ONNX edge client, and their logits
    from codec decode + the server half run directly."""
    edge = ort.InferenceSession(str(bundle.path(bundle.manifest.edge.file)), providers=["CPUExecutionProvider"])
    server = ort.InferenceSession(str(bundle.path("server.onnx")), providers=["CPUExecutionProvider"])
    names = [o.name for o in bundle.manifest.edge.outputs]
    h, _ = bundle.manifest.preprocessing.input_size
    data = SyntheticMultiTask(NUM_SAMPLES, image_size=int(h), seed=11, split="test")
    out = []
    for i in range(NUM_SAMPLES):
        latent, task_logits = edge.run(names, {edge.get_inputs()[0].name: preprocess(data.pil(i), bundle.manifest.preprocessing)})
        mask = bundle.task_mask(task_logits[0])
        bs = codec.encode_latent(latent[0], mask, bundle.tables)
        logits = server.run([f"logits_{t}" for t in bundle.task_names], {"latent": codec.decode_latent(bs, bundle.tables)[0][None]})
        out.append((bs, mask, [l[0] for l in logits]))
    return out


@pytest.fixture(scope="module")
def server(onnx_bundle):
    """One server with a token: HTTP (and the compact stream) plus gRPC."""
    config = ServerConfig(
        onnx_bundle,
        max_batch_size=8,
        max_queue_delay_ms=5,
        max_request_bytes=16 * 1024,
        max_request_images=4,
        token=TOKEN,
        client_errors=ClientErrorLimits(burst=0),
    )
    srv = BackgroundServer(config)
    srv.grpc = GrpcFrontend(srv.plane, "127.0.0.1", 0)
    with srv:
        yield srv


AUTH = {"authorization": f"Bearer {TOKEN}"}


def _expected_index(bundle, sample, k: int) -> np.ndarray:
    _, mask, logits = sample
    kk = min(k, max(len(bundle.labels(t)) for t in bundle.task_names))
    out = np.full((len(bundle.task_names), kk), -1)
    for t, task_logits in enumerate(logits):
        if mask >> t & 1:
            order = np.argsort(-task_logits, kind="stable")[: min(kk, len(task_logits))]
            out[t, : len(order)] = order
    return out


def _metrics(url: str) -> dict[str, float]:
    import urllib.request

    req = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[s.name + (json.dumps(s.labels, sort_keys=True) if s.labels else "")] = s.value
    return values


def _triton_input(bitstreams: list[bytes]) -> tgrpc.InferInput:
    inp = tgrpc.InferInput("bitstream", [len(bitstreams)], "BYTES")
    inp.set_data_from_numpy(np.array(bitstreams, dtype=np.object_))
    return inp


def test_tritonclient_grpc_unary_and_metadata(server, bundle, samples):
    name = bundle.manifest.model_name
    client = tgrpc.InferenceServerClient(urlsplit(server.grpc.url).netloc)
    try:
        assert client.is_server_live() and client.is_server_ready()  # probes need no token
        assert client.is_model_ready(name, headers=AUTH)
        meta = client.get_server_metadata(headers=AUTH)
        assert meta.name == "mantis" and "binary_tensor_data" in meta.extensions
        model = client.get_model_metadata(name, headers=AUTH)
        assert model.name == name and list(model.versions) == ["1"]
        assert [(i.name, i.datatype, list(i.shape)) for i in model.inputs] == [("bitstream", "BYTES", [-1])]
        assert "top" in [o.name for o in model.outputs]
        outputs = [tgrpc.InferRequestedOutput(f"logits_{t}") for t in bundle.task_names]
        outputs += [tgrpc.InferRequestedOutput("active_tasks"), tgrpc.InferRequestedOutput("top")]
        result = client.infer(name, [_triton_input([s[0] for s in samples[:4]])], outputs=outputs, parameters={"top_k": 2}, headers=AUTH)
        for i, sample in enumerate(samples[:4]):
            for t, task in enumerate(bundle.task_names):
                np.testing.assert_allclose(result.as_numpy(f"logits_{task}")[i], sample[2][t], rtol=0, atol=1e-5)
            assert result.as_numpy("active_tasks")[i].tolist() == [bool(sample[1] >> t & 1) for t in range(len(bundle.task_names))]
            np.testing.assert_array_equal(result.as_numpy("top")[i], _expected_index(bundle, sample, 2))
        # no outputs asked for: all of them, labels included
        full = client.infer(name, [_triton_input([samples[0][0]])], headers=AUTH)
        assert full.as_numpy(f"labels_{bundle.task_names[0]}").shape[0] == 1
    finally:
        client.close()


def test_tritonclient_grpc_streaming(server, bundle, samples):
    name = bundle.manifest.model_name
    answers: queue.Queue = queue.Queue()
    client = tgrpc.InferenceServerClient(urlsplit(server.grpc.url).netloc)
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=AUTH)
        for i, sample in enumerate(samples):
            client.async_stream_infer(name, [_triton_input([sample[0]])], request_id=str(i), outputs=[tgrpc.InferRequestedOutput("top")])
        client.async_stream_infer(name, [_triton_input([b"MT" + bytes(30)])], request_id="bad")
        got = {}
        for _ in range(len(samples) + 1):
            result, error = answers.get(timeout=30)
            if error is not None:
                got["bad"] = error
            else:
                got[result.get_response().id] = result.as_numpy("top")[0]
        client.stop_stream()
    finally:
        client.close()
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(got[str(i)], _expected_index(bundle, sample, 1))
    assert "UnsupportedVersionError" in str(got["bad"])  # a refusal on the stream is an answer; the stream went on


def _code(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(InferenceServerException) as info:
        fn()
    return info.value.status(), info.value.message()


def test_every_error_kind_maps_to_its_grpc_code(server, bundle, samples):
    name = bundle.manifest.model_name
    good = samples[0][0]
    client = tgrpc.InferenceServerClient(urlsplit(server.grpc.url).netloc)
    channel_target = urlsplit(server.grpc.url).netloc
    state = server.plane
    try:

        def infer(bitstreams, model=name, headers=AUTH, **kw):
            return lambda: client.infer(model, [_triton_input(bitstreams)], headers=headers, **kw)

        channels, height, width = bundle.latent_shape
        cases = {
            "unauthorized": infer([good], headers={"authorization": "Bearer wrong"}),
            "bad_request": infer([good], parameters={"top_k": 0}),
            "codec": infer([good[:-3]]),
            "not_found": infer([good], model="nope"),
            "table_mismatch": infer([good[:2] + bytes([good[2] ^ 0xFF]) + good[3:]]),
            "model_mismatch": infer([codec.encode_latent(np.zeros((channels, height + 1, width), np.float32), 1, bundle.tables)]),
            "too_large": infer([good] * 5),  # over max_request_images=4
            "method": lambda: client.get_model_config(name, headers=AUTH),  # an RPC serve.py does not serve
        }
        for kind, call in cases.items():
            status, message = _code(call)
            assert status == f"StatusCode.{ERRORS[kind].grpc}", (kind, status, message)
        status, message = _code(infer([good] * 4, parameters={"pad": "x" * 20000}))  # message over the 16 KiB limit
        assert status == "StatusCode.RESOURCE_EXHAUSTED"
        # starting or shutting down
        state.ready = False
        try:
            assert _code(infer([good]))[0] == "StatusCode.UNAVAILABLE"
        finally:
            state.ready = True
        # a failing backend is the server's fault
        batcher = state.model.batcher
        original = batcher.run_batch
        batcher.run_batch = lambda x: (_ for _ in ()).throw(RuntimeError("device lost"))
        try:
            status, message = _code(infer([good]))
            assert status == "StatusCode.INTERNAL" and "device lost" in message
        finally:
            batcher.run_batch = original
        # not HTTP/2 at all, then a hang-up: the server carries on
        with socket.create_connection(("127.0.0.1", server.grpc.bound_port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4)
        assert client.infer(name, [_triton_input([good])], headers=AUTH).as_numpy("active_tasks").shape[0] == 1
        # A stream without the token is refused at once.
        with grpc.insecure_channel(channel_target) as channel:
            from codec import kserve_grpc as pb

            m = pb.METHODS["ModelStreamInfer"]
            call = channel.stream_stream(
                m.path, request_serializer=m.request.SerializeToString, response_deserializer=m.response.FromString
            )
            with pytest.raises(grpc.RpcError) as info:
                list(call(iter([pb.ModelInferRequest(model_name=name)]), timeout=10))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        client.close()
    metrics = _metrics(server.url)
    assert metrics['mantis_grpc_requests_total{"code": "UNAUTHENTICATED", "method": "ModelInfer"}'] >= 1
    assert metrics['mantis_errors_total{"kind": "codec"}'] >= 1
    assert metrics['mantis_errors_total{"kind": "backend"}'] >= 1


def test_edge_grpc_client_stream_and_unary(server, bundle, samples):
    name = bundle.manifest.model_name
    tasks = bundle.task_names
    labels = {t: bundle.labels(t) for t in tasks}
    for stream in (True, False):
        with GrpcClient(server.grpc.url, token=TOKEN, stream=stream) as client:
            for sample in samples[:3]:
                [pred], result = request_predictions(client, name, [sample[0]], tasks, labels)
                assert pred.active_tasks == [t for i, t in enumerate(tasks) if sample[1] >> i & 1]
                for t, task in enumerate(tasks):
                    if task in pred.tasks:
                        assert pred.tasks[task].label == labels[task][int(np.argmax(sample[2][t]))]
                        assert pred.tasks[task].probabilities is None
            with pytest.raises(RefusedError) as info:
                client.infer(name, [sample[0][:-2]])
            assert info.value.kind.name == "codec" and info.value.status == 400 and "bitstream[0]" in info.value.reason
            # the stream survives a refusal
            [pred], _ = request_predictions(client, name, [samples[0][0]], tasks, labels, top_k=2, scores=True)
            assert all(len(p.probabilities) == len(p.labels) for p in pred.tasks.values())
    with GrpcClient(server.grpc.url, token="wrong") as client:
        with pytest.raises(RefusedError, match="unauthorized"):
            client.infer(name, [samples[0][0]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["grpc", "ws"])
def test_edge_clients_retry_a_bounded_number_of_times(scheme):
    sleeps: list[float] = []
    url = f"{scheme}://127.0.0.1:{_free_port()}"
    client = connect(url, timeout=2, retry=RetryPolicy(retries=2, base_delay=0.1), label_counts=[2])
    client._sleep = sleeps.append
    with client, pytest.raises(ServerUnreachableError, match="unreachable after 3 attempts"):
        client.infer("m", [b"x"])
    assert sleeps == [0.1, 0.2]


@pytest.mark.parametrize("scheme", ["grpc", "ws"])
def test_edge_clients_have_a_deadline(scheme):
    """A server that accepts and never answers: the request fails after the timeout, without retrying."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"{scheme}://127.0.0.1:{listener.getsockname()[1]}"
        client = connect(url, timeout=0.5, retry=RetryPolicy(retries=3), label_counts=[2])
        client._sleep = lambda s: pytest.fail("a deadline is not retried")
        start = time.monotonic()
        with client, pytest.raises(ServerUnreachableError, match="no answer within 0.5 s"):
            client.infer("m", [b"x"])
        assert time.monotonic() - start < 5


def test_edge_clients_bound_the_answer_size(server, bundle, samples):
    name = bundle.manifest.model_name
    for stream in (True, False):
        with GrpcClient(server.grpc.url, token=TOKEN, stream=stream, max_response_bytes=200, retry=RetryPolicy(retries=0)) as client:
            client.infer(name, [samples[0][0]], outputs=["top"])  # a small answer fits
            with pytest.raises(ResponseTooLargeError, match="larger than the 200 bytes this client reads"):
                client.infer(name, [samples[0][0]] * 4)  # every output of four images does not
    counts = [len(bundle.labels(t)) for t in bundle.task_names]
    with StreamClient(
        f"ws://{urlsplit(server.url).netloc}", counts, token=TOKEN, max_response_bytes=4, retry=RetryPolicy(retries=0)
    ) as client:
        with pytest.raises(ResponseTooLargeError, match="larger than the 4 bytes this client reads"):
            client.infer(name, [samples[0][0]] * 4)


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown scheme 'ftp'.*http://, https://, grpc://, ws://"):
        connect("ftp://127.0.0.1:1")
    with pytest.raises(ValueError, match="label counts"):
        connect("ws://127.0.0.1:1")


def test_small_answers_over_http(server, bundle, samples):
    name = bundle.manifest.model_name
    tasks = bundle.task_names
    labels = {t: bundle.labels(t) for t in tasks}
    with KServeClient(server.url, token=TOKEN) as client:
        full = client.infer(name, [samples[0][0]])
        [pred], small = request_predictions(client, name, [samples[0][0]], tasks, labels)
        [scored], with_logits = request_predictions(client, name, [samples[0][0]], tasks, labels, scores=True)
    assert set(small.outputs) == {"top"}
    assert set(with_logits.outputs) == {"top", *(f"logits_{t}" for t in tasks)}
    assert small.response_bytes < with_logits.response_bytes < full.response_bytes
    np.testing.assert_array_equal(small.outputs["top"][0], _expected_index(bundle, samples[0], 1))
    assert scored.active_tasks == pred.active_tasks and all(p.probabilities for p in scored.tasks.values())


def test_compact_stream_round_trip(server, bundle, samples):
    name = bundle.manifest.model_name
    tasks = bundle.task_names
    labels = {t: bundle.labels(t) for t in tasks}
    counts = [len(labels[t]) for t in tasks]
    with StreamClient(f"ws://{urlsplit(server.url).netloc}", counts, token=TOKEN) as client:
        for sample in samples:
            [pred], result = request_predictions(client, name, [sample[0]], tasks, labels)
            np.testing.assert_array_equal(result.outputs["top"][0], _expected_index(bundle, sample, 1))
            assert result.request_bytes == len(sample[0]) + 3  # id, top_k, length: one byte each here
        preds, result = request_predictions(client, name, [s[0] for s in samples[:4]], tasks, labels, top_k=3)
        for i, sample in enumerate(samples[:4]):
            np.testing.assert_array_equal(result.outputs["top"][i], _expected_index(bundle, sample, 3))
        with pytest.raises(RefusedError) as info:
            client.infer(name, [samples[0][0][:-3]])
        assert info.value.kind.name == "codec" and "bitstream[0]" in info.value.reason
        with pytest.raises(RefusedError) as info:
            client.infer(name, [samples[0][0]] * 5)
        assert info.value.kind.name == "too_large" and "more than 4" in info.value.reason
        with pytest.raises(ValueError, match="top"):
            request_predictions(client, name, [samples[0][0]], tasks, labels, scores=True)
        [pred], _ = request_predictions(client, name, [samples[1][0]], tasks, labels)  # still open
    with StreamClient(f"ws://{urlsplit(server.url).netloc}", counts, token="wrong") as client:
        with pytest.raises(RefusedError) as info:
            client.infer(name, [samples[0][0]])
        assert info.value.status == 401
    with StreamClient(f"ws://{urlsplit(server.url).netloc}", counts, token=TOKEN) as client:
        with pytest.raises(RefusedError) as info:
            client.infer("nope", [samples[0][0]])
        assert info.value.status == 404


def test_compact_stream_hostile_messages(server, bundle, samples):
    name = bundle.manifest.model_name
    counts = [len(bundle.labels(t)) for t in bundle.task_names]
    sock = open_raw_stream(f"{server.url}/v2/models/{name}/stream", TOKEN)
    try:
        for payload, kind in [
            (b"", "bad_request"),
            (b"\x05", "bad_request"),
            (b"\x05\x01\x40abc", "bad_request"),
            (b"\x00\x01\x01a", "bad_request"),
            (b"\xff" * 12, "bad_request"),
        ]:
            sock.sendall(frame(0x2, payload))
            opcode, data = read_frame(sock)
            answer = decode_answer(data, 1, 1, counts)
            assert opcode == 0x2 and answer.error is not None and answer.error.name == kind, (payload, answer)
        sock.sendall(frame(0x1, b"hello"))
        assert decode_answer(read_frame(sock)[1], 1, 1, counts).error.name == "bad_request"
        sock.sendall(frame(0x2, encode_request(7, [samples[0][0]])))
        answer = decode_answer(read_frame(sock)[1], 1, 1, counts)
        assert answer.id == 7 and answer.error is None
        sock.sendall(frame(0x2, b"\x01" * (20 * 1024)))  # over the 16 KiB limit: closed with 1009
        opcode, data = read_frame(sock)
        assert opcode == 0x8 and int.from_bytes(data[:2], "big") == 1009
    finally:
        sock.close()
    metrics = _metrics(server.url)
    assert metrics['mantis_stream_messages_total{"protocol": "compact", "status": "ok"}'] >= 1
    assert metrics['mantis_errors_total{"kind": "too_large"}'] >= 1
    assert not any('"status": "500"' in k for k in metrics if k.startswith("mantis_http_requests_total"))


def test_http_response_binary_requested_outputs(server, bundle, samples):
    """Over raw HTTP, asking for `top` alone gets a few dozen bytes of tensor data back."""
    import http.client

    name = bundle.manifest.model_name
    payload = pack_bytes([samples[0][0]])
    head = json.dumps(
        {
            "inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(payload)}}],
            "outputs": [{"name": "top", "parameters": {"binary_data": True}}],
        }
    ).encode()
    conn = http.client.HTTPConnection(urlsplit(server.url).hostname, urlsplit(server.url).port, timeout=10)
    conn.request("POST", f"/v2/models/{name}/infer", head + payload, {HEADER_LENGTH: str(len(head)), "Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200
    json_len = int(resp.getheader(HEADER_LENGTH))
    assert len(body) - json_len == 4 * len(bundle.task_names)  # one INT32 per task at top-1
