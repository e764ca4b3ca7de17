"""serve.py's lifecycle: graceful shutdown finishes in-flight requests (SIGTERM to the real CLI process),
and a restart while a client is still sending gives that client a 503 (retry) and leaves a working new
server on the same port."""

from __future__ import annotations

import http.client
import json
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from codec.bundle import load_bundle
from runtime_server.dataplane import ServerConfig
from runtime_server.http_frontend import BackgroundServer
from runtime_server.backends import BackendUnavailableError
from benchmarks.server_throughput import main as benchmark_main
from runtime_server.process import ServerProcess, ServerStartError
from codec.wire import HEADER_LENGTH, pack_bytes
from runtime_server.serve import main as serve_main

REPO = Path(__file__).resolve().parents[2]


def _bitstream(bundle) -> bytes:
    import codec
    import numpy as np

    c, h, w = bundle.latent_shape
    latent = np.random.default_rng(0).standard_normal((c, h, w)).astype(np.float32)
    return codec.encode_latent(latent, 1, bundle.tables)


def _infer_body(bitstream: bytes) -> tuple[bytes, dict[str, str]]:
    payload = pack_bytes([bitstream])
    head = json.dumps(
        {"inputs": [{"name": "bitstream", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(payload)}}]}
    ).encode()
    return head + payload, {HEADER_LENGTH: str(len(head))}


def _post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _start_serve(args: list[str], timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Run serve.py and return the process and the URL it announces once ready."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "runtime_server" / "serve.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            if line.startswith("serving "):
                return proc, line.rsplit(" at ", 1)[1].strip()
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"serve.py did not start: {proc.communicate()[1][-2000:]}")


def test_sigterm_finishes_in_flight_request(onnx_bundle):
    bundle = load_bundle(onnx_bundle)
    name = bundle.manifest.model_name
    # A long queue delay keeps the request in flight (queued for a batch) when SIGTERM arrives.
    proc, url = _start_serve(["--artifacts", str(onnx_bundle), "--port", "0", "--max-batch-size", "64", "--max-queue-delay-ms", "1500"])
    try:
        assert urlsplit(url).hostname == "127.0.0.1"
        body, headers = _infer_body(_bitstream(bundle))
        answer: dict = {}
        client = threading.Thread(target=lambda: answer.update(r=_post(url, f"/v2/models/{name}/infer", body, headers)))
        start = time.monotonic()
        client.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        client.join(30)
        assert answer["r"][0] == 200, answer
        assert time.monotonic() - start >= 1.4  # it was answered after its queue delay, not cut off
        assert proc.wait(30) == 0
        with pytest.raises(ConnectionRefusedError):
            _post(url, "/v2/health/live", b"", {})
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_restart_while_client_is_sending(onnx_bundle):
    bundle = load_bundle(onnx_bundle)
    name = bundle.manifest.model_name
    body, headers = _infer_body(_bitstream(bundle))
    config = ServerConfig(onnx_bundle)
    first = BackgroundServer(config, shutdown_timeout=1.0).start()
    port = urlsplit(first.url).port

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", f"/v2/models/{name}/infer")
    for k, v in {**headers, "Content-Length": str(len(body))}.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(body[: len(body) // 2])
    time.sleep(0.2)
    first.stop()  # the half-sent request is answered 503 at once: it was still uploading, not in flight

    resp = conn.getresponse()
    assert resp.status == 503 and "shutting down" in json.loads(resp.read())["error"]
    conn.close()

    with BackgroundServer(config, port=port) as second:
        status, answer = _post(second.url, f"/v2/models/{name}/infer", body, headers)
        assert status == 200, answer
        assert json.loads(answer)["model_name"] == name  # no binary outputs requested: a pure JSON answer


def test_startup_errors_are_clear(onnx_bundle, tmp_path, capsys):
    assert serve_main(["--artifacts", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err

    assert serve_main(["--artifacts", str(onnx_bundle), "--backend", "tensorrt"]) == 2
    assert "tensorrt" in capsys.readouterr().err  # not installed here, or no GPU, or no engine

    assert serve_main(["--artifacts", str(onnx_bundle), "--token-file", str(tmp_path / "nope.txt")]) == 2
    assert "token file" in capsys.readouterr().err

    damaged = tmp_path / "damaged"
    shutil.copytree(onnx_bundle, damaged)
    with open(damaged / "server.onnx", "ab") as fh:
        fh.write(b"\0")
    assert serve_main(["--artifacts", str(damaged)]) == 2
    assert "server.onnx" in capsys.readouterr().err

    # A manifest whose tasks do not match the server half: caught by the warm-up before serving.
    mismatched = tmp_path / "mismatched"
    shutil.copytree(onnx_bundle, mismatched)
    manifest = json.loads((mismatched / "manifest.json").read_text())
    manifest["tasks"][0]["labels"].append("extra")
    (mismatched / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailableError, match="shapes"):
        BackgroundServer(ServerConfig(mismatched)).start()


def test_server_process_that_cannot_start_says_why(tmp_path: Path) -> None:
    """The helper that runs serve.py as a child (demo, benchmark, tests) reports the exit and the log's end."""
    log = tmp_path / "serve.log"
    with pytest.raises(ServerStartError, match="exited with status 2") as info:
        ServerProcess(tmp_path / "no_bundle", log, ready_timeout=60).start()
    assert "no_bundle" in str(info.value) and log.read_text()


def test_throughput_benchmark_drives_both_configurations(onnx_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/server_throughput.py on a small load: both servers answer everything, the batch-1 server never
    batches, and the JSON holds what the table prints. Structure only: no timing is asserted."""
    code = benchmark_main(
        [
            "--artifacts",
            str(onnx_bundle),
            "--clients",
            "4",
            "--requests",
            "48",
            "--rounds",
            "2",
            "--time-cap",
            "60",
            "--results-dir",
            str(tmp_path),
        ]
    )
    assert code == 0, capsys.readouterr().err
    written = json.loads((tmp_path / "server_throughput_onnxruntime.json").read_text())
    assert written["headline"][1]["value"] == 0 and written["headline"][0]["value"] > 0
    assert [row[0] for row in written["tables"][0]["rows"]] == [c["label"] for c in written["data"]["configs"]]
    doc = written["data"]
    assert doc["failed"] == 0 and doc["ratio"] > 0
    dynamic, single = doc["configs"]
    assert dynamic["ok"] == single["ok"] == 48
    assert single["mean_batch"] == 1.0 and dynamic["mean_batch"] >= 1.0
    assert "throughput ratio dynamic / batch size 1" in capsys.readouterr().out


def test_throughput_benchmark_reports_a_server_that_fails(onnx_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = benchmark_main(["--artifacts", str(onnx_bundle), "--backend", "tensorrt", "--requests", "4"])
    assert code == 2
    assert "serve.py exited" in capsys.readouterr().err
