"""codec/manifest.py and codec/bundle.py without an export: the typed schema, its errors, the task-mask rule, tree hashes, and
the edge runtime's preprocessing against the training pipeline."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec.format import FORMAT_VERSION, MAX_MASK_TASKS
from codec.bundle import Bundle, BundleError, load_bundle, read_manifest, tree_sha256
from codec.manifest import MAX_MODEL_TASKS, Manifest, ManifestError, Preprocessing, task_mask_from_logits
from runtime_edge.preprocess import preprocess
from training.data.common import Normalizer, preprocessing_meta

PRE = {
    "input_size": [24, 32],
    "mean": [0.4, 0.5, 0.6],
    "std": [0.2, 0.25, 0.3],
    "color": "RGB",
    "value_range": [0.0, 1.0],
    "resize": "bilinear",
    "layout": "NCHW",
}
TENSOR = {"name": "image", "dtype": "float32", "shape": [1, 3, 24, 32]}


def _manifest(**over) -> dict:
    m = {
        "format": "mantis-bundle/1",
        "model_name": "m",
        "bitstream_version": FORMAT_VERSION,
        "source_checkpoint": {"path": "/x/stage2.safetensors", "sha256": "ab"},
        "producer": {"mantis": "0.1.0"},
        "preprocessing": PRE,
        "tasks": [{"name": "a", "labels": ["x", "y"]}, {"name": "b", "labels": ["u", "v", "w"]}],
        "task_mask_rule": "positive-else-argmax",
        "latent": {"channels": 4, "height": 3, "width": 2},
        "tables": {"file": "tables.safetensors", "sha256": "cd", "table_id": "0102"},
        "edge": {
            "target": "executorch",
            "file": "edge.pte",
            "runtime": "executorch",
            "inputs": [TENSOR],
            "outputs": [
                {"name": "latent", "dtype": "float32", "shape": [1, 4, 3, 2]},
                {"name": "task_logits", "dtype": "float32", "shape": [1, 2]},
            ],
            "quantization": {"observer": "histogram"},
            "check": {},
        },
        "server": {
            "onnx": {
                "file": "server.onnx",
                "check": {},
                "inputs": [{"name": "latent", "dtype": "float32", "shape": ["batch", 4, 3, 2]}],
                "outputs": [
                    {"name": "logits_a", "dtype": "float32", "shape": ["batch", 2]},
                    {"name": "logits_b", "dtype": "float32", "shape": ["batch", 3]},
                ],
            },
            "torch": {"file": "server.pt2", "check": {}},
        },
        "files": {"tables.safetensors": "0", "edge.pte": "0", "server.onnx": "0", "server.pt2": "0"},
    }
    m.update(over)
    return m


def test_manifest_round_trips_through_the_schema() -> None:
    doc = _manifest()
    m = Manifest.from_dict(doc)
    assert m.task_names == ["a", "b"] and m.labels("b") == ["u", "v", "w"] and m.latent == (4, 3, 2)
    assert m.edge.runtime == "executorch" and m.server["onnx"].file == "server.onnx"
    assert m.to_dict() == doc
    assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("preprocessing", "color"), "BGR", r"preprocessing.color: unsupported value 'BGR'"),
        (("preprocessing", "resize"), "nearest", r"preprocessing.resize: unsupported value 'nearest'"),
        (("preprocessing", "layout"), "NHWC", r"preprocessing.layout: unsupported value 'NHWC'"),
        (("preprocessing", "value_range"), [0, 255], r"preprocessing.value_range: unsupported value"),
        (("preprocessing", "std"), [0.2, 0.0, 0.3], r"preprocessing.std"),
        (("preprocessing", "input_size"), [24], r"preprocessing.input_size"),
        (("task_mask_rule",), "top-1", r"task_mask_rule: unsupported value 'top-1'"),
        (("edge", "runtime"), "tflite", r"edge.runtime: unsupported value 'tflite'"),
        (("edge", "file"), "edge.onnx", r"edge.file: 'edge.onnx' is not a executorch program"),
        (("latent", "channels"), 0, r"latent.channels: invalid value 0"),
        (("latent", "height"), True, r"latent.height: expected an integer"),
        (("model_name",), 7, r"model_name: expected a string"),
        (("model_name",), "my model/v2", r"model_name: 'my model/v2' is not a safe model name \(letters, digits"),
        (("model_name",), "..", r"model_name: '..' is not a safe model name"),
        (("model_name",), "m" * 65, r"model_name: .* is not a safe model name"),
        (("preprocessing", "gamma"), 2.2, r"preprocessing: unknown keys \['gamma'\]"),
        (("extra",), 1, r"unknown keys \['extra'\]"),
        (("files",), {"../etc/passwd": "0"}, r"outside the bundle"),
        (("files",), {"edge.pte": "0"}, r"referenced but not listed"),
        (("tasks",), [{"name": "a", "labels": ["x"]}, {"name": "a", "labels": ["y"]}], r"distinct names"),
    ],
)
def test_every_unsupported_or_malformed_value_is_named(path: tuple[str, ...], value, match: str) -> None:
    doc = copy.deepcopy(_manifest())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ManifestError, match=match):
        Manifest.from_dict(doc)


def test_missing_keys_and_wrong_server_names_are_errors() -> None:
    doc = _manifest()
    del doc["edge"]["runtime"]
    with pytest.raises(ManifestError, match=r"edge.runtime: missing"):
        Manifest.from_dict(doc)
    doc = _manifest()
    doc["server"]["onnx"]["outputs"][0]["name"] = "out0"
    with pytest.raises(ManifestError, match=r"server.onnx.outputs: expected \['logits_a', 'logits_b'\]"):
        Manifest.from_dict(doc)
    doc = _manifest()
    doc["edge"]["outputs"] = doc["edge"]["outputs"][::-1]
    with pytest.raises(ManifestError, match=r"edge.outputs: expected \['latent', 'task_logits'\]"):
        Manifest.from_dict(doc)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16"])
def test_preprocess_matches_the_training_pipeline(mode: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).convert("RGB")
    image = image.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 65535, (50, 70), dtype=np.uint16))
    spec = Preprocessing.from_dict(PRE)
    x = preprocess(image, spec)
    ref = Normalizer(preprocessing_meta(PRE["input_size"], PRE["mean"], PRE["std"]))(image)
    assert x.shape == (1, 3, 24, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], ref.numpy())
    with pytest.raises(TypeError, match="PIL image"):
        preprocess(torch.zeros(3, 24, 32), spec)  # type: ignore[arg-type]


def test_checkpoint_preprocessing_is_the_bundle_schema() -> None:
    meta = preprocessing_meta((24, 32), PRE["mean"], PRE["std"])
    assert Preprocessing.from_dict(meta).to_dict() == meta == PRE


def _tasks_manifest(n: int, server_detected: int = 0) -> dict:
    """:func:`_manifest` with ``n`` tasks, the last ``server_detected`` of them detected by the server half."""
    names = [f"t{i}" for i in range(n)]
    doc = _manifest(tasks=[{"name": t, "labels": ["x", "y"]} for t in names])
    outputs = [{"name": f"logits_{t}", "dtype": "float32", "shape": ["batch", 2]} for t in names]
    if server_detected:
        doc["server_detected_tasks"] = names[n - server_detected :]
        outputs.append({"name": "detect_logits", "dtype": "float32", "shape": ["batch", server_detected]})
    doc["server"]["onnx"]["outputs"] = outputs
    return doc


def test_manifest_refuses_more_edge_tasks_than_a_task_mask_names() -> None:
    """The bitstream's task mask names MAX_MASK_TASKS tasks; tasks beyond them must be server-detected."""
    assert Manifest.from_dict(_tasks_manifest(MAX_MASK_TASKS)).edge_tasks == MAX_MASK_TASKS
    with pytest.raises(
        ManifestError,
        match=rf"tasks: {MAX_MASK_TASKS + 1} tasks are detected on the edge, a bitstream's task mask names at most {MAX_MASK_TASKS}",
    ):
        Manifest.from_dict(_tasks_manifest(MAX_MASK_TASKS + 1))
    m = Manifest.from_dict(_tasks_manifest(MAX_MASK_TASKS + 2, server_detected=2))
    assert m.edge_tasks == MAX_MASK_TASKS and len(m.tasks) == MAX_MASK_TASKS + 2
    with pytest.raises(ManifestError, match=rf"expected 1..{MAX_MODEL_TASKS} tasks"):
        Manifest.from_dict(_tasks_manifest(MAX_MODEL_TASKS + 1, server_detected=MAX_MODEL_TASKS + 1 - MAX_MASK_TASKS))
    # the rule itself never yields a mask the bitstream cannot carry
    assert task_mask_from_logits(np.ones(MAX_MASK_TASKS)) == (1 << MAX_MASK_TASKS) - 1
    with pytest.raises(ValueError, match=rf"1..{MAX_MASK_TASKS} finite values"):
        task_mask_from_logits(np.ones(MAX_MASK_TASKS + 1))


def test_task_mask_rule() -> None:
    assert task_mask_from_logits(np.array([0.5, -1.0, 2.0])) == 0b101
    assert task_mask_from_logits(np.array([-3.0, -0.1, -2.0])) == 0b010  # none above 0: the argmax
    assert task_mask_from_logits(np.array([0.0, -1.0])) == 0b001  # 0 is not above 0
    with pytest.raises(ValueError):
        task_mask_from_logits(np.array([np.nan, 1.0]))
    bundle = Bundle(Path("."), Manifest.from_dict(_manifest()), tables=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected 2 task logits"):
        bundle.task_mask(np.zeros(3))
    with pytest.raises(KeyError, match="unknown task 'c'"):
        bundle.labels("c")


def test_tree_hash_covers_names_and_contents(tmp_path: Path) -> None:
    root = tmp_path / "m.mlpackage"
    (root / "Data").mkdir(parents=True)
    (root / "Data" / "w.bin").write_bytes(b"weights")
    (root / "Manifest.json").write_text("{}")
    first = tree_sha256(root)
    assert tree_sha256(root) == first
    (root / "Data" / "w.bin").write_bytes(b"weightz")
    assert tree_sha256(root) != first
    (root / "Data" / "w.bin").write_bytes(b"weights")
    (root / "Data" / "w.bin").rename(root / "Data" / "v.bin")
    assert tree_sha256(root) != first


def test_bundle_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such directory"):
        load_bundle(tmp_path / "missing")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(format="mantis-bundle/9")))
    with pytest.raises(BundleError, match="unknown format 'mantis-bundle/9'"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "mantis-bundle/1"}))
    with pytest.raises(BundleError, match="missing"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(bitstream_version=7)))
    with pytest.raises(BundleError, match="bitstream version 7"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest()))
    with pytest.raises(BundleError, match="file tables.safetensors is missing"):
        load_bundle(tmp_path)
