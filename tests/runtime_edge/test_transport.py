"""The edge runtime's transports (runtime_edge/transport/): the HTTP client's wire format, retries with back-off
and clear errors; one response cap that the HTTP, gRPC and stream clients all honour; the stream's handshake
and route; a missing gRPC install; and a package without import circles."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import numpy as np
import pytest

from codec.wire import GRPC_SERVICE, HEADER_LENGTH, LABEL_INDEX_OUTPUT, STREAM_PATH, WireFormatError, pack_bytes, unpack_bytes
from runtime_edge.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    MalformedResponseError,
    MissingTransportError,
    RefusedError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerRejectedError,
    ServerUnreachableError,
    connect,
)
from runtime_edge.transport.http import KServeClient, build_infer_request, parse_infer_response
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
    outs = [
        OutputTensor("logits_shape", "FP32", logits),
        OutputTensor("labels_shape", "BYTES", labels),
        OutputTensor("active_tasks", "BOOL", active),
    ]
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


# -- one response cap, honoured by every transport ----------------------------------------------------------------

CAP = 4096
BIG = 64 * 1024  # what the hostile servers below answer: 16 times the cap


def test_connect_gives_every_transport_the_same_cap() -> None:
    for url in ("http://127.0.0.1:1", "127.0.0.1:1", "grpc://127.0.0.1:1", "ws://127.0.0.1:1"):
        with connect(url, label_counts=[2]) as default, connect(url, label_counts=[2], max_response_bytes=CAP) as capped:
            assert default.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES, url
            assert capped.max_response_bytes == CAP, url


def test_http_answer_over_the_cap_is_refused(scripted_server: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted_server
    handler.script += [(200, bytes(BIG), {"Content-Type": "application/octet-stream"})]
    with connect(url, max_response_bytes=CAP, retry=RetryPolicy(retries=0)) as client:
        with pytest.raises(ResponseTooLargeError, match=f"server {url}: the answer is larger than the {CAP} bytes this client reads"):
            client.infer("m", [b"x"])


@pytest.fixture
def oversized_grpc_server() -> Iterator[str]:
    """A gRPC server whose every answer (unary and on the stream) is a valid ModelInferResponse of ``BIG`` bytes."""
    import grpc

    from codec import kserve_grpc as pb

    def response() -> object:
        msg = pb.ModelInferResponse(model_name="m")
        msg.outputs.add(name=LABEL_INDEX_OUTPUT, datatype="INT32", shape=[1, 1, BIG // 4])
        msg.raw_output_contents.append(bytes(BIG))
        return msg

    def stream(requests: Iterator[object], context: object) -> Iterator[object]:
        for _ in requests:
            yield pb.ModelStreamInferResponse(infer_response=response())

    unary, bidi = pb.METHODS["ModelInfer"], pb.METHODS["ModelStreamInfer"]
    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            lambda request, context: response(), unary.request.FromString, unary.response.SerializeToString
        ),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream, bidi.request.FromString, bidi.response.SerializeToString),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"grpc://127.0.0.1:{port}"
    server.stop(0)


def test_grpc_answer_over_the_cap_is_refused(oversized_grpc_server: str) -> None:
    from runtime_edge.transport.grpc import GrpcClient

    url = oversized_grpc_server
    with connect(url, max_response_bytes=BIG * 2, retry=RetryPolicy(retries=0)) as client:
        assert client.infer("m", [b"x"]).outputs[LABEL_INDEX_OUTPUT].size == BIG // 4  # under the cap: read
    for stream in (True, False):
        with GrpcClient(url, max_response_bytes=CAP, stream=stream, retry=RetryPolicy(retries=0)) as client:
            with pytest.raises(ResponseTooLargeError, match=f"server {url}: the answer is larger than the {CAP} bytes this client reads"):
                client.infer("m", [b"x"])
    with connect(url, max_response_bytes=CAP, retry=RetryPolicy(retries=0)) as client:
        with pytest.raises(ResponseTooLargeError, match=f"larger than the {CAP} bytes"):
            client.infer("m", [b"x"])


class _StreamStub:
    """A compact-stream server on a bare socket: answers the WebSocket handshake with ``reply`` (a function of
    the handshake's accept key), then runs ``after`` on the socket; records the request line and every byte
    the client sent after its handshake."""

    def __init__(self, reply: Callable[[str], bytes], after: Callable[[socket.socket], None] | None = None) -> None:
        self.reply, self.after = reply, after
        self.request_line = ""
        self.after_handshake = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}"
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.request_line = lines[0]
            key = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
            conn.sendall(self.reply(accept))
            if self.after is not None:
                self.after(conn)
            received = rest
            try:
                while chunk := conn.recv(4096):
                    received += chunk
            except OSError:
                pass
            self.after_handshake = received
        self.done.set()

    def close(self) -> None:
        self.listener.close()


def _switching(accept: str) -> bytes:
    return (
        f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()


def _big_frame(conn: socket.socket) -> None:
    conn.recv(4096)  # the request frame
    conn.sendall(bytes([0x82, 127]) + BIG.to_bytes(8, "big") + bytes(BIG))


def test_stream_answer_over_the_cap_is_refused() -> None:
    stub = _StreamStub(_switching, _big_frame)
    try:
        with connect(stub.url, label_counts=[2], max_response_bytes=CAP, retry=RetryPolicy(retries=0)) as client:
            with pytest.raises(
                ResponseTooLargeError, match=f"server {stub.url}: the answer is larger than the {CAP} bytes this client reads"
            ):
                client.infer("m", [b"x"])
    finally:
        stub.close()


@pytest.mark.parametrize("status", [401, 404])
def test_stream_sends_no_close_frame_after_a_refused_handshake(status: int) -> None:
    """After a refused handshake the connection still speaks HTTP: a WebSocket close frame there reached the
    server as a malformed HTTP request."""
    body = json.dumps({"error": "refused here"}).encode()
    stub = _StreamStub(lambda accept: f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        client = connect(stub.url, label_counts=[2], retry=RetryPolicy(retries=0))
        with pytest.raises(RefusedError, match="refused here"):
            client.infer("m", [b"x"])
        client.close()
        assert stub.done.wait(5)
        assert stub.after_handshake == b""
    finally:
        stub.close()


@pytest.mark.parametrize(
    "route", [STREAM_PATH.replace("{model}", "m"), "/v2/models/m/versions/1/stream", "/proxy" + STREAM_PATH.replace("{model}", "m")]
)
def test_stream_route_pasted_as_the_url(route: str) -> None:
    """``ws://HOST:PORT/v2/models/M/stream`` (the route codec/STREAM.md documents) reaches that route."""
    stub = _StreamStub(lambda accept: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    try:
        client = connect(stub.url + route, label_counts=[2], retry=RetryPolicy(retries=0))
        base = stub.url + route.partition("/v2/")[0]
        with pytest.raises(ValueError, match=f"{route} is model 'm'.s stream, the request is for model 'other': give {base} "):
            client.infer("other", [b"x"])
        with pytest.raises(RefusedError):
            client.infer("m", [b"x"])
        assert stub.done.wait(5)
        assert stub.request_line == f"GET {route} HTTP/1.1"
    finally:
        stub.close()


def test_grpc_without_its_packages_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        m for m in sys.modules if m == "grpc" or m.startswith("grpc.") or m in ("runtime_edge.transport.grpc", "codec.kserve_grpc")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "grpc", None)  # as in a venv with mantis-edge but not its grpc extra
    with pytest.raises(MissingTransportError, match=r"grpc:// needs the gRPC transport's packages .*pip install 'mantis-edge\[grpc\]'"):
        connect("grpc://127.0.0.1:1")
    with connect("http://127.0.0.1:1") as client:  # the other transports need nothing more
        assert client.url == "http://127.0.0.1:1"
