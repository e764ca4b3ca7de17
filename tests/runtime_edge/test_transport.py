"""The edge runtime's KServe v2 client: wire format, retries with back-off, clear errors."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import numpy as np
import pytest

from codec.wire import HEADER_LENGTH, WireFormatError, pack_bytes, unpack_bytes
from runtime_edge.transport import (
    KServeClient,
    MalformedResponseError,
    RetryPolicy,
    ServerRejectedError,
    ServerUnreachableError,
    build_infer_request,
    parse_infer_response,
)
from runtime_server.protocol import InferRequest, OutputTensor, encode_infer_response, parse_infer_request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_request_parses_on_the_server_side() -> None:
    streams = [b"\x00\x01abc", b"", bytes(range(256))]
    body, head_len = build_infer_request(streams, {"top_k": 2})
    req = parse_infer_request(body, str(head_len))
    assert req.inputs[0].name == "bitstream" and req.inputs[0].datatype == "BYTES"
    assert req.inputs[0].shape == [3]
    assert list(req.inputs[0].data) == streams
    assert req.parameters["top_k"] == 2


@pytest.mark.parametrize("binary", [True, False])
def test_response_round_trip(binary: bool) -> None:
    req = InferRequest(None, [], None, {"binary_data_output": binary})
    logits = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    labels = np.array([[b"circle"], [b""]], dtype=object)
    active = np.array([[True, False], [False, True]])
    outs = [OutputTensor("logits_shape", "FP32", logits), OutputTensor("labels_shape", "BYTES", labels), OutputTensor("active_tasks", "BOOL", active)]
    body, head_len = encode_infer_response("m", "1", req, outs)
    header, parsed = parse_infer_response(body, head_len)
    assert header["model_name"] == "m"
    np.testing.assert_array_equal(parsed["logits_shape"], logits)
    assert parsed["labels_shape"].tolist() == [[b"circle"], [b""]]
    np.testing.assert_array_equal(parsed["active_tasks"], active)


def test_bytes_tensor_truncation_is_an_error() -> None:
    data = pack_bytes([b"abcdef", b"xy"])
    assert unpack_bytes(data, 2) == [b"abcdef", b"xy"]
    with pytest.raises(WireFormatError, match="claims"):
        unpack_bytes(data[:-1], None)
    with pytest.raises(WireFormatError, match="3"):
        unpack_bytes(data, 3)


def test_unreachable_server_retries_a_bounded_number_of_times() -> None:
    sleeps: list[float] = []
    client = KServeClient(f"http://127.0.0.1:{_free_port()}", timeout=2, retry=RetryPolicy(retries=3, base_delay=0.1), sleep=sleeps.append)
    with pytest.raises(ServerUnreachableError, match="unreachable after 4 attempts.*ConnectionRefused"):
        client.infer("m", [b"x"])
    assert sleeps == [0.1, 0.2, 0.4]


class _Scripted(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, body, headers); records the bodies it received."""

    script: list[tuple[int, bytes, dict[str, str]]] = []
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        status, body, headers = self.script.pop(0)
        if status == 0:  # hang up without answering, as a crashing or restarting server does
            self.close_connection = True
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted_server() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("Handler", (_Scripted,), {"script": [], "received": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


def _ok_response() -> tuple[int, bytes, dict[str, str]]:
    req = InferRequest(None, [], None, {"binary_data_output": True})
    body, head_len = encode_infer_response("m", "1", req, [OutputTensor("active_tasks", "BOOL", np.array([[True]]))])
    return 200, body, {HEADER_LENGTH: str(head_len), "Content-Type": "application/octet-stream"}


def test_503_is_retried_with_back_off_then_succeeds(scripted_server: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted_server
    unavailable = (503, json.dumps({"error": "not ready"}).encode(), {"Content-Type": "application/json"})
    handler.script += [unavailable, unavailable, _ok_response()]
    sleeps: list[float] = []
    client = KServeClient(url, retry=RetryPolicy(retries=3, base_delay=0.05), sleep=sleeps.append)
    result = client.infer("m", [b"abc"])
    assert result.attempts == 3 and sleeps == [0.05, 0.1]
    assert result.outputs["active_tasks"].tolist() == [[True]]
    assert len(handler.received) == 3 and handler.received[0] == handler.received[2]


def test_dropped_connection_is_retried(scripted_server: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted_server
    handler.script += [(0, b"", {}), _ok_response()]
    sleeps: list[float] = []
    result = KServeClient(url, retry=RetryPolicy(retries=1, base_delay=0.01), sleep=sleeps.append).infer("m", [b"abc"])
    assert result.attempts == 2 and sleeps == [0.01] and len(handler.received) == 2


def test_503_forever_is_unreachable_with_the_server_reason(scripted_server: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted_server
    handler.script += [(503, json.dumps({"error": "shutting down"}).encode(), {})] * 3
    client = KServeClient(url, retry=RetryPolicy(retries=2, base_delay=0.0), sleep=lambda s: None)
    with pytest.raises(ServerUnreachableError, match="3 attempts: HTTP 503: shutting down"):
        client.infer("m", [b"abc"])


def test_rejection_is_not_retried_and_quotes_the_reason(scripted_server: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted_server
    reason = "bitstream[0]: BadMagicError: not a MANTiS bitstream"
    handler.script += [(400, json.dumps({"error": reason, "kind": "codec"}).encode(), {"Content-Type": "application/json"})]
    client = KServeClient(url, retry=RetryPolicy(retries=3), sleep=lambda s: pytest.fail("must not retry a 400"))
    with pytest.raises(ServerRejectedError) as info:
        client.infer("m", [b"junk"])
    assert info.value.status == 400 and info.value.reason == reason
    assert reason in str(info.value)


def test_garbled_answer_is_a_protocol_error(scripted_server: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted_server
    handler.script += [(200, b"\x00not json", {"Content-Type": "application/json"})]
    with pytest.raises(MalformedResponseError, match="not JSON"):
        KServeClient(url).infer("m", [b"x"])


def test_read_timeout_is_reported_without_retry() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the connection at the kernel level, never answers
        client = KServeClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3, sleep=lambda s: pytest.fail("no retry"))
        with pytest.raises(ServerUnreachableError, match="no answer within 0.3 s"):
            client.infer("m", [b"x"])
