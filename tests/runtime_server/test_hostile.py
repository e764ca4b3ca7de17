"""Hostile traffic on loopback, server and edge client: every client mistake gets a 4xx naming it, no work
before the limits are checked, deadlines on connections and on edge requests, pipelined answers kept, bad
traffic logged briefly, and a hypothesis fuzzer over whole HTTP requests that never gets a 5xx."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import tracemalloc
from contextlib import contextmanager
from typing import Callable, Iterator
from urllib.parse import urlsplit

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codec
import runtime_server.answers
from codec.stream import decode_answer, encode_request
from codec.wire import ERROR_KIND_PARAMETER, ERRORS, GRPC_SERVICE, HEADER_LENGTH, pack_bytes
from codec import kserve_grpc as pb
from runtime_edge.transport import (
    MalformedResponseError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerRejectedError,
    ServerUnreachableError,
)
from runtime_edge.transport.http import KServeClient
from runtime_edge.transport.stream import frame
from runtime_server.dataplane import ServerConfig
from runtime_server.http_frontend import BackgroundServer
from runtime_server.client_budget import ClientErrorLimits
from runtime_server.connection import LOG_BURST, ConnectionLimits
from runtime_server.grpc_frontend import GrpcFrontend
from benchmarks.hostile import (
    read_status,
    binary_request,
    claimed_shape_bitstream,
    json_flood_request,
    largest_shape,
    million_elements_request,
    post_raw,
    run_phase,
    shutdown_check,
    slow_upload,
)
from tests.tools.raw_websocket import open_raw_stream, read_frame

LIMITS = ConnectionLimits(header_timeout=1.0, body_timeout=1.0, idle_timeout=2.0, lingering_time=0.5)
SLACK = 1.5  # seconds a deadline may be overrun (timer granularity, a loaded machine)


@pytest.fixture(scope="module")
def server(onnx_bundle):
    """HTTP (and the compact stream) plus gRPC, with short connection deadlines."""
    srv = BackgroundServer(ServerConfig(onnx_bundle, max_batch_size=8, limits=LIMITS, client_errors=ClientErrorLimits(burst=0)))
    srv.grpc = GrpcFrontend(srv.plane, "127.0.0.1", 0)
    with srv:
        yield srv


def _address(srv: BackgroundServer) -> tuple[str, int]:
    parts = urlsplit(srv.url)
    return parts.hostname, parts.port


def _exchange(address: tuple[str, int], raw: bytes, timeout: float = 10.0) -> bytes:
    """Send ``raw`` and read until the server closes (or ``timeout``)."""
    out = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(raw)
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
    return out


def _post(address: tuple[str, int], path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    answer = _exchange(address, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])


def _probe(address: tuple[str, int]) -> float:
    start = time.perf_counter()
    answer = _exchange(address, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    return time.perf_counter() - start


def _infer_path(bundle) -> str:
    return f"/v2/models/{bundle.manifest.model_name}/infer"


# ---- server: client mistakes are 4xx ----------------------------------------------------------------------


def _json_case(doc: str) -> tuple[bytes, dict[str, str]]:
    return doc.encode(), {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "body, headers, status, message",
    [
        (*_json_case('{"inputs": ' + "[" * 1500 + "]" * 1500 + "}"), 400, "nested too deeply"),
        (*_json_case('{"inputs": ' + "[" * 100_000), 413, "JSON values"),
        (*_json_case('{"id": 1' + "1" * 5000 + "}"), 400, "digits"),
        (
            *_json_case('{"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [18446744073709551616], "data": []}]}'),
            400,
            "below 2^63",
        ),
        (
            *_json_case('{"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [4294967296, 4294967296], "data": []}]}'),
            413,
            "at most 256",
        ),
        (
            *_json_case('{"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [4611686018427387904, 4], "data": []}]}'),
            413,
            "at most 256",
        ),
        (*_json_case('{"inputs": [{"name": "bitstream", "datatype": [], "shape": [1], "data": ["x"]}]}'), 400, "unknown datatype"),
        (
            *_json_case('{"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [1], "data": ' + "[" * 500 + "]" * 500 + "}]}"),
            400,
            "values for shape",
        ),
        (b'{"inputs": []}', {"Content-Encoding": "gzip"}, 400, "Content-Encoding 'gzip'"),
        (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "br"}, 400, "Content-Encoding 'br'"),
    ],
    ids=[
        "deep-nesting",
        "nesting-over-budget",
        "long-integer",
        "shape-over-64-bits",
        "shape-product-huge",
        "shape-product-wraps-to-zero",
        "unhashable-datatype",
        "deep-data",
        "gzip-not-gzip",
        "unknown-encoding",
    ],
)
def test_client_mistakes_get_a_4xx_naming_the_problem(server, bundle, body, headers, status, message) -> None:
    got, doc = _post(_address(server), _infer_path(bundle), body, headers)
    assert (got, message in doc["error"]) == (status, True), doc


# ---- server: limits before work ---------------------------------------------------------------------------


def test_element_count_and_json_size_are_refused_before_parsing(server, bundle) -> None:
    address = _address(server)
    status, doc = _post(address, _infer_path(bundle), *million_elements_request())
    assert status == 413 and doc["kind"] == "too_large" and "[1000000]" in doc["error"] and "at most 256" in doc["error"], doc
    status, doc = _post(address, _infer_path(bundle), *json_flood_request())
    assert status == 413 and "JSON values" in doc["error"], doc
    # the same million elements behind a shape of [1]: the unpacking stops at the second element
    body, headers = million_elements_request()
    head_len = int(headers[HEADER_LENGTH])
    small = body[:head_len].replace(b"[1000000]", b"[1]      ")
    status, doc = _post(address, _infer_path(bundle), small + body[head_len:], headers)
    assert status == 400 and "bytes after its 1 elements" in doc["error"], doc


def test_refused_bodies_are_read_no_further_than_the_drain_limit(onnx_bundle, bundle) -> None:
    """After a refusal the server reads at most ``drain_bytes`` more of the body: a 1 MB body still gets its
    413 (the rest fits the sockets' buffers), a 64 MB upload is cut off instead of read to its end."""
    limits = ConnectionLimits(lingering_time=1.0, drain_bytes=64 * 1024)
    with BackgroundServer(ServerConfig(onnx_bundle, limits=limits, client_errors=ClientErrorLimits(burst=0))) as srv:
        address = _address(srv)
        start = time.monotonic()
        status, doc = _post(address, _infer_path(bundle), *million_elements_request(1_000_000))
        assert status == 413 and doc["kind"] == "too_large", doc
        assert time.monotonic() - start < limits.lingering_time + SLACK
        size = 64 * 1024 * 1024
        head = f"POST {_infer_path(bundle)} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        start = time.monotonic()
        with socket.create_connection(address, timeout=10) as sock:
            with pytest.raises(OSError):  # reset or broken pipe: the server stopped reading and closed
                sock.sendall(head + bytes(size))
        assert time.monotonic() - start < limits.lingering_time + SLACK
        assert _probe(address) < 1.0
    with pytest.raises(ValueError, match="drain bytes"):
        ConnectionLimits(drain_bytes=-1)


def test_bitstreams_the_model_cannot_use_are_refused_from_their_headers(server, bundle, good, monkeypatch) -> None:
    """Nothing is decoded: not the bad element, not the good ones before it."""
    decoded = []
    real = codec.decode_latent
    monkeypatch.setattr(runtime_server.answers.codec, "decode_latent", lambda *a, **k: decoded.append(1) or real(*a, **k))
    c, h, w = bundle.latent_shape
    latent = np.zeros((c, 4 * h, 4 * w), np.float32)
    bigger = codec.encode_latent(latent, 1, bundle.tables)  # a real, valid bitstream of a larger latent
    claimed = claimed_shape_bitstream(bundle.tables, largest_shape(c))  # a header claiming the largest latent
    extra_task = claimed_shape_bitstream(bundle.tables, bundle.latent_shape, task_mask=1 << len(bundle.task_names))
    other_tables = good[:2] + bytes([good[2] ^ 0xFF]) + good[3:]
    for bad, kind in [
        (bigger, "model_mismatch"),
        (claimed, "model_mismatch"),
        (extra_task, "model_mismatch"),
        (other_tables, "table_mismatch"),
    ]:
        status, doc = _post(_address(server), _infer_path(bundle), *binary_request([good, good, bad]))
        assert status == 409 and doc["kind"] == kind and "bitstream[2]" in doc["error"], doc
    assert decoded == []
    status, _ = _post(_address(server), _infer_path(bundle), *binary_request([good]))
    assert status == 200 and decoded == [1]


# ---- server: connection deadlines -------------------------------------------------------------------------


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What the server sends until it closes ``sock``, and when it closed (``seconds`` at most)."""
    start = time.monotonic()
    out = b""
    sock.settimeout(seconds)
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except TimeoutError:
        pytest.fail(f"connection still open after {seconds:g} s (got {out[:80]!r})")
    except ConnectionResetError:
        pass
    return out, time.monotonic() - start


def test_idle_half_sent_headers_and_bodies_are_cut_off(server, bundle) -> None:
    address = _address(server)
    with socket.create_connection(address) as idle:
        answer, took = _closed_within(idle, LIMITS.idle_timeout + SLACK)
        assert answer == b""
    with socket.create_connection(address) as slow:
        slow.sendall(b"POST /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        answer, took = _closed_within(slow, LIMITS.header_timeout + SLACK)
        assert answer.startswith(b"HTTP/1.1 408") and b"request headers not received" in answer
    with socket.create_connection(address) as slow:
        slow.sendall(f"POST {_infer_path(bundle)} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b"{" * 10)
        answer, took = _closed_within(slow, LIMITS.body_timeout + LIMITS.lingering_time + SLACK)
        assert answer.startswith(b"HTTP/1.1 408") and b"request body not received within 1 s" in answer
    # a client dripping its body keeps nothing open past the body deadline either
    start = time.monotonic()
    assert slow_upload(address, _infer_path(bundle), seconds=10, interval=0.1) in (408, 0)
    assert time.monotonic() - start < LIMITS.body_timeout + LIMITS.lingering_time + SLACK
    assert _probe(address) < 1.0


def _close_code(sock: socket.socket, seconds: float) -> tuple[int, float]:
    """The status of the server's close frame on a compact stream, skipping answers, and when it came."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while True:
            opcode, data = read_frame(sock)
            if opcode == 0x8:
                return int.from_bytes(data[:2], "big"), time.monotonic() - start
    except TimeoutError:
        pytest.fail(f"compact stream still open after {seconds:g} s")


def test_idle_and_dripping_compact_streams_are_closed(server, bundle, good) -> None:
    url = f"{server.url}/v2/models/{bundle.manifest.model_name}/stream"
    with open_raw_stream(url) as idle:
        code, took = _close_code(idle, LIMITS.idle_timeout + SLACK)
        assert code == 1000 and took >= LIMITS.idle_timeout - 0.1
    with open_raw_stream(url) as busy:  # answered, then idle: closed one idle period after the last message
        busy.sendall(frame(0x2, encode_request(1, [good])))
        opcode, data = read_frame(busy)
        assert decode_answer(data, 1, 1, [len(bundle.labels(t)) for t in bundle.task_names]).error is None
        assert _close_code(busy, LIMITS.idle_timeout + SLACK)[0] == 1000
    with open_raw_stream(url) as drip:  # a message that never completes is not waited for
        message = frame(0x2, encode_request(2, [good]))
        start = time.monotonic()
        for byte in message[:-1]:
            try:
                drip.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - start > LIMITS.idle_timeout + SLACK:
                break
        assert _close_code(drip, LIMITS.idle_timeout + SLACK)[0] == 1000
        assert time.monotonic() - start < LIMITS.idle_timeout + 2 * SLACK
    assert _probe(_address(server)) < 1.0


def _grpc_stream(target: str, requests: Iterator) -> Iterator:
    channel = grpc.insecure_channel(target)
    m = pb.METHODS["ModelStreamInfer"]
    call = channel.stream_stream(
        f"/{GRPC_SERVICE}/ModelStreamInfer", request_serializer=m.request.SerializeToString, response_deserializer=m.response.FromString
    )
    return channel, call(requests)


def _ends_at_its_deadline(wait: Callable[[], object], message: str, deadline: float) -> None:
    """``wait()`` raises DEADLINE_EXCEEDED (kind ``timeout``, details holding ``message``) ``deadline`` s on."""
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        wait()
    took = time.monotonic() - start
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and message in info.value.details()
    assert dict(info.value.trailing_metadata())[ERROR_KIND_PARAMETER] == "timeout"
    assert deadline - 0.1 <= took < deadline + SLACK


def test_idle_grpc_streams_end_with_deadline_exceeded(server, bundle, good) -> None:
    import queue

    outbox: queue.Queue = queue.Queue()
    channel, answers = _grpc_stream(urlsplit(server.grpc.url).netloc, iter(outbox.get, None))
    try:
        request = pb.ModelInferRequest(model_name=bundle.manifest.model_name, id="a")
        request.inputs.add(name="bitstream", datatype="BYTES", shape=[1]).contents.bytes_contents.append(good)
        outbox.put(request)
        first = next(answers)
        assert first.error_message == "" and first.infer_response.id == "a"
        _ends_at_its_deadline(lambda: next(answers), "no message on the stream", LIMITS.idle_timeout)
    finally:
        outbox.put(None)
        channel.close()


def test_shutdown_ends_open_streams_at_once(onnx_bundle, bundle) -> None:
    import queue

    srv = BackgroundServer(ServerConfig(onnx_bundle, limits=ConnectionLimits(idle_timeout=60.0)), shutdown_timeout=30.0)
    srv.grpc = GrpcFrontend(srv.plane, "127.0.0.1", 0, grace=30.0)
    outbox: queue.Queue = queue.Queue()
    with srv:
        ws = open_raw_stream(f"{srv.url}/v2/models/{bundle.manifest.model_name}/stream")
        channel, answers = _grpc_stream(urlsplit(srv.grpc.url).netloc, iter(outbox.get, None))
        ended: dict[str, object] = {}

        def wait_grpc() -> None:
            try:
                next(answers)
            except grpc.RpcError as exc:
                ended["grpc"] = exc.code()

        stalled_box: queue.Queue = queue.Queue()
        unary_channel, stalled_call = _grpc_call_without_message(urlsplit(srv.grpc.url).netloc, iter(stalled_box.get, None))

        def wait_unary() -> None:
            try:
                stalled_call.result()
            except grpc.RpcError as exc:
                ended["unary"] = exc.code()

        waiters = [threading.Thread(target=wait_grpc, daemon=True), threading.Thread(target=wait_unary, daemon=True)]
        for waiter in waiters:
            waiter.start()
        time.sleep(0.5)
        start = time.monotonic()
    took = time.monotonic() - start  # both streams idle and a unary call without its message: none may hold the 30 s shutdown
    try:
        assert took < 5.0
        assert _close_code(ws, 1.0)[0] == 1001
        for waiter in waiters:
            waiter.join(5.0)
        assert ended.get("grpc") == grpc.StatusCode.UNAVAILABLE
        assert ended.get("unary") == grpc.StatusCode.UNAVAILABLE
    finally:
        outbox.put(None)
        stalled_box.put(None)
        ws.close()
        channel.close()
        unary_channel.close()


def _grpc_call_without_message(target: str, requests: Iterator) -> tuple[grpc.Channel, grpc.Future]:
    """A ``ModelInfer`` call whose request message comes only when ``requests`` yields it: the call's
    headers go out at once, its message is held back (on the wire, the same as a unary call's)."""
    channel = grpc.insecure_channel(target)
    m = pb.METHODS["ModelInfer"]
    call = channel.stream_unary(m.path, request_serializer=m.request.SerializeToString, response_deserializer=m.response.FromString)
    return channel, call.future(requests, timeout=60)


def test_grpc_calls_whose_message_does_not_arrive_are_cut_off(server, bundle, good) -> None:
    import queue

    held: queue.Queue = queue.Queue()
    channel, call = _grpc_call_without_message(urlsplit(server.grpc.url).netloc, iter(held.get, None))
    try:
        _ends_at_its_deadline(lambda: call.result(timeout=LIMITS.body_timeout + 10), "request message not received", LIMITS.body_timeout)
    finally:
        held.put(None)
        channel.close()
    # A message that is sent in time is answered as by any unary client.
    request = pb.ModelInferRequest(model_name=bundle.manifest.model_name)
    request.inputs.add(name="bitstream", datatype="BYTES", shape=[1]).contents.bytes_contents.append(good)
    channel, call = _grpc_call_without_message(urlsplit(server.grpc.url).netloc, iter([request]))
    try:
        assert call.result(timeout=10).outputs
    finally:
        channel.close()


def test_malformed_grpc_messages_are_the_clients_mistake(server) -> None:
    target = urlsplit(server.grpc.url).netloc
    garbage = b"\xff\xff\xff\x07not a protobuf"
    with grpc.insecure_channel(target) as channel:
        for name, call in (
            (
                "ModelInfer",
                lambda m: channel.unary_unary(m.path, request_serializer=bytes, response_deserializer=m.response.FromString)(
                    garbage, timeout=10
                ),
            ),
            (
                "ModelStreamInfer",
                lambda m: list(
                    channel.stream_stream(m.path, request_serializer=bytes, response_deserializer=m.response.FromString)(
                        iter([garbage]), timeout=10
                    )
                ),
            ),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(pb.METHODS[name])
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed request message" in info.value.details(), name
            assert dict(info.value.trailing_metadata())[ERROR_KIND_PARAMETER] == "bad_request"


def test_pipelined_answers_before_a_malformed_request_are_sent(server, bundle, good) -> None:
    body, headers = binary_request([good])
    infer = (
        f"POST {_infer_path(bundle)} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode() + body
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    broken = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nBroken Header Line\r\n\r\n"
    answer = _exchange(_address(server), live + infer + live + broken + live)
    statuses = re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert statuses == [b"200", b"200", b"200", b"400"], answer[-300:]


def test_malformed_http_is_logged_without_tracebacks_at_a_bounded_rate(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    address = _address(server)
    for i in range(3 * LOG_BURST):
        answer = _exchange(address, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nBroken Header %d\r\n\r\n" % i)
        assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:100]
    records = [r for r in caplog.records if r.name in ("mantis.server", "aiohttp.server") and r.levelno >= logging.WARNING]
    assert records and all(r.exc_info is None for r in records)
    assert len(records) <= LOG_BURST and all("malformed HTTP request" in r.getMessage() for r in records)


def test_too_many_header_fields_are_431(server) -> None:
    """10,000 header fields: 431 with the wire contract's JSON error (one field over the line limit stays 400)."""
    address = _address(server)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    answer = _exchange(address, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert re.match(rb"HTTP/1\.[01] 431 ", answer), answer[:200]
    doc = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert doc["kind"] == "headers_too_large" and ERRORS["headers_too_large"].http == 431, doc
    long = _exchange(address, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 20_000 + b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", long) and b'"bad_request"' in long, long[:200]
    assert _exchange(address, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")


# ---- server: under load, and at shutdown ------------------------------------------------------------------


def test_health_and_normal_requests_stay_fast_beside_hostile_clients(server, bundle, good) -> None:
    """4 hostile clients (slow uploads, 1M-element bodies, 1M-value JSON, claimed largest latents) for 3 s
    beside a normal client and the health probe: no 5xx, every normal request answered, probes fast."""
    claimed = claimed_shape_bitstream(bundle.tables, largest_shape(bundle.latent_shape[0]))
    phase = run_phase(_address(server), bundle.manifest.model_name, [good], claimed, 3.0, 4)
    hostile = phase.hostile.statuses
    assert hostile and not [k for k in hostile if k.rsplit(":", 1)[1].isdigit() and int(k.rsplit(":", 1)[1]) >= 500], hostile
    assert {k.split(":")[0] for k in hostile} == {"slow_upload", "million_elements", "json_flood", "claimed_shapes"}
    assert set(phase.normal.statuses) == {200} and phase.normal.latencies_ms
    assert set(phase.probe.statuses) == {200} and len(phase.probe.latencies_ms) >= 10
    assert phase.probe.percentile(50) <= 100.0, phase.probe.latencies_ms


def test_sigterm_cuts_stalled_uploads_and_answers_queued_requests(onnx_bundle, bundle, good, tmp_path) -> None:
    result = shutdown_check(onnx_bundle, bundle.manifest.model_name, good, tmp_path / "serve.log", shutdown_timeout=10.0)
    assert result.exit_code == 0 and result.queued_status == 200 and result.stalled_status == 503, result
    assert result.exit_seconds < 5.0, result  # the queue delay (1 s) and the lingering drain (2 s), not 10 s


# ---- server: fuzzed whole requests ------------------------------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("MANTIS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize="MANTIS_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
_json_values = st.recursive(
    _json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12
)
_shapes = st.lists(st.integers(-2, 2**64), max_size=10) | _json_values
_params = st.fixed_dictionaries(
    {},
    optional={
        "binary_data_size": st.integers(-5, 2**64) | _json_values,
        "content_type": st.sampled_from(["base64", "utf8"]) | _json_values,
    },
)
_inputs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["bitstream", "image", ""]) | _json_values,
        "datatype": st.sampled_from(["BYTES", "FP32", "BOOL", "INT64", "X"]) | _json_values,
        "shape": _shapes,
    },
    optional={"parameters": _params | _json_values, "data": _json_values},
)
_docs = st.fixed_dictionaries(
    {"inputs": st.lists(_inputs, max_size=3) | _json_values},
    optional={
        "id": _json_values,
        "parameters": st.fixed_dictionaries({}, optional={"top_k": _json_values, "binary_data_output": _json_values}) | _json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=12)}, optional={"parameters": _json_values}), max_size=3)
        | _json_values,
    },
)
_header_values = st.sampled_from(["", "0", "-1", "abc", "99999999999999999999", "gzip", "identity", "chunked", "\x00", "é"]) | st.text(
    max_size=12
)
_header_names = st.sampled_from(
    ["Content-Type", "Content-Encoding", "Transfer-Encoding", HEADER_LENGTH, "Authorization", "Expect", "Connection", "X-Fuzz"]
)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    model = draw(st.sampled_from(["{model}", "{model}/versions/1", "{model}/versions/2", "nope", "{model}%00", ""]))
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]))
    head = json.dumps(draw(_docs)).encode() if draw(st.booleans()) else draw(st.binary(max_size=64))
    binary = draw(st.sampled_from(["none", "streams", "random"]))
    tail = (
        b""
        if binary == "none"
        else pack_bytes([b"MT" + draw(st.binary(max_size=40))] * draw(st.integers(0, 3)))
        if binary == "streams"
        else draw(st.binary(max_size=64))
    )
    mutate = draw(st.integers(-1, 40))
    body = head + tail
    if 0 <= mutate < len(body):
        body = body[:mutate] + bytes([body[mutate] ^ draw(st.integers(1, 255))]) + body[mutate + 1 :]
    headers = {HEADER_LENGTH: str(len(head))} if draw(st.booleans()) else {}
    for name, value in draw(st.lists(st.tuples(_header_names, _header_values), max_size=3)):
        headers[name] = value
    length = draw(st.sampled_from(["exact", "exact", "short", "none"]))
    lines = [f"{method} /v2/models/{model}/infer HTTP/1.1", "Host: x", "Connection: close"]
    if length == "exact":
        lines.append(f"Content-Length: {len(body)}")
    elif length == "short":
        lines.append(f"Content-Length: {max(0, len(body) - 3)}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body


@FUZZ
@given(_requests())
def test_fuzzed_requests_never_get_a_5xx(server, bundle, raw: bytes) -> None:
    raw = raw.replace(b"{model}", bundle.manifest.model_name.encode())
    address = _address(server)
    with socket.create_connection(address, timeout=10) as s:
        try:
            s.sendall(raw)
        except OSError:
            return  # refused mid-send: nothing was answered, nothing to check
        s.shutdown(socket.SHUT_WR)
        status = read_status(s, time.monotonic() + 10)
    assert status == 0 or 100 <= status < 500, (status, raw[:300])


# ---- edge client against hostile servers ------------------------------------------------------------------


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        rest += chunk


@contextmanager
def stub_server(answer: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A loopback server that reads each request and then runs ``answer(conn, stop)`` on its connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                for _ in range(20):  # requests on one connection
                    _read_request(conn)
                    answer(conn, stop)
                    if stop.is_set():
                        return
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _drip(prefix: bytes, unit: bytes, interval: float) -> Callable[[socket.socket, threading.Event], None]:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(prefix)
        for _ in range(2000):
            if stop.wait(interval):
                return
            conn.sendall(unit)

    return answer


DEADLINE = 1.5


@pytest.mark.parametrize(
    "answer",
    [
        _drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x", 0.3),
        _drip(b"HTTP/1.1 200 OK\r\n", b"X-Drip: 1\r\n", 0.3),
        _drip(b"", b"HTTP/1.1 100 Continue\r\n\r\n", 0.005),
        _drip(b"", b"", 10.0),
    ],
    ids=["drips-body", "drips-headers", "floods-100-continue", "never-answers"],
)
def test_edge_request_ends_by_its_deadline(answer) -> None:
    with stub_server(answer) as url:
        client = KServeClient(url, timeout=DEADLINE)
        start = time.monotonic()
        with pytest.raises(ServerUnreachableError, match=f"no answer within {DEADLINE:g} s"):
            client.infer("m", [b"x"])
        assert time.monotonic() - start <= DEADLINE + 1.0


def _huge(announce: bool) -> Callable[[socket.socket, threading.Event], None]:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        head = b"HTTP/1.1 200 OK\r\n" + (b"Content-Length: %d\r\n" % (400 << 20) if announce else b"Connection: close\r\n") + b"\r\n"
        conn.sendall(head)
        chunk = bytes(1 << 16)
        for _ in range(400 << 4):  # 400 MiB
            if stop.is_set():
                return
            conn.sendall(chunk)

    return answer


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "until-close"])
def test_edge_reads_no_more_than_its_cap(announce: bool) -> None:
    cap = 1 << 20
    with stub_server(_huge(announce)) as url:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError, match=str(cap)):
                KServeClient(url, timeout=10, max_response_bytes=cap).infer("m", [b"x"])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 4 * cap, peak


def _reply(raw: bytes, close: bool = False) -> Callable[[socket.socket, threading.Event], None]:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(raw)
        if close:
            conn.shutdown(socket.SHUT_RDWR)
            raise OSError("closed after answering")

    return answer


def test_edge_reports_a_redirect_with_its_target() -> None:
    with stub_server(_reply(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n")) as url:
        with pytest.raises(ServerRejectedError, match="redirect to http://127.0.0.1:1/elsewhere; not followed") as info:
            KServeClient(url, timeout=5).infer("m", [b"x"])
    assert info.value.status == 302


@pytest.mark.parametrize(
    "raw",
    [b"\x1b[2J\x1b[31mPWNED\x07\r\n\r\n", b'HTTP/1.1 400 Bad\r\nContent-Length: 29\r\n\r\n{"error": "\\u001b[2J\\u0007x"}'],
    ids=["status-line", "error-body"],
)
def test_edge_never_prints_a_servers_control_characters(raw: bytes) -> None:
    with stub_server(_reply(raw, close=True)) as url:
        with pytest.raises((MalformedResponseError, ServerRejectedError)) as info:
            KServeClient(url, timeout=5, retry=RetryPolicy(retries=0)).infer("m", [b"x"])
    message = str(info.value)
    assert "\x1b" not in message and "\x07" not in message and "\\x1b" in message, message


def test_edge_reports_the_503_of_a_server_that_closes_after_it() -> None:
    body = b'{"error": "draining", "kind": "unavailable"}'
    raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with stub_server(_reply(raw, close=True)) as url:
        client = KServeClient(url, timeout=5, retry=RetryPolicy(retries=2, base_delay=0.01))
        with pytest.raises(ServerUnreachableError) as info:
            client.infer("m", [b"x"])
    message = str(info.value)
    assert "after 3 attempts: HTTP 503: draining" in message and "BrokenPipe" not in message, message


def test_hostile_helpers_post_and_classify(server) -> None:
    """The benchmark's raw client reports statuses and closed connections as numbers."""
    address = _address(server)
    assert post_raw(address, "/v2/health/live", b"", {}) == 405
    assert post_raw(("127.0.0.1", 1), "/", b"", {}) == 0


@pytest.mark.slow
def test_hostile_benchmark_reports_every_target(onnx_bundle, tmp_path, capsys) -> None:
    """benchmarks/hostile.py end to end on short phases: structure and correctness only, no timing asserted."""
    from benchmarks.hostile import main as hostile_main

    code = hostile_main(["--artifacts", str(onnx_bundle), "--seconds", "1", "--results-dir", str(tmp_path)])
    written = json.loads((tmp_path / "hostile.json").read_text())
    doc = written["data"]
    assert [h["value"] for h in written["headline"]][2] == doc["server_errors"]
    assert code == 0, capsys.readouterr().out
    assert doc["server_errors"] == 0 and doc["normal_failed"] == 0 and doc["normal_loaded_ms"]["count"] > 0
    assert doc["shutdown"]["exit_code"] == 0 and doc["shutdown"]["queued_status"] == 200
    assert "health probe p99 beside hostile clients" in capsys.readouterr().out
