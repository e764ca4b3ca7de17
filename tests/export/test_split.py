"""export/split.py: every target that runs here, manifest and hashes, eager-vs-exported checks, atomic
writing, and the bad inputs (Stage 1 checkpoint, unknown target, missing calibration source, occupied
output directory)."""

from __future__ import annotations

import contextlib
import io
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import codec
from codec.bundle import BundleError, load_bundle, path_sha256
from codec.manifest import MANIFEST_NAME, Manifest, model_name_problem
from tests.codec.test_manifest import _manifest as _manifest_doc
from export import exporter
from export.bundle_writer import check_destination, finalize
from export.edge import inspect_coreml
from export.errors import ExportError
from export.exporter import ExportOptions, default_model_name, export_bundle
from runtime_edge.models import ExecuTorchModel, OnnxModel
from export.split import main as split_main
from export.tensorrt_engine import TensorRTUnavailable, build_engine, engine_source
from training.build import load_model
from training.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]

FAST = ["--calibration-samples", "16", "--check-samples", "8"]


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): path_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.fixture(scope="module")
def coreml_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "coreml"
    assert split_main(["--checkpoint", str(tiny_checkpoint), "--target", "coreml", "--out", str(out), *FAST]) == 0
    return out


@pytest.fixture(scope="module")
def tensorrt_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``--target tensorrt`` where TensorRT is not installed: the bundle and what the export printed."""
    out = tmp_path_factory.mktemp("export") / "tensorrt"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert split_main(["--checkpoint", str(tiny_checkpoint), "--target", "tensorrt", "--out", str(out), *FAST]) == 0
    return out, err.getvalue()


@pytest.fixture(scope="module")
def eager(tiny_checkpoint: Path):
    model, meta = load_model(tiny_checkpoint, stage="stage2")
    return model, meta


def _written(bundle) -> dict:
    """The manifest as written on disk (JSON)."""
    return json.loads((bundle.root / MANIFEST_NAME).read_text())


def test_executorch_bundle_manifest_hashes_and_runtime(executorch_bundle: Path, tiny_checkpoint: Path, eager) -> None:
    bundle = load_bundle(executorch_bundle)
    m = _written(bundle)
    model, meta = eager
    assert m["format"] == "mantis-bundle/1" and m["bitstream_version"] == codec.FORMAT_VERSION
    assert m["source_checkpoint"]["sha256"] == path_sha256(tiny_checkpoint)
    assert bundle.task_names == [t["name"] for t in meta["tasks"]]
    assert m["preprocessing"]["input_size"] == meta["preprocessing"]["input_size"]
    assert m["producer"]["executorch"] and m["producer"]["torch"]
    # every file of the bundle is listed with its hash, and nothing else is
    listed = set(m["files"])
    on_disk = {p.name for p in executorch_bundle.iterdir()} - {MANIFEST_NAME, "int8_check.json"}
    assert listed == on_disk == {"edge.pte", "server.onnx", "server.pt2", "tables.safetensors"}
    for name, digest in m["files"].items():
        assert path_sha256(executorch_bundle / name) == digest
    assert m["tables"]["table_id"] == bundle.tables.table_id.hex()
    q = m["edge"]["quantization"]
    assert q["calibration"]["samples"] == 32 and q["calibration"]["split"] == "train"
    assert sum(q["calibration"]["per_task"].values()) >= 32 and len(set(q["calibration"]["indices"])) == 32
    assert q["xnnpack"]["delegate_calls"] >= 1
    check = m["edge"]["check"]
    assert check["tolerance"]["vs_float_eager"]["min_symbol_agreement"] <= check["symbol_agreement"] <= 1
    assert check["lowering"]["symbol_agreement"] >= check["tolerance"]["vs_int8_pytorch_graph"]["min_symbol_agreement"]

    # the .pte runs on the ExecuTorch runtime with the shapes the manifest states, close to the eager client
    c, h, w = bundle.latent_shape
    run = ExecuTorchModel(bundle.path("edge.pte")).run
    x = torch.randn(*m["edge"]["inputs"][0]["shape"]) * 0.5
    latent, logits = run(x.numpy())
    assert list(latent.shape) == m["edge"]["outputs"][0]["shape"] == [1, c, h, w]
    assert list(logits.shape) == m["edge"]["outputs"][1]["shape"]
    with torch.no_grad():
        ref, _ = model.client(x)
    rel = np.sqrt(np.mean((latent - ref.numpy()) ** 2)) / ref.numpy().std()
    assert rel < check["tolerance"]["vs_float_eager"]["max_latent_rel_rmse"]


def test_bundle_tampering_is_named(executorch_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(executorch_bundle, copy)
    data = bytearray((copy / "server.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "server.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="server.onnx"):
        load_bundle(copy)
    shutil.copy(executorch_bundle / "server.onnx", copy / "server.onnx")
    (copy / "tables.safetensors").unlink()
    with pytest.raises(BundleError, match="tables.safetensors is missing"):
        load_bundle(copy)
    shutil.copy(executorch_bundle / "tables.safetensors", copy / "tables.safetensors")
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["tables"]["table_id"] = "0000"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="table_id"):
        load_bundle(copy)


def test_onnx_bundle_edge_int8_and_server_dynamic_batch(onnx_bundle: Path, eager) -> None:
    bundle = load_bundle(onnx_bundle)
    model, _ = eager
    edge = onnx.load(str(bundle.path("edge.onnx")))
    ops = {n.op_type for n in edge.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_inits = [i for i in edge.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert int8_inits, "weights are not stored as int8"
    latent, logits = OnnxModel(bundle.path("edge.onnx")).run(np.zeros(_written(bundle)["edge"]["inputs"][0]["shape"], np.float32))
    assert list(latent.shape) == _written(bundle)["edge"]["outputs"][0]["shape"]

    # server.onnx: dynamic batch, one output per task named logits_<task>, matches the eager server half
    session = ort.InferenceSession(str(bundle.path("server.onnx")), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [f"logits_{t}" for t in bundle.task_names]
    assert session.get_inputs()[0].shape[0] == "batch"
    loaded = torch.export.load(str(bundle.path("server.pt2"))).module()
    for batch in (1, 5):
        y = np.random.default_rng(batch).normal(size=(batch, *bundle.latent_shape)).astype(np.float32)
        outs = session.run(None, {"latent": y})
        with torch.no_grad():
            refs = model.server(torch.from_numpy(y))
            pt2 = loaded(torch.from_numpy(y))
        for o, r, p, t in zip(outs, refs, pt2, _written(bundle)["tasks"]):
            assert o.shape == (batch, len(t["labels"]))
            np.testing.assert_allclose(o, r.numpy(), rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(p.numpy(), r.numpy(), rtol=1e-5, atol=1e-6)
    assert _written(bundle)["server"]["onnx"]["check"]["tolerance"]["atol"] > 0


def test_coreml_convert_and_inspect(coreml_bundle: Path) -> None:
    bundle = load_bundle(coreml_bundle)
    assert _written(bundle)["edge"]["file"] == "edge.mlpackage" and (coreml_bundle / "edge.mlpackage").is_dir()
    info = inspect_coreml(bundle.path("edge.mlpackage"))
    assert info["inputs"] == _written(bundle)["edge"]["inputs"]
    assert info["outputs"] == _written(bundle)["edge"]["outputs"]
    assert info["ops"]["quantize"] > 0 and info["ops"]["dequantize"] > 0
    assert info["ops"]["constexpr_affine_dequantize"] > 0  # int8 weights
    assert info["ops"].get("conv", 0) > 0
    if platform.system() != "Darwin":
        assert "skipped" in _written(bundle)["edge"]["check"]["numeric"] and "macOS" in _written(bundle)["edge"]["check"]["numeric"]


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction needs macOS")
def test_coreml_numeric_on_macos(coreml_bundle: Path, eager) -> None:
    from runtime_edge.models import CoreMLModel

    bundle = load_bundle(coreml_bundle)
    model, _ = eager
    x = np.zeros(_written(bundle)["edge"]["inputs"][0]["shape"], np.float32)
    latent, _ = CoreMLModel(bundle.path("edge.mlpackage")).run(x)
    with torch.no_grad():
        ref = model.client(torch.from_numpy(x))[0].numpy()
    assert np.mean(codec.quantize(latent[0], bundle.tables) == codec.quantize(ref[0], bundle.tables)) > 0.9


def test_tensorrt_target_without_tensorrt(tensorrt_bundle: tuple[Path, str], tmp_path: Path) -> None:
    path, printed = tensorrt_bundle
    assert "TensorRT is not installed" in printed and "server.onnx" in printed and "usable" in printed
    bundle = load_bundle(path)
    assert "tensorrt" not in _written(bundle)["server"] and not (path / "server.plan").exists()
    assert _written(bundle)["edge"]["file"] == "edge.onnx" and _written(bundle)["edge"]["target"] == "tensorrt"
    # the fp16 ONNX the TensorRT 11 engine would be built from exists and was checked against eager
    assert _written(bundle)["server"]["onnx_fp16"]["check"]["argmax_agreement"] >= 0.95
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed.*server.onnx.*usable"):
        build_engine(path, tmp_path / "server.plan", bundle.latent_shape)
    assert engine_source(11)[0] == "server_fp16.onnx" and "strongly typed" in engine_source(11)[1]
    assert engine_source(10) == ("server.onnx", "weakly typed, BuilderFlag.FP16")
    with pytest.raises(ValueError):
        engine_source(8)


def test_stage1_checkpoint_rejected(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "b"
    rc = split_main(["--checkpoint", str(tiny_checkpoint.with_name("stage1.safetensors")), "--target", "onnx", "--out", str(out)])
    assert rc == 2 and "Stage 2" in capsys.readouterr().err
    assert not out.exists() and not _leftovers(tmp_path, "b")


def test_missing_checkpoint_and_unknown_target(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = split_main(["--checkpoint", str(tmp_path / "nope.safetensors"), "--target", "onnx", "--out", str(tmp_path / "b")])
    assert rc == 2 and "nope.safetensors: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        split_main(["--checkpoint", "x", "--target", "tflite", "--out", str(tmp_path / "b")])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown target 'tflite'"):
        export_bundle(ExportOptions(checkpoint=tmp_path / "x", target="tflite", out=tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_missing_calibration_source(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "data.yaml"
    base = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml"
    cfg.write_text(
        f"base: {base}\ndata:\n  kind: folder\n  folder:\n    root: {tmp_path / 'no_images'}\n    task_map: {tmp_path / 'tasks.yaml'}\n"
    )
    out = tmp_path / "b"
    rc = split_main(["--checkpoint", str(tiny_checkpoint), "--target", "onnx", "--out", str(out), "--data-config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and "tasks.yaml" in err
    rc = split_main(
        ["--checkpoint", str(tiny_checkpoint), "--target", "onnx", "--out", str(out), "--data-config", str(tmp_path / "none.yaml")]
    )
    assert rc == 2 and "none.yaml" in capsys.readouterr().err
    rc = split_main(["--checkpoint", str(tiny_checkpoint), "--target", "onnx", "--out", str(out), "--calibration-samples", "100000"])
    assert rc == 2 and "only 128 images" in capsys.readouterr().err
    assert not out.exists() and not _leftovers(tmp_path, "b")


def test_output_dir_holding_a_different_bundle(
    executorch_bundle: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = _snapshot(executorch_bundle)
    rc = split_main(["--checkpoint", str(tiny_checkpoint), "--target", "onnx", "--out", str(executorch_bundle)])
    assert rc == 2 and "holds a different bundle" in capsys.readouterr().err
    assert _snapshot(executorch_bundle) == before

    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    rc = split_main(["--checkpoint", str(tiny_checkpoint), "--target", "onnx", "--out", str(other), "--force"])
    assert rc == 2 and "not a bundle" in capsys.readouterr().err
    assert (other / "todo.txt").read_text() == "mine"


def test_destination_rules(executorch_bundle: Path, tmp_path: Path) -> None:
    sha = load_bundle(executorch_bundle).manifest.source_checkpoint["sha256"]
    check_destination(executorch_bundle, sha, "executorch", force=False)  # same checkpoint + target: replace
    check_destination(executorch_bundle, "0" * 64, "executorch", force=True)  # different, forced
    with pytest.raises(ExportError, match="different bundle"):
        check_destination(executorch_bundle, "0" * 64, "executorch", force=False)
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", sha, "onnx", force=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        check_destination(tmp_path / "file", sha, "onnx", force=False)


def test_finalize_replaces_atomically(tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "old.bin").write_bytes(b"old")
    staging = tmp_path / ".b.x.tmp"
    staging.mkdir()
    (staging / "new.bin").write_bytes(b"new")
    for name in ("tables.safetensors", "edge.pte", "server.onnx", "server.pt2"):
        (staging / name).write_bytes(name.encode())
    manifest = Manifest.from_dict(_manifest_doc())
    finalize(staging, out, manifest)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_NAME, "new.bin", "tables.safetensors", "edge.pte", "server.onnx", "server.pt2"]
    )
    assert json.loads((out / MANIFEST_NAME).read_text())["files"]["new.bin"] == path_sha256(out / "new.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_failed_export_leaves_old_bundle_and_no_debris(
    onnx_bundle: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    target = tmp_path / "bundle"
    shutil.copytree(onnx_bundle, target)
    before = _snapshot(target)

    # an int8 client that misses its tolerance (none can meet a zero one): the error says what helps
    monkeypatch.setitem(exporter.verify.EDGE_TOLERANCE, "max_latent_rel_rmse", 0.0)
    rc = split_main(["--checkpoint", str(tiny_checkpoint), "--target", "onnx", "--out", str(target), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: edge client (int8 vs float eager) does not match the eager model: latent_rel_rmse=")
    assert "--observer minmax (this export used histogram)" in err and "--calibration-samples N (this export used 16)" in err
    assert "--keep-float NAME" in err and "encoder.project" in err and "task_detector.classifier" in err
    assert f"uv run python calibration/sensitivity.py --checkpoint {tiny_checkpoint} --observer histogram" in err
    assert _snapshot(target) == before
    assert not _leftovers(tmp_path, "bundle")
    load_bundle(target)


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the message shown where Core ML cannot predict")
def test_int8_check_refuses_coreml_off_macos(coreml_bundle: Path) -> None:
    from calibration.int8_accuracy import CheckError, run_check

    with pytest.raises(CheckError, match="needs macOS"):
        run_check(coreml_bundle, samples=4)


def test_edge_latency_benchmark_runs_and_reports_ratios(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """benchmarks/edge_latency.py end to end at a small size, pinned to one thread (in a child process: the
    ExecuTorch thread pool is process-wide). Checks the report's structure, not the timings."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.edge_latency",
            "--checkpoint",
            str(tiny_checkpoint),
            "--size",
            "32",
            "--warmup",
            "1",
            "--repeats",
            "3",
            "--calibration-samples",
            "4",
            "--threads",
            "1",
            "--no-resnet",
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "int8 vs float eager" in proc.stdout
    written = json.loads((tmp_path / "edge_latency_1threads.json").read_text())
    result = written["data"]
    assert written["headline"][0]["value"] == round(result["speedup_int8_vs_float_eager"], 2)
    assert result["threads"] == {"torch": 1, "executorch": 1}
    assert result["input"] == [1, 3, 32, 32]
    assert len(result["timings_ms"]) == 4 and all(t["median"] > 0 for t in result["timings_ms"].values())
    assert result["pte_bytes"]["edge_int8.pte"] < result["pte_bytes"]["edge_fp32.pte"]
    assert 0 <= result["int8_latent_rel_rmse"] < 1


def test_keep_float_of_a_nested_module_on_onnx(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The README's example, ``--target onnx --keep-float encoder.project``: the layer stays float32."""
    out = tmp_path / "kept"
    argv = [
        "--checkpoint",
        str(tiny_checkpoint),
        "--target",
        "onnx",
        "--out",
        str(out),
        "--keep-float",
        "encoder.project",
        "--model-name",
        "pets-int8.v2",
    ]
    assert split_main([*argv, *FAST]) == 0
    assert _written(load_bundle(out))["edge"]["quantization"]["keep_float"] == ["encoder.project"]
    assert _written(load_bundle(out))["model_name"] == "pets-int8.v2"
    edge = onnx.load(str(out / "edge.onnx"))
    weights = {i.name: i.data_type for i in edge.graph.initializer if len(i.dims) == 4}
    project = [n for n in weights if "encoder.project" in n]
    assert project and all(weights[n] == onnx.TensorProto.FLOAT for n in project)
    assert any(t == onnx.TensorProto.INT8 for t in weights.values())


def test_misspelled_keep_float_module_is_an_error_line(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "parent" / "b"
    for target in ("onnx", "executorch"):
        rc = split_main(
            ["--checkpoint", str(tiny_checkpoint), "--target", target, "--out", str(out), "--keep-float", "encoder.projekt", *FAST]
        )
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert "'encoder.projekt'" in err and "encoder.project" in err.replace("'encoder.projekt'", "")
    assert not (tmp_path / "parent").exists()


def test_failed_export_removes_the_directories_it_created(tmp_path: Path) -> None:
    from export.bundle_writer import staging_dir

    (tmp_path / "user.txt").write_text("mine")
    with pytest.raises(ExportError):
        with staging_dir(tmp_path / "new" / "deeper" / "bundle") as staging:
            (staging / "edge.onnx").write_bytes(b"x")
            raise ExportError("edge check failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.txt"]


def test_default_model_name_comes_from_the_run_and_its_data(executorch_bundle: Path, tiny_checkpoint: Path) -> None:
    name = load_bundle(executorch_bundle).manifest.model_name
    assert name == f"{tiny_checkpoint.parent.name}-synthetic" == default_model_name(read_checkpoint(tiny_checkpoint)[1], tiny_checkpoint)

    def meta(data: dict) -> dict:
        return {"config": {"data": data}}

    folder = meta({"kind": "folder", "folder": {"root": "/data/Pets photos", "task_map": "/data/tasks.yaml"}})
    assert default_model_name(folder, Path("runs/pets/stage2.safetensors")) == "pets-Pets-photos"
    assert default_model_name(folder, Path("runs/Pets photos/stage2.safetensors")) == "Pets-photos"
    assert default_model_name(folder, Path("runs/b01/ablation_no_film.safetensors")) == "b01-Pets-photos-ablation_no_film"
    shards = meta(
        {"kind": "webdataset", "webdataset": {"train": "/srv/flowers/train-{0000..0003}.tar", "val": "x", "test": None, "task_map": "t"}}
    )
    assert default_model_name(shards, Path("/runs/f/stage2.safetensors")) == "f-flowers"
    added = {**meta({"kind": "synthetic"}), "base_checkpoint": {"path": "/runs/demo/stage2.safetensors", "sha256": "0"}}
    assert default_model_name(added, Path("/runs/demo_added/added_server.safetensors")) == "demo-synthetic"  # a new version of that model
    assert default_model_name(meta({"kind": "synthetic"}), Path("/" + "r" * 80 + "/stage2.safetensors")) == "r" * 64
    for n in (name, "pets-Pets-photos", "r" * 64):
        assert model_name_problem(n) is None


def test_unsafe_model_name_is_refused_before_any_work(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "b"
    rc = split_main(["--checkpoint", str(tiny_checkpoint), "--target", "onnx", "--out", str(out), "--model-name", "pets v2/x"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --model-name: 'pets v2/x' is not a safe model name (letters, digits")
    assert not out.exists()
