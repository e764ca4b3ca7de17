"""Hostile traffic on the gRPC port and the compact stream: client mistakes are client errors (never
INTERNAL/UNKNOWN or a traceback), error messages repeat little of what the client sent, refused requests of
the largest size hold no memory, clients that leave or stop reading cost neither tracebacks nor the
shutdown, and hypothesis fuzzers over whole messages and frame sequences. Also the health probes beside
the client budget, a second gRPC server on a port in use, JSON errors for malformed HTTP and serve.py's help."""

from __future__ import annotations

import gc
import http.client
import json
import logging
import os
import queue
import re
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.stream import decode_answer, encode_request, get_varint
from codec.wire import BINARY_DATA_SIZE, ERROR_KIND_PARAMETER, ERRORS, HEADER_LENGTH, kind_for_stream_code, pack_bytes
from codec import kserve_grpc as pb
from runtime_edge.transport.stream import frame
from runtime_server import serve
from runtime_server.client_budget import ClientErrorLimits
from runtime_server.connection import LOG_BURST, ConnectionLimits
from runtime_server.dataplane import ServerConfig
from runtime_server.grpc_frontend import GrpcFrontend
from runtime_server.http_frontend import BackgroundServer
from tests.tools.raw_websocket import open_raw_stream, read_frame

MAX_BYTES = 1 << 20
LIMITS = ConnectionLimits(header_timeout=2.0, body_timeout=2.0, idle_timeout=5.0, lingering_time=0.5)
CLIENT_KINDS = {name for name, kind in ERRORS.items() if 400 <= kind.http < 500}


@pytest.fixture(scope="module")
def server(onnx_bundle):
    srv = BackgroundServer(
        ServerConfig(onnx_bundle, max_batch_size=8, max_request_bytes=MAX_BYTES, limits=LIMITS, client_errors=ClientErrorLimits(burst=0))
    )
    srv.grpc = GrpcFrontend(srv.plane, "127.0.0.1", 0)
    with srv:
        yield srv


@pytest.fixture
def no_tracebacks(caplog):
    """Fails the test if the server logged an error or a traceback while it ran."""
    caplog.set_level(logging.INFO)
    yield
    gc.collect()  # "Task exception was never retrieved" is logged when such a task is collected
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage()[:300] for r in bad]


def _target(srv: BackgroundServer) -> str:
    return urlsplit(srv.grpc.url).netloc


def _stream_url(srv: BackgroundServer, bundle) -> str:
    return f"{srv.url}/v2/models/{bundle.manifest.model_name}/stream"


def _unary(channel: grpc.Channel, method: str = "ModelInfer") -> Any:
    m = pb.METHODS[method]
    return channel.unary_unary(m.path, request_serializer=m.request.SerializeToString, response_deserializer=m.response.FromString)


def _stream(channel: grpc.Channel) -> Any:
    m = pb.METHODS["ModelStreamInfer"]
    return channel.stream_stream(m.path, request_serializer=m.request.SerializeToString, response_deserializer=m.response.FromString)


def _refusal(call, *args, **kw) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=10, **kw)
    return info.value.code(), info.value.details(), dict(info.value.trailing_metadata() or ()).get(ERROR_KIND_PARAMETER, "")


def _request(model: str, bitstreams: list[bytes], **tensor: Any) -> Any:
    msg = pb.ModelInferRequest(model_name=model, id="r1")
    spec = {"name": "bitstream", "datatype": "BYTES", "shape": [len(bitstreams)], **tensor}
    inp = msg.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
    if spec["datatype"] == "BYTES":
        inp.contents.bytes_contents.extend(bitstreams)
    return msg


# ---- client mistakes are client errors, briefly echoed ------------------------------------------------------


@pytest.mark.parametrize(
    "datatype, field, value",
    [
        ("INT8", "int_contents", 1000),
        ("INT16", "int_contents", 100_000),
        ("UINT8", "uint_contents", 1000),
        ("UINT16", "uint_contents", 70_000),
    ],
)
def test_out_of_range_integers_are_a_client_error(server, bundle, no_tracebacks, datatype, field, value) -> None:
    msg = _request(bundle.manifest.model_name, [], datatype=datatype, shape=[1])
    getattr(msg.inputs[0].contents, field).append(value)
    with grpc.insecure_channel(_target(server)) as channel:
        code, details, kind = _refusal(_unary(channel), msg)
        assert (code, kind) == (grpc.StatusCode.INVALID_ARGUMENT, "bad_request") and "does not fit" in details, details
        [answer] = list(_stream(channel)(iter([msg]), timeout=10))
    assert answer.infer_response.parameters[ERROR_KIND_PARAMETER].string_param == "bad_request", answer.error_message


def test_grpc_errors_repeat_little_of_the_request(server, bundle, good, no_tracebacks) -> None:
    name = bundle.manifest.model_name
    with grpc.insecure_channel(_target(server)) as channel:
        code, details, _ = _refusal(_unary(channel), _request("m" * 20_000, [good]))
        assert code == grpc.StatusCode.NOT_FOUND and len(details) < 300, len(details)
        code, details, _ = _refusal(_unary(channel, "ModelMetadata"), pb.ModelMetadataRequest(name="m" * 20_000, version="v" * 20_000))
        assert code == grpc.StatusCode.NOT_FOUND and len(details) < 300, len(details)
        code, details, _ = _refusal(_unary(channel), _request(name, [good], shape=[1] * 6000))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "dimensions" in details and len(details) < 300, details[:300]
        code, details, _ = _refusal(_unary(channel), _request(name, [good], name="n" * 20_000))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 500, len(details)
        huge = _request("m" * (MAX_BYTES - 1000), [good])
        [answer] = list(_stream(channel)(iter([huge]), timeout=10))
    assert answer.infer_response.parameters[ERROR_KIND_PARAMETER].string_param == "not_found"
    assert answer.ByteSize() < 1000 and answer.infer_response.id == "r1", answer.ByteSize()


def test_a_unary_call_takes_exactly_one_message(server, bundle, good) -> None:
    m = pb.METHODS["ModelInfer"]
    msg = _request(bundle.manifest.model_name, [good])
    with grpc.insecure_channel(_target(server)) as channel:
        call = channel.stream_unary(m.path, request_serializer=m.request.SerializeToString, response_deserializer=m.response.FromString)
        code, details, kind = _refusal(call, iter([msg, msg]))
        assert (code, kind) == (grpc.StatusCode.INVALID_ARGUMENT, "bad_request") and "exactly one" in details
        assert call(iter([msg]), timeout=10).id == "r1"


# ---- refused requests of the largest size hold no memory --------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_refused_largest_requests_hold_no_memory(server, bundle) -> None:
    """Each protocol refuses bitstreams of the largest message the server takes; with the cycle collector
    off, nothing of them may stay behind (a traceback kept alive by a reference cycle would keep each)."""
    name = bundle.manifest.model_name
    junk = b"MT" + bytes(MAX_BYTES - 400)
    grpc_msg = _request(name, [junk])
    head = json.dumps({"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [1], "parameters": {BINARY_DATA_SIZE: 0}}]})
    tail_size = MAX_BYTES - len(head) - 4 - 16
    head = head.replace(f'"{BINARY_DATA_SIZE}": 0', f'"{BINARY_DATA_SIZE}": {tail_size + 4}')
    http_body = head.encode() + pack_bytes([b"MT" + bytes(tail_size - 2)])
    compact = frame(0x2, encode_request(1, [junk[: MAX_BYTES - 100]]))
    parts = urlsplit(server.url)
    sent = 25

    def http_refused() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("POST", f"/v2/models/{name}/infer", http_body, {HEADER_LENGTH: str(len(head))})
        assert conn.getresponse().status == 400
        conn.close()

    with grpc.insecure_channel(_target(server), options=[("grpc.max_send_message_length", 2 * MAX_BYTES)]) as channel:
        unary, outbox = _unary(channel), queue.Queue()
        answers = _stream(channel)(iter(outbox.get, None), timeout=120)
        ws = open_raw_stream(_stream_url(server, bundle))

        def everything() -> None:
            assert _refusal(unary, grpc_msg)[0] == grpc.StatusCode.INVALID_ARGUMENT
            outbox.put(grpc_msg)
            assert next(answers).error_message
            http_refused()
            ws.sendall(compact)
            assert kind_for_stream_code(read_frame(ws)[1][1]).name == "codec"

        everything()  # the allocator's first use of each size
        gc.collect()
        gc.disable()
        try:
            before = _rss()
            for _ in range(sent):
                everything()
            grown = _rss() - before
        finally:
            gc.enable()
            outbox.put(None)
            ws.close()
    # 4 protocols x 25 requests of 1 MiB: holding each once would be 100 MB
    assert grown < 30 * 2**20, f"RSS grew {grown / 2**20:.0f} MB over {4 * sent} refused 1 MiB requests"


# ---- the compact stream: the limit, leaving clients, protocol closes ---------------------------------------


def _close_code(sock: socket.socket, seconds: float) -> int:
    sock.settimeout(seconds)
    while True:
        opcode, data = read_frame(sock)
        if opcode == 0x8:
            return int.from_bytes(data[:2], "big")


def test_compact_stream_takes_a_message_of_exactly_the_limit(server, bundle, caplog) -> None:
    caplog.set_level(logging.INFO)
    exact = encode_request(1, [b"MT" + bytes(MAX_BYTES - 5 - 2)])  # id, top_k and a 3-byte length: 5 bytes
    assert len(exact) == MAX_BYTES
    before = server.plane.metrics.errors.labels("too_large")._value.get()
    with open_raw_stream(_stream_url(server, bundle)) as ws:
        ws.sendall(frame(0x2, exact))
        opcode, data = read_frame(ws)
        assert opcode == 0x2 and kind_for_stream_code(data[1]).name == "codec"
    for _ in range(3 * LOG_BURST):
        with open_raw_stream(_stream_url(server, bundle)) as ws:
            ws.sendall(frame(0x2, exact + b"x"))
            assert _close_code(ws, 5.0) == 1009
    deadline = time.monotonic() + 5.0  # the server counts a close once it has sent it
    while server.plane.metrics.errors.labels("too_large")._value.get() - before < 3 * LOG_BURST and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.plane.metrics.errors.labels("too_large")._value.get() - before == 3 * LOG_BURST
    logged = [r for r in caplog.records if "closed with 1009" in r.getMessage()]
    assert 1 <= len(logged) <= LOG_BURST and not any(r.exc_info for r in logged)


def test_a_client_leaving_with_requests_in_flight_costs_no_tracebacks(server, bundle, good, no_tracebacks) -> None:
    """64 requests of 256 images (seconds of decoding) and a reset: the work for the gone client stops, and
    no answer is written to the closed connection (which logged a traceback per request)."""
    before = server.plane.metrics.stream_messages.labels("compact", "ok")._value.get()
    sent = 64
    ws = open_raw_stream(_stream_url(server, bundle))
    ws.sendall(b"".join(frame(0x2, encode_request(i + 1, [good] * 256)) for i in range(sent)))
    time.sleep(0.2)
    ws.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.close()  # a reset, with requests in flight
    time.sleep(3.0)
    answered = server.plane.metrics.stream_messages.labels("compact", "ok")._value.get() - before
    assert answered < sent, "the server kept working for a client that had left"
    with open_raw_stream(_stream_url(server, bundle)) as ws:  # and goes on serving
        ws.sendall(frame(0x2, encode_request(7, [good])))
        assert decode_answer(read_frame(ws)[1], 1, 1, [len(bundle.labels(t)) for t in bundle.task_names]).error is None


def test_shutdown_does_not_wait_for_clients_that_do_not_read(onnx_bundle, bundle, good) -> None:
    srv = BackgroundServer(ServerConfig(onnx_bundle, limits=ConnectionLimits(idle_timeout=60.0)), shutdown_timeout=30.0)
    srv.grpc = GrpcFrontend(srv.plane, "127.0.0.1", 0, grace=30.0)
    name = bundle.manifest.model_name
    many = _request(name, [good] * 256)
    with srv:
        ws = open_raw_stream(_stream_url(srv, bundle))
        ws.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for i in range(100):
            ws.sendall(frame(0x2, encode_request(i + 1, [good] * 256, top_k=255)))
        channel = grpc.insecure_channel(_target(srv))
        outbox: queue.Queue = queue.Queue()
        answers = _stream(channel)(iter(outbox.get, None))
        for _ in range(100):
            outbox.put(many)
        time.sleep(2.0)  # the answers pile up unread
        start = time.monotonic()
    took = time.monotonic() - start
    try:
        assert took < 5.0, f"shutdown took {took:.1f} s with clients that do not read"
        with pytest.raises(grpc.RpcError) as info:
            for _ in answers:
                pass
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), info.value
    finally:
        outbox.put(None)
        channel.close()
        ws.close()


# ---- the health probes, a second server on the gRPC port, malformed HTTP, --help -------------------------


def test_health_probes_are_never_held_by_the_client_budget(onnx_bundle, bundle, good) -> None:
    config = ServerConfig(onnx_bundle, client_errors=ClientErrorLimits(burst=1, refill_per_s=0.01, max_hold=3.0))
    srv = BackgroundServer(config)
    srv.grpc = GrpcFrontend(srv.plane, "127.0.0.1", 0)
    with srv, grpc.insecure_channel(_target(srv)) as channel:
        parts = urlsplit(srv.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        for _ in range(2):  # the budget is spent: the next infer is held, then refused
            conn.request("POST", f"/v2/models/{bundle.manifest.model_name}/infer", b"{", {})
            conn.getresponse().read()
        for path in ("/v2/health/live", "/v2/health/ready"):
            start = time.monotonic()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200 and time.monotonic() - start < 1.0, (path, response.status)
        start = time.monotonic()
        assert _unary(channel, "ServerLive")(pb.ServerLiveRequest(), timeout=10).live
        assert _unary(channel, "ServerReady")(pb.ServerReadyRequest(), timeout=10).ready
        assert time.monotonic() - start < 1.0
        conn.close()


def test_a_second_server_cannot_share_the_grpc_port(onnx_bundle, server) -> None:
    port = server.grpc.bound_port
    second = BackgroundServer(ServerConfig(onnx_bundle))
    GrpcFrontend(second.plane, "127.0.0.1", port)
    with pytest.raises(OSError, match="address already in use"):
        second.start()


def test_malformed_http_gets_the_json_error_body(server, bundle) -> None:
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nBroken Header Line\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", head) and b"application/json" in head, head
    assert json.loads(body)["kind"] == "bad_request"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("POST", f"/v2/models/{bundle.manifest.model_name}/infer")
    conn.putheader("Transfer-Encoding", "gzip, chunked")
    conn.endheaders()
    conn.send(b"5\r\nhello\r\n0\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 400 and "Transfer-Encoding" in json.loads(response.read())["error"]
    conn.close()


def test_serve_help_shows_the_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        serve.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 8000)", "(default: onnxruntime)", "(default: 4194304)", "(default: 30.0)", "(default: 20.0)"):
        assert default in text, default
    assert "None" not in text


# ---- fuzzers: whole gRPC messages and metadata, whole compact-stream messages and frame sequences ----------

FUZZ = settings(
    max_examples=int(os.environ.get("MANTIS_FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize="MANTIS_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
_names = st.sampled_from(["{model}", "", "nope", "{model}\x00"]) | st.text(max_size=20)
_datatypes = st.sampled_from(["BYTES", "INT8", "UINT8", "INT16", "UINT16", "INT32", "INT64", "UINT64", "FP16", "FP32", "BOOL", "X", ""])
_params = st.dictionaries(
    st.sampled_from(["top_k", "binary_data", "binary_data_output", "x"]),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(), st.text(max_size=8)),
    max_size=3,
)


@st.composite
def _grpc_messages(draw: st.DrawFn) -> bytes:
    msg = pb.ModelInferRequest(
        model_name=draw(_names), model_version=draw(st.sampled_from(["", "1", "2"]) | st.text(max_size=4)), id=draw(st.text(max_size=8))
    )
    for key, value in draw(_params).items():
        pb.set_parameter(msg.parameters[key], value)
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        datatype = draw(_datatypes)
        shape = draw(st.lists(st.integers(-3, 2**63 - 1) | st.integers(0, 4), max_size=10))
        tensor = msg.inputs.add(name=draw(st.sampled_from(["bitstream", "x", ""])), datatype=datatype, shape=shape)
        for key, value in draw(_params).items():
            pb.set_parameter(tensor.parameters[key], value)
        if raw:
            msg.raw_input_contents.append(draw(st.binary(max_size=64)))
        else:
            contents = tensor.contents
            contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=40), max_size=3)))
            contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=3)))
            contents.uint_contents.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=3)))
            contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)))
            contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=3)))
            contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        msg.outputs.add(name=draw(st.sampled_from(["top", "active_tasks", "logits_x", ""])))
    data = msg.SerializeToString()
    if draw(st.booleans()) and data:  # a flipped byte: often not a valid protobuf any more
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    return data


_metadata = st.lists(
    st.tuples(
        st.sampled_from(["authorization", "x-fuzz", "grpc-timeout-ish"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    ),
    max_size=2,
)


@FUZZ
@given(messages=st.lists(_grpc_messages(), min_size=1, max_size=3), metadata=_metadata, stream=st.booleans())
def test_fuzzed_grpc_messages_never_get_internal(server, bundle, good, no_tracebacks, messages, metadata, stream) -> None:
    model = bundle.manifest.model_name.encode()
    messages = [m.replace(b"{model}", model) for m in messages]
    m = pb.METHODS["ModelInfer"]
    with grpc.insecure_channel(_target(server)) as channel:
        try:
            if stream:
                call = channel.stream_stream(
                    pb.METHODS["ModelStreamInfer"].path,
                    request_serializer=bytes,
                    response_deserializer=pb.ModelStreamInferResponse.FromString,
                )
                for answer in call(iter(messages), timeout=10, metadata=metadata):
                    kind = answer.infer_response.parameters[ERROR_KIND_PARAMETER].string_param
                    assert not answer.error_message or kind in CLIENT_KINDS, (kind, answer.error_message)
            else:
                call = channel.stream_unary(m.path, request_serializer=bytes, response_deserializer=m.response.FromString)
                call(iter(messages), timeout=10, metadata=metadata)
        except grpc.RpcError as exc:
            assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (exc.code(), exc.details())
            kind = dict(exc.trailing_metadata() or ()).get(ERROR_KIND_PARAMETER)
            assert kind is None or kind in CLIENT_KINDS, (kind, exc.details())


@st.composite
def _stream_frames(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.sampled_from(["request", "request", "bytes", "text", "ping", "fragment", "raw"]))
        if choice == "request":
            payload = encode_request(draw(st.integers(1, 2**40)), [b"{good}"] * draw(st.integers(1, 3)), draw(st.integers(1, 255)))
            if draw(st.booleans()):
                i = draw(st.integers(0, len(payload) - 1))
                payload = payload[:i] + bytes([payload[i] ^ draw(st.integers(1, 255))]) + payload[i + 1 :]
            out += frame(0x2, payload)
        elif choice == "bytes":
            out += frame(0x2, draw(st.binary(max_size=60)))
        elif choice == "text":
            out += frame(0x1, draw(st.text(max_size=20)).encode())
        elif choice == "ping":
            out += frame(0x9, draw(st.binary(max_size=20)))
        elif choice == "fragment":  # a non-final frame, then a continuation or something else
            data = draw(st.binary(max_size=20))
            head = frame(0x2, data)
            out += bytes([head[0] & 0x7F]) + head[1:] + frame(draw(st.sampled_from([0x0, 0x2, 0x1])), draw(st.binary(max_size=20)))
        else:
            out += draw(st.binary(max_size=30))
    return out


@FUZZ
@given(raw=_stream_frames())
def test_fuzzed_compact_stream_frames_never_get_a_server_error(server, bundle, good, no_tracebacks, raw) -> None:
    with open_raw_stream(_stream_url(server, bundle)) as ws:
        try:
            ws.sendall(raw.replace(b"{good}", good) if b"{good}" in raw else raw)
        except OSError:
            return
        ws.settimeout(1.0)
        try:
            while True:
                opcode, data = read_frame(ws)
                if opcode == 0x2:
                    status = get_varint(data, 0, "id")[1]
                    kind = kind_for_stream_code(data[status]) if data[status] else None
                    assert kind is None or kind.name in CLIENT_KINDS, (kind, data[:200])
                elif opcode == 0x8:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    assert code in (1000, 1002, 1003, 1007, 1009), code
                    return
        except (TimeoutError, ConnectionError):
            return
