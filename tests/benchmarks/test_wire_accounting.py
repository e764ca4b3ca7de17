"""The compact stream's messages (codec/stream.py), the byte-counting proxy, and a tiny wire-accounting run
against a real server."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from codec.stream import (
    StreamFormatError,
    TooManyImagesError,
    decode_answer,
    decode_request,
    encode_answer,
    encode_refusal,
    encode_request,
    get_varint,
    put_varint,
    read_request_id,
)
from codec.wire import ERRORS, kind_for_stream_code
from benchmarks.wire_accounting import TRANSPORTS, ByteCountingProxy, measure_transports


def test_varints_round_trip_and_refuse_overlong() -> None:
    for value in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        out = bytearray()
        put_varint(value, out)
        assert get_varint(bytes(out), 0, "v") == (value, len(out))
    assert get_varint(bytes([0x80] * 8 + [0x01]), 0, "v")[0] == 1 << 56
    with pytest.raises(StreamFormatError, match="longer than 9"):
        get_varint(bytes([0x80] * 10), 0, "v")
    with pytest.raises(StreamFormatError, match="ends inside"):
        get_varint(b"\x80", 0, "v")


def test_request_round_trip_and_malformed_requests() -> None:
    streams = [b"MT" + bytes(50), b"", bytes(range(200))]
    msg = encode_request(300, streams, top_k=3)
    assert len(msg) == 2 + 1 + (1 + 52) + 1 + (2 + 200)  # id 300 takes two bytes, length 200 too
    req = decode_request(msg, max_images=3)
    assert (req.id, req.top_k, req.bitstreams) == (300, 3, streams)
    with pytest.raises(TooManyImagesError, match="more than 2"):
        decode_request(msg, max_images=2)
    for bad, message in [
        (b"", "inside a varint"),
        (b"\x01", "top_k byte"),
        (b"\x01\x00\x00", "top_k must"),
        (b"\x01\x01", "no bitstream"),
        (b"\x01\x01\x05ab", "claims 5 bytes"),
        (b"\x00\x01\x01a", "reserved"),
    ]:
        with pytest.raises(StreamFormatError, match=message):
            decode_request(bad, max_images=4)
    assert read_request_id(b"\xff\xff") == 0 and read_request_id(msg) == 300
    with pytest.raises(ValueError, match="start at 1"):
        encode_request(0, streams)
    with pytest.raises(ValueError, match="top_k"):
        encode_request(1, streams, top_k=256)


def test_answer_round_trip_and_refusals() -> None:
    counts = [4, 2, 300]
    index = np.full((2, 3, 3), -1, dtype=np.int32)
    index[0, 0] = [3, 1, 0]
    index[0, 2] = [299, 7, 5]
    index[1, 1, :2] = [1, 0]  # task 1 has two labels: k stops there
    msg = encode_answer(9, index, counts)
    answer = decode_answer(msg, images=2, top_k=3, label_counts=counts)
    assert answer.id == 9 and answer.error is None
    assert answer.labels == [{0: [3, 1, 0], 2: [299, 7, 5]}, {1: [1, 0]}]
    top1 = encode_answer(1, index[:1, :, :1], counts)
    assert top1 == bytes([1, 0, 0b101, 3]) + bytes([0xAB, 0x02])  # 299 = 0xAB 0x02 as a varint
    with pytest.raises(StreamFormatError, match="after its 1 images"):
        decode_answer(top1 + b"\x00", images=1, top_k=1, label_counts=counts)
    with pytest.raises(StreamFormatError, match="beyond the model"):
        decode_answer(bytes([1, 0, 0b1000]), images=1, top_k=1, label_counts=counts)
    with pytest.raises(StreamFormatError, match="outside its 4 labels"):
        decode_answer(bytes([1, 0, 0b1, 4]), images=1, top_k=1, label_counts=counts)
    for kind in ERRORS:
        refusal = decode_answer(encode_refusal(5, kind, "what went wrong"), images=1, top_k=1, label_counts=counts)
        assert (refusal.id, refusal.error.name, refusal.message) == (5, kind, "what went wrong")
        assert kind_for_stream_code(ERRORS[kind].stream).name == kind
    assert len(encode_refusal(1, "codec", "x" * 5000)) == 2 + 1024
    with pytest.raises(StreamFormatError, match="unknown status"):
        decode_answer(bytes([1, 200]), images=1, top_k=1, label_counts=counts)


def test_proxy_counts_every_byte_each_way() -> None:
    """An echo server that answers twice what it gets, behind the proxy."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data * 2)

    threading.Thread(target=echo, daemon=True).start()
    with ByteCountingProxy(listener.getsockname()) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            got = b""
            for chunk in (b"a" * 10, b"b" * 1000):
                s.sendall(chunk)
                while len(got) < 2 * (10 if chunk[:1] == b"a" else 1010):
                    got += s.recv(65536)
        assert proxy.totals() == (1010, 2020) and proxy.connections == 1
        proxy.reset()
        assert proxy.totals(settle=0) == (0, 0)
    listener.close()


def test_tiny_wire_accounting_run(onnx_bundle) -> None:
    """Three real bitstreams and two non-bitstream files over every transport of a real server."""
    from codec.bundle import load_bundle
    from runtime_server.dataplane import ServerConfig
    from runtime_server.http_frontend import BackgroundServer
    from runtime_server.grpc_frontend import GrpcFrontend
    from benchmarks.loadgen import synthetic_bitstreams

    bundle = load_bundle(onnx_bundle)
    counts = [len(bundle.labels(t)) for t in bundle.task_names]
    bitstreams = synthetic_bitstreams(onnx_bundle, 3)
    files = [b"\xff\xd8\xff" + bytes(300), b"\xff\xd8\xff" + bytes(500)]
    srv = BackgroundServer(ServerConfig(onnx_bundle))
    frontend = GrpcFrontend(srv.plane, "127.0.0.1", 0)
    with srv:
        port = int(srv.url.rsplit(":", 1)[1])
        rows = measure_transports(
            ("127.0.0.1", port),
            ("127.0.0.1", frontend.bound_port),
            bundle.manifest.model_name,
            {"MANTiS": bitstreams, "files": files},
            counts,
            log=lambda m: None,
        )
    assert [(r.payload, r.transport) for r in rows] == [(p, t.label) for p in ("MANTiS", "files") for t in TRANSPORTS]
    for r in rows:
        assert r.connections == 1
        assert r.up_bytes > sum(map(len, bitstreams if r.payload == "MANTiS" else files))
        assert (r.answered, r.refused) == ((3, 0) if r.payload == "MANTiS" else (0, 2)), r
    compact = next(r for r in rows if r.payload == "MANTiS" and r.transport == "compact stream")
    # 6 bytes of client frame header + 3 bytes of message header per request, plus the handshake and close
    assert compact.up_bytes > sum(len(b) + 9 for b in bitstreams)
    small, full = (
        next(r for r in rows if r.payload == "MANTiS" and r.transport == t) for t in ("HTTP, batch 1", "HTTP, batch 1, every output")
    )
    assert small.down_bytes < full.down_bytes
