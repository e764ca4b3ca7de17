"""KServe v2 message parsing/encoding and the dynamic batcher, without a model.

Requests are built and responses read with ``tritonclient.http`` (the reference client implementation),
so the wire format is checked against a standard KServe v2 client, not against itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading

import numpy as np
import pytest
import tritonclient.http as triton

from runtime_server.batching import BackendError, BatcherClosedError, DynamicBatcher
from runtime_server.metrics import ServerMetrics
from codec.wire import ProtocolError, WireFormatError, pack_bytes, unpack_bytes
from runtime_server.protocol import InferRequest, OutputTensor, encode_infer_response, parse_infer_request


def _triton_body(elements: list[bytes], binary: bool, outputs=None, parameters=None) -> tuple[bytes, str | None]:
    inp = triton.InferInput("bitstream", [len(elements)], "BYTES")
    arr = np.empty(len(elements), dtype=np.object_)
    arr[:] = elements
    inp.set_data_from_numpy(arr, binary_data=binary)
    body, json_size = triton.InferenceServerClient.generate_request_body([inp], outputs=outputs, parameters=parameters)
    return body, None if json_size is None else str(json_size)


def test_bytes_tensor_round_trip_and_errors():
    elements = [b"", b"\x00\xff" * 100, bytes(range(256))]
    packed = pack_bytes(elements)
    assert packed[:4] == b"\x00\x00\x00\x00" and struct.unpack_from("<I", packed, 4)[0] == 200
    assert unpack_bytes(packed, 3, "x") == elements
    with pytest.raises(WireFormatError, match="holds 3 elements, shape says 4"):
        unpack_bytes(packed, 4, "x")
    with pytest.raises(WireFormatError, match="after its 2 elements"):
        unpack_bytes(packed, 2, "x")
    with pytest.raises(WireFormatError, match="claims 200 bytes"):
        unpack_bytes(packed[:50], 3, "x")
    with pytest.raises(WireFormatError, match="truncated 4-byte length"):
        unpack_bytes(packed[:6], 3, "x")


def test_parse_binary_request_from_tritonclient():
    elements = [b"\x01\x02\x03", b"\xfe" * 37]
    out = triton.InferRequestedOutput("labels_a", binary_data=False)
    body, header = _triton_body(elements, binary=True, outputs=[out], parameters={"top_k": 2})
    req = parse_infer_request(body, header)
    assert [i.name for i in req.inputs] == ["bitstream"]
    assert req.inputs[0].datatype == "BYTES" and req.inputs[0].shape == [2]
    assert req.inputs[0].data == elements
    assert req.parameters["top_k"] == 2
    assert [o.name for o in req.outputs] == ["labels_a"]
    assert req.binary_output("labels_a") is False


def test_parse_json_request_utf8_and_base64():
    body, header = _triton_body([b"hello", "h\u00e9".encode()], binary=False)
    assert header is None
    req = parse_infer_request(body, header)
    assert req.inputs[0].data == [b"hello", "h\u00e9".encode()]
    assert req.outputs is None and req.binary_output("anything") is True  # tritonclient asks for binary outputs

    raw = [b"\x00\x80\xff", b"\x10"]
    doc = {
        "inputs": [
            {
                "name": "bitstream",
                "datatype": "BYTES",
                "shape": [1, 2],
                "parameters": {"content_type": "base64"},
                "data": [[base64.b64encode(r).decode() for r in raw]],
            }
        ]
    }
    req = parse_infer_request(json.dumps(doc).encode(), None)
    assert req.inputs[0].data == raw and req.binary_output("x") is False


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"inputs": []}', None, "non-empty list"),
        (b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1]}]}', None, "neither 'data'"),
        (b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}', None, "1 values for shape"),
        (b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [-1], "data": []}]}', None, "non-negative"),
        (b'{"inputs": [{"name": "b", "datatype": "FLOAT", "shape": [1], "data": [1]}]}', None, "unknown datatype"),
        (b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1], "data": [3]}]}', None, "must be a JSON string"),
        (
            b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1], "parameters": {"content_type": "base64"}, "data": ["%%"]}]}',
            None,
            "not valid base64",
        ),
        (
            b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}}]}',
            None,
            "no Inference-Header-Content-Length",
        ),
        (
            b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}}]}',
            "abc",
            "must be an integer",
        ),
        (b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}}]}', "9999", "body has"),
        (b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1], "data": ["x"]}], "outputs": 3}', None, "'outputs' must be a list"),
    ],
)
def test_malformed_requests_are_400(body, header, message):
    with pytest.raises(ProtocolError, match=message) as info:
        parse_infer_request(body, header)
    assert info.value.status == 400


def test_binary_size_mismatches():
    head = b'{"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 8}}]}'
    payload = pack_bytes([b"abcd"])
    parse_infer_request(head + payload, str(len(head)))
    with pytest.raises(ProtocolError, match="exceeds the 7 bytes left"):
        parse_infer_request(head + payload[:-1], str(len(head)))
    with pytest.raises(ProtocolError, match="3 bytes that no input"):
        parse_infer_request(head + payload + b"xyz", str(len(head)))


def test_response_readable_by_tritonclient():
    logits = np.array([[0.5, -1.25, 3.0], [1e-7, 2.0, -0.0]], dtype=np.float32)
    labels = np.array([[b"cat", b"dog"], [b"", b""]], dtype=object)
    active = np.array([[True, False], [False, True]])
    outputs = [
        OutputTensor("logits_a", "FP32", logits),
        OutputTensor("labels_a", "BYTES", labels),
        OutputTensor("active_tasks", "BOOL", active),
    ]
    for binary in (False, True):
        req = InferRequest("req-7", [], None, {"binary_data_output": binary})
        body, header_length = encode_infer_response("m", "1", req, outputs)
        assert (header_length is None) == (not binary)
        result = triton.InferenceServerClient.parse_response_body(body, header_length=header_length)
        np.testing.assert_array_equal(result.as_numpy("logits_a"), logits)
        got_labels = result.as_numpy("labels_a")
        assert got_labels.shape == (2, 2)
        assert [bytes(x) if isinstance(x, bytes) else x.encode() for x in got_labels.reshape(-1)] == [b"cat", b"dog", b"", b""]
        np.testing.assert_array_equal(result.as_numpy("active_tasks"), active)
        response = result.get_response()
        assert response["model_name"] == "m" and response["id"] == "req-7"


class _RecordingBackend:
    """A deterministic stand-in computation that records the batch sizes it was called with."""

    def __init__(self, fail_on: int | None = None, delay: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.fail_on = fail_on
        self.gate = delay

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        self.sizes.append(x.shape[0])
        if self.fail_on is not None and x.shape[0] == self.fail_on:
            raise RuntimeError("boom")
        flat = x.reshape(x.shape[0], -1)
        return [flat.sum(axis=1, keepdims=True), flat[:, :2] * 2]


def _latents(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2, 2, 2)).astype(np.float32)


def test_batcher_forms_batches_and_returns_each_request_its_rows():
    async def scenario():
        backend = _RecordingBackend()
        batcher = DynamicBatcher(backend, max_batch_size=8, max_queue_delay=0.05, metrics=ServerMetrics(8))
        batcher.start()
        inputs = [_latents(n, s) for s, n in enumerate([1, 2, 1, 3, 1, 5, 20])]
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.stop()
        return backend, inputs, results

    backend, inputs, results = asyncio.run(scenario())
    for x, (sums, firsts) in zip(inputs, results):
        flat = x.reshape(x.shape[0], -1)
        np.testing.assert_allclose(sums[:, 0], flat.sum(axis=1), rtol=1e-6)
        np.testing.assert_array_equal(firsts, flat[:, :2] * 2)
    assert max(backend.sizes) <= 8 and sum(backend.sizes) == 33
    assert len(backend.sizes) < 7  # concurrent requests shared batches


def test_batcher_backend_failure_reaches_callers_and_loop_survives():
    async def scenario():
        backend = _RecordingBackend(fail_on=3)
        batcher = DynamicBatcher(backend, max_batch_size=4, max_queue_delay=0.0, metrics=ServerMetrics(4))
        batcher.start()
        with pytest.raises(BackendError, match="boom"):
            await batcher.submit(_latents(3, 0))
        ok = await batcher.submit(_latents(2, 1))
        await batcher.stop()
        with pytest.raises(BatcherClosedError):
            await batcher.submit(_latents(1, 2))
        return ok

    sums, _ = asyncio.run(scenario())
    assert sums.shape == (2, 1)


def test_batcher_stop_finishes_queued_work():
    async def scenario():
        gate = threading.Event()
        backend = _RecordingBackend(delay=gate)
        batcher = DynamicBatcher(backend, max_batch_size=2, max_queue_delay=0.0, metrics=ServerMetrics(2))
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(_latents(1, s))) for s in range(5)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        gate.set()
        await stopping
        return [p.result() for p in pending], backend.sizes

    results, sizes = asyncio.run(scenario())
    assert len(results) == 5 and sum(sizes) == 5
