"""The edge runtime on a real int8 ExecuTorch bundle: end to end through serve.py on loopback, offline
--save mode, bad input, an unreachable or rejecting server, and what it imports."""

from __future__ import annotations

import json
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import codec
from codec.bundle import load_bundle
from codec.wire import STREAM_PATH
from runtime_edge import run as edge_cli
from runtime_edge.client import EdgeRuntime
from runtime_edge.models import CoreMLModel, EdgeRuntimeError
from runtime_edge.predict import request_predictions
from runtime_edge.preprocess import ImageError, load_image
from runtime_edge.transport import RetryPolicy, ServerRejectedError
from runtime_edge.transport.http import KServeClient
from runtime_server.process import ServerProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def edge(executorch_bundle: Path) -> EdgeRuntime:
    return EdgeRuntime(executorch_bundle)


@pytest.fixture(scope="module")
def server(executorch_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """serve.py as a child process on a free loopback port, with gRPC on another."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    grpc_port = _free_port()
    with ServerProcess(executorch_bundle, log, ["--grpc-port", str(grpc_port)]) as srv:
        srv.grpc_url = f"grpc://127.0.0.1:{grpc_port}"
        yield srv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference_logits(bundle_dir: Path, bitstream: bytes) -> tuple[list[np.ndarray], int]:
    """In-process reference: codec decode + the server half (server.onnx) run directly."""
    bundle = load_bundle(bundle_dir)
    latent, mask = codec.decode_latent(bitstream, bundle.tables)
    session = ort.InferenceSession(str(bundle.path(bundle.manifest.server["onnx"].file)), providers=["CPUExecutionProvider"])
    names = [f"logits_{t}" for t in bundle.task_names]
    return [o[0] for o in session.run(names, {session.get_inputs()[0].name: latent[None]})], mask


def test_encode_is_deterministic_and_decodable(edge: EdgeRuntime, images: list[Path]) -> None:
    enc = edge.encode(images[0])
    again = edge.encode(load_image(images[0]))
    assert enc.bitstream == again.bitstream and enc.task_mask == again.task_mask
    decoded = codec.decode(enc.bitstream, edge.bundle.tables)
    assert decoded.task_mask == enc.task_mask and decoded.symbols.shape == edge.latent_shape
    # the symbols are the quantized output of the real .pte on the manifest's preprocessing
    latent, logits = edge.run_model(edge.preprocess(load_image(images[0])))
    np.testing.assert_array_equal(decoded.symbols, codec.quantize(latent, edge.bundle.tables))
    assert enc.task_mask == edge.bundle.task_mask(logits)
    assert set(enc.timings) == {"preprocess_ms", "edge_ms", "entropy_ms", "total_ms"}
    assert all(v > 0 for v in enc.timings.values())


def test_end_to_end_answers_equal_the_in_process_reference(
    edge: EdgeRuntime, server: ServerProcess, images: list[Path], executorch_bundle: Path
) -> None:
    tasks = edge.bundle.task_names
    labels = {t: edge.bundle.labels(t) for t in tasks}
    encoded = [edge.encode(p) for p in images]
    with KServeClient(server.url, timeout=10) as client:
        batch, result = request_predictions(client, edge.model_name, [e.bitstream for e in encoded], tasks, labels, top_k=3, scores=True)
        single = [request_predictions(client, edge.model_name, [e.bitstream], tasks, labels, top_k=3, scores=True)[0][0] for e in encoded]
    assert result.request_bytes > sum(e.num_bytes for e in encoded)
    for enc, pred, one in zip(encoded, batch, single):
        ref_logits, ref_mask = _reference_logits(executorch_bundle, enc.bitstream)
        assert ref_mask == enc.task_mask
        assert pred.active_tasks == edge.active_tasks(enc.task_mask) == one.active_tasks
        for t, task in enumerate(tasks):
            np.testing.assert_allclose(pred.logits[task], ref_logits[t], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(one.logits[task], ref_logits[t], rtol=1e-5, atol=1e-5)
            if task in pred.active_tasks:
                order = np.argsort(-ref_logits[t], kind="stable")[:3]
                assert pred.tasks[task].labels == [labels[task][j] for j in order]
                assert pred.tasks[task].probabilities == sorted(pred.tasks[task].probabilities, reverse=True)
            else:
                assert task not in pred.tasks


def test_cli_sends_and_prints_answers(
    executorch_bundle: Path, server: ServerProcess, images: list[Path], edge: EdgeRuntime, capsys: pytest.CaptureFixture
) -> None:
    code = edge_cli.main(["--artifacts", str(executorch_bundle), "--server", server.url, "--batch-size", "4", *map(str, images)])
    out = capsys.readouterr().out
    assert code == 0
    for path in images:
        enc = edge.encode(path)
        line = next(l for l in out.splitlines() if l.startswith(f"{path}:"))
        assert f"{enc.num_bytes} bytes sent" in line
        assert line.endswith("active tasks: " + ", ".join(edge.active_tasks(enc.task_mask)))
    assert f"{len(images)} images" in out


@pytest.mark.parametrize("scheme", ["http", "host:port", "grpc", "ws", "ws-route"])
def test_cli_over_each_transport(
    scheme: str, executorch_bundle: Path, server: ServerProcess, images: list[Path], edge: EdgeRuntime, capsys: pytest.CaptureFixture
) -> None:
    """The same answers over KServe HTTP (HOST:PORT alone is HTTP), one gRPC stream, and the compact stream (also
    when the URL is the stream's documented route); --scores adds probabilities, and with ws:// it is a usage error."""
    ws = server.url.replace("http://", "ws://")
    url = {
        "http": server.url,
        "host:port": server.url.removeprefix("http://"),
        "grpc": server.grpc_url,
        "ws": ws,
        "ws-route": ws + STREAM_PATH.replace("{model}", edge.model_name),
    }[scheme]
    assert edge_cli.main(["--artifacts", str(executorch_bundle), "--server", url, "--top-k", "2", *map(str, images)]) == 0
    out = capsys.readouterr().out
    tasks = edge.bundle.task_names
    for path in images:
        enc = edge.encode(path)
        ref_logits, _ = _reference_logits(executorch_bundle, enc.bitstream)
        lines = out.splitlines()
        at = next(i for i, l in enumerate(lines) if l.startswith(f"{path}:"))
        active = edge.active_tasks(enc.task_mask)
        assert lines[at].endswith("active tasks: " + ", ".join(active))
        for k, task in enumerate(active):
            order = np.argsort(-ref_logits[tasks.index(task)], kind="stable")[:2]
            assert lines[at + 1 + k] == f"  {task}: " + ", ".join(edge.bundle.labels(task)[j] for j in order)
    if not scheme.startswith("ws"):
        assert edge_cli.main(["--artifacts", str(executorch_bundle), "--server", url, "--scores", str(images[0])]) == 0
        scored = capsys.readouterr().out
        assert re.search(r"^  \S+: \S+ \([01]\.\d\d\)$", scored, re.M), scored
        assert "1 image, " in scored
    else:
        with pytest.raises(SystemExit) as info:
            edge_cli.main(["--artifacts", str(executorch_bundle), "--server", url, "--scores", str(images[0])])
        assert info.value.code == 2
        assert "--scores needs the logits, which the compact stream (ws://) does not carry" in capsys.readouterr().err


def test_cli_save_writes_the_bitstreams(
    executorch_bundle: Path, images: list[Path], edge: EdgeRuntime, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out_dir = tmp_path / "mtb"
    assert edge_cli.main(["--artifacts", str(executorch_bundle), "--save", str(out_dir), *map(str, images)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{p.stem}.mtb" for p in images)
    for path in images:
        data = (out_dir / f"{path.stem}.mtb").read_bytes()
        enc = edge.encode(path)
        assert data == enc.bitstream
        assert codec.decode(data, edge.bundle.tables).task_mask == enc.task_mask
        assert f"{path}: {len(data)} bytes -> {out_dir / (path.stem + '.mtb')}" in out
    # two images with the same stem would overwrite each other's .mtb: refused before writing
    twin = tmp_path / "other" / images[0].name
    twin.parent.mkdir()
    shutil.copy(images[0], twin)
    assert edge_cli.main(["--artifacts", str(executorch_bundle), "--save", str(tmp_path / "x"), str(images[0]), str(twin)]) == 2
    assert "share the stem" in capsys.readouterr().err


def test_bad_image_is_named_and_the_others_are_answered(
    executorch_bundle: Path, images: list[Path], edge: EdgeRuntime, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Each unreadable input gets an error line naming it; the readable images are still encoded; the exit status says
    that not everything was."""
    bad = tmp_path / "broken.png"
    bad.write_bytes(images[0].read_bytes()[:60])  # a truncated PNG
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    code = edge_cli.main(
        ["--artifacts", str(executorch_bundle), "--save", str(tmp_path / "out"), str(bad), str(images[0]), str(text), str(missing)]
    )
    captured = capsys.readouterr()
    assert code == 2
    for p in (bad, text, missing):
        assert f"{p}: " in captured.err
    assert "3 inputs could not be read (named above); 1 image saved" in captured.err
    assert (tmp_path / "out" / f"{images[0].stem}.mtb").read_bytes() == edge.encode(images[0]).bitstream
    assert "1 image, " in captured.out
    with pytest.raises(ImageError, match="broken.png"):
        load_image(bad)
    # only unreadable inputs: nothing is loaded or written
    assert edge_cli.main(["--artifacts", str(executorch_bundle), "--save", str(tmp_path / "none"), str(bad), str(missing)]) == 2
    assert not (tmp_path / "none").exists()


def test_a_folder_is_its_images(
    executorch_bundle: Path, images: list[Path], edge: EdgeRuntime, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for path in images[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: not taken
    (folder / ".hidden.png").write_bytes(b"")
    shutil.copy(images[2], folder / "sub" / images[2].name)  # subfolders are not searched
    empty = tmp_path / "empty"
    empty.mkdir()
    code = edge_cli.main(["--artifacts", str(executorch_bundle), "--save", str(tmp_path / "out"), str(folder), str(empty)])
    captured = capsys.readouterr()
    assert code == 2 and f"folder {empty}: no image files directly inside it" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}.mtb" for p in images[:2])
    assert "2 images, " in captured.out
    assert edge_cli.main(["--artifacts", str(executorch_bundle), "--save", str(tmp_path / "out2"), str(folder)]) == 0


def test_missing_or_corrupted_artifacts(executorch_bundle: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert edge_cli.main(["--artifacts", str(tmp_path / "nowhere"), "--save", str(tmp_path / "o"), str(images[0])]) == 2
    assert "nowhere" in capsys.readouterr().err
    broken = tmp_path / "bundle"
    shutil.copytree(executorch_bundle, broken)
    data = bytearray((broken / "edge.pte").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "edge.pte").write_bytes(bytes(data))
    assert edge_cli.main(["--artifacts", str(broken), "--save", str(tmp_path / "o"), str(images[0])]) == 2
    err = capsys.readouterr().err
    assert "edge.pte" in err and "corrupted" in err


def test_unreachable_server_fails_after_bounded_retries(executorch_bundle: Path, images: list[Path], capsys: pytest.CaptureFixture) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    code = edge_cli.main(["--artifacts", str(executorch_bundle), "--server", url, "--retries", "2", "--timeout", "2", str(images[0])])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1
    assert f"server {url} unreachable after 3 attempts" in err and "ConnectionRefused" in err
    assert elapsed < 30  # back-off 0.2 + 0.4 s, plus loading the bundle


def test_rejected_bitstream_reports_the_server_reason(edge: EdgeRuntime, server: ServerProcess, images: list[Path]) -> None:
    good = edge.encode(images[0]).bitstream
    with KServeClient(server.url, retry=RetryPolicy(retries=0)) as client:
        with pytest.raises(ServerRejectedError) as info:
            client.infer(edge.model_name, [good, good[:-3]])
        assert info.value.status == 400
        assert "bitstream[1]" in info.value.reason and "Error" in info.value.reason
        with pytest.raises(ServerRejectedError) as info:
            client.infer("no-such-model", [good])
        assert info.value.status == 404 and "no-such-model" in info.value.reason


def test_coreml_needs_macos(tmp_path: Path) -> None:
    if platform.system() == "Darwin":
        pytest.skip("Core ML predicts on macOS")
    with pytest.raises(EdgeRuntimeError, match="macOS"):
        CoreMLModel(tmp_path / "edge.mlpackage")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


# The codec may load CompressAI's C++ rANS extension on its own (``compressai.ans``, no torch); the
# ``compressai`` package itself imports torch and must stay out.
HEAVY = {"training", "torch", "torchvision", "torchdistill", "calibration", "export", "mantis_demo"}


def test_runtime_edge_imports_nothing_from_training() -> None:
    mods = _modules_after("import runtime_edge.client, runtime_edge.transport, runtime_edge.predict, runtime_edge.run")
    assert {"runtime_edge", "codec"} <= _top(mods)
    assert not _top(mods) & HEAVY and "compressai" not in mods


def test_onnx_edge_client_runs_without_torch(onnx_bundle: Path, images: list[Path]) -> None:
    """A device with the ONNX bundle needs numpy, Pillow and onnxruntime only."""
    mods = _modules_after(
        "from runtime_edge.client import EdgeRuntime\n"
        f"enc = EdgeRuntime({str(onnx_bundle)!r}).encode({str(images[0])!r})\n"
        "assert len(enc.bitstream) > 0\n"
    )
    assert "onnxruntime" in _top(mods)
    assert not _top(mods) & HEAVY and "compressai" not in mods
