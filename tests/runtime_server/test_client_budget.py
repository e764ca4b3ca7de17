"""The budget of refused requests per client address (runtime_server/client_budget.py): the token bucket
itself, and on the real server over HTTP, gRPC and the compact stream: a client that keeps making mistakes
is held and answered rate_limited, other addresses are not touched, and the client is served again once it
waits."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from urllib.parse import urlsplit

import grpc
import pytest

from codec.stream import decode_answer, encode_request
from codec.wire import ERROR_KIND_PARAMETER, ERRORS, ProtocolError
from codec import kserve_grpc as pb
from runtime_edge.transport.stream import frame
from runtime_server.dataplane import ServerConfig
from runtime_server.http_frontend import BackgroundServer
from runtime_server.client_budget import ClientErrorBudget, ClientErrorLimits, RateLimitedError, charged, peer_address
from runtime_server.grpc_frontend import GrpcFrontend
from benchmarks.hostile import binary_request
from tests.tools.raw_websocket import open_raw_stream, read_frame

BURST = 3
REFILL = 2.0  # per second: a token every 0.5 s
HOLD = 0.3
LIMITS = ClientErrorLimits(burst=BURST, refill_per_s=REFILL, max_hold=HOLD)
OTHER_ADDRESS = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to loopback


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_client_mistakes_are_charged() -> None:
    assert {k for k in ERRORS if charged(k)} == {k for k, e in ERRORS.items() if 400 <= e.http < 500} - {"rate_limited"}
    assert not charged("unavailable") and not charged("backend") and not charged("disconnected") and not charged("internal")


def test_the_bucket_holds_burst_refusals_and_refills() -> None:
    clock = Clock()
    budget = ClientErrorBudget(ClientErrorLimits(burst=3, refill_per_s=2.0), clock)
    for _ in range(3):
        assert budget.wait("a") == 0
        budget.charge("a", "codec")
    assert budget.wait("a") == pytest.approx(0.5)
    assert budget.wait("b") == 0  # another address has its own bucket
    budget.charge("a", "unavailable")  # not the client's mistake: free
    assert budget.tokens("a") == pytest.approx(0.0)
    clock.now += 0.25
    assert budget.wait("a") == pytest.approx(0.25)
    clock.now += 10
    assert budget.tokens("a") == pytest.approx(3.0)  # never more than the burst
    off = ClientErrorBudget(ClientErrorLimits(burst=0), clock)
    for _ in range(100):
        off.charge("a", "codec")
    assert off.wait("a") == 0


def test_the_table_of_addresses_is_bounded() -> None:
    clock = Clock()
    budget = ClientErrorBudget(ClientErrorLimits(burst=2, refill_per_s=1.0, max_clients=4), clock)
    for i in range(50):
        budget.charge(f"10.0.0.{i}", "bad_request")
        budget.charge(f"10.0.0.{i}", "bad_request")
        clock.now += 0.1
    assert len(budget) == 4
    assert budget.wait("10.0.0.49") > 0  # the newest offenders are remembered, the oldest forgotten
    assert budget.wait("10.0.0.46") > 0 and budget.wait("10.0.0.45") == 0


@pytest.mark.parametrize("limits", [dict(burst=-1), dict(burst=0.5), dict(burst=2, refill_per_s=0), dict(max_hold=-1), dict(max_clients=0)])
def test_limits_are_checked(limits) -> None:
    with pytest.raises(ValueError):
        ClientErrorLimits(**limits)


def test_admit_holds_then_refuses_and_shutdown_cuts_the_hold() -> None:
    async def scenario() -> None:
        budget = ClientErrorBudget(ClientErrorLimits(burst=1, refill_per_s=0.5, max_hold=1.0))
        await budget.admit("a")  # within budget: at once
        budget.charge("a", "too_large")
        start = time.monotonic()
        with pytest.raises(RateLimitedError) as info:
            await budget.admit("a")
        assert 0.9 <= time.monotonic() - start < 1.5  # held for max_hold (a token is 2 s away)
        assert info.value.kind == "rate_limited" and info.value.status == 429 and info.value.retry_after == 1
        assert "too many refused requests from a" in str(info.value)
        closing = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.1, closing.set_result, None)
        start = time.monotonic()
        with pytest.raises(ProtocolError):
            await budget.admit("a", closing)
        assert time.monotonic() - start < 0.5
        assert budget.refused == 2 and budget.held == 0

    asyncio.run(scenario())


def test_peer_addresses() -> None:
    assert peer_address(("127.0.0.1", 5000)) == "127.0.0.1"
    assert peer_address("ipv4:10.1.2.3:45678") == "10.1.2.3"
    # IPv6: one key per /64, so that a client cannot change its low bits to get a fresh budget
    assert peer_address(("2001:db8:1:2::7", 5000, 0, 0)) == peer_address("ipv6:[2001:db8:1:2:ffff::1]:45678") == "2001:db8:1:2::/64"
    assert peer_address("ipv6:%5B2001:db8:1:3::1%5D:45678") == "2001:db8:1:3::/64"
    assert peer_address(("::ffff:10.0.0.5", 5000, 0, 0)) == "10.0.0.5"
    assert peer_address(("fe80::1%eth0", 5000, 0, 2)) == "fe80::/64"
    for nothing in ("unix:/tmp/socket", None, "", ("not an address", 1), "ipv4:garbage"):
        assert peer_address(nothing) is None


# ---- on the server --------------------------------------------------------------------------------------


@pytest.fixture
def server(onnx_bundle):
    """A fresh server per test (so that every test starts with full buckets), HTTP and gRPC."""
    srv = BackgroundServer(ServerConfig(onnx_bundle, max_batch_size=8, client_errors=LIMITS))
    srv.grpc = GrpcFrontend(srv.plane, "127.0.0.1", 0)
    with srv:
        yield srv


def _infer(srv: BackgroundServer, model: str, bitstream: bytes, source: str | None = None) -> tuple[int, dict, dict]:
    """One single-image request on its own connection from ``source``: status, headers, JSON body (or {})."""
    parts = urlsplit(srv.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10, source_address=(source, 0) if source else None)
    try:
        body, headers = binary_request([bitstream])
        conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        parsed = json.loads(data) if resp.getheader("Content-Type", "").startswith("application/json") else {}
        return resp.status, dict(resp.getheaders()), parsed
    finally:
        conn.close()


def test_http_client_over_its_budget_is_held_and_answered_429(server, bundle, good) -> None:
    model = bundle.manifest.model_name
    bad = good[:-3]  # a truncated bitstream: 400 codec
    for _ in range(BURST):
        assert _infer(server, model, bad)[0] == 400
    start = time.monotonic()
    status, headers, body = _infer(server, model, good)  # even a good request waits its turn
    held = time.monotonic() - start
    assert status == 429 and body["kind"] == "rate_limited" and "too many refused requests from 127.0.0.1" in body["error"]
    assert headers["Retry-After"] == "1" and HOLD - 0.05 <= held < HOLD + 1.0
    # another address is not affected, and is not held
    start = time.monotonic()
    assert _infer(server, model, good, OTHER_ADDRESS)[0] == 200
    assert time.monotonic() - start < HOLD
    # the offender is served again once it has waited for a token
    time.sleep(1.0 / REFILL + 0.1)
    assert _infer(server, model, good)[0] == 200
    assert server.plane.client_errors.refused == 1


def _spend_on_stream(send_bad, max_messages: int = BURST + 3) -> list[str]:
    """Send bad messages one at a time (``send_bad()`` gives the kind of its answer) until one is refused
    as rate_limited; the kinds, in order."""
    kinds: list[str] = []
    while len(kinds) < max_messages and "rate_limited" not in kinds:
        kinds.append(send_bad())
    return kinds


def test_grpc_and_compact_stream_share_the_budget(server, bundle, good) -> None:
    import queue

    model = bundle.manifest.model_name
    for _ in range(BURST):
        assert _infer(server, model, good[:-3])[0] == 400  # mistakes over HTTP count on gRPC too
    target = urlsplit(server.grpc.url).netloc
    request = pb.ModelInferRequest(model_name=model, id="good")
    request.inputs.add(name="bitstream", datatype="BYTES", shape=[1]).contents.bytes_contents.append(good)
    bad = pb.ModelInferRequest(model_name=model, id="bad")
    bad.inputs.add(name="bitstream", datatype="BYTES", shape=[1]).contents.bytes_contents.append(good[:-3])
    with grpc.insecure_channel(target) as channel:
        m = pb.METHODS["ModelInfer"]
        infer = channel.unary_unary(m.path, request_serializer=m.request.SerializeToString, response_deserializer=m.response.FromString)
        with pytest.raises(grpc.RpcError) as info:
            infer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many refused requests" in info.value.details()
        assert dict(info.value.trailing_metadata())[ERROR_KIND_PARAMETER] == "rate_limited"
        # On a stream a refusal is an answer: bad messages are refused (codec) until the budget is spent, then
        # rate_limited; the stream goes on.
        time.sleep(2.0 / REFILL)
        outbox: queue.Queue = queue.Queue()
        ms = pb.METHODS["ModelStreamInfer"]
        stream = channel.stream_stream(
            ms.path, request_serializer=ms.request.SerializeToString, response_deserializer=ms.response.FromString
        )
        answers = stream(iter(outbox.get, None), timeout=30)

        def send_bad() -> str:
            outbox.put(bad)
            answer = next(answers)
            return answer.infer_response.parameters[ERROR_KIND_PARAMETER].string_param if answer.error_message else "ok"

        kinds = _spend_on_stream(send_bad)
        outbox.put(None)
        assert kinds[0] == "codec" and kinds[-1] == "rate_limited" and set(kinds) == {"codec", "rate_limited"}, kinds
    # the compact stream: the same, with the contract's stream code
    time.sleep(2.0 / REFILL)
    labels = [len(bundle.labels(t)) for t in bundle.task_names]
    with open_raw_stream(f"{server.url}/v2/models/{model}/stream") as ws:
        ids = iter(range(1, 100))

        def send_bad_frame() -> str:
            ws.sendall(frame(0x2, encode_request(next(ids), [good[:-3]])))
            answer = decode_answer(read_frame(ws)[1], 1, 1, labels)
            return "ok" if answer.error is None else answer.error.name

        kinds = _spend_on_stream(send_bad_frame)
        assert kinds[0] == "codec" and kinds[-1] == "rate_limited" and set(kinds) == {"codec", "rate_limited"}, kinds
        assert ERRORS["rate_limited"].stream == 12
