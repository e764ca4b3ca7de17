"""codec/bundle.py without an export: preprocessing, the task-mask rule, tree hashes, manifest errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec.bundle import Bundle, BundleError, load_bundle, read_manifest, task_mask_from_logits, tree_sha256
from codec.format import FORMAT_VERSION
from training.data.common import Normalizer, preprocessing_meta

PRE = {"input_size": [24, 32], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "color": "RGB",
       "value_range": [0, 1], "resize": "bilinear", "layout": "NCHW"}


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_preprocess_matches_the_training_pipeline(mode: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).convert(mode)
    bundle = Bundle(Path("."), {"preprocessing": PRE, "tasks": []}, tables=None)
    x = bundle.preprocess(image)
    ref = Normalizer(preprocessing_meta(PRE["input_size"], PRE["mean"], PRE["std"]))(image)
    assert x.shape == (1, 3, 24, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], ref.numpy(), atol=1e-6)
    with pytest.raises(TypeError, match="PIL image"):
        bundle.preprocess(torch.zeros(3, 24, 32))


def test_task_mask_rule() -> None:
    assert task_mask_from_logits(np.array([0.5, -1.0, 2.0])) == 0b101
    assert task_mask_from_logits(np.array([-3.0, -0.1, -2.0])) == 0b010  # none above 0: the argmax
    assert task_mask_from_logits(np.array([0.0, -1.0])) == 0b001  # 0 is not above 0
    with pytest.raises(ValueError):
        task_mask_from_logits(np.array([np.nan, 1.0]))
    bundle = Bundle(Path("."), {"tasks": [{"name": "a", "labels": []}, {"name": "b", "labels": []}]}, tables=None)
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


def _manifest(**over) -> dict:
    m = {"format": "mantis-bundle/1", "bitstream_version": FORMAT_VERSION, "preprocessing": PRE, "tasks": [], "latent": {},
         "tables": {"file": "t"}, "edge": {"file": "e"}, "server": {"onnx": {"file": "s"}}, "files": {"t": "0"}}
    m.update(over)
    return m


def test_manifest_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such directory"):
        load_bundle(tmp_path / "missing")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(format="mantis-bundle/9")))
    with pytest.raises(BundleError, match="unknown format 'mantis-bundle/9'"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "mantis-bundle/1"}))
    with pytest.raises(BundleError, match="lacks"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(files={"../etc/passwd": "0"})))
    with pytest.raises(BundleError, match="outside the bundle"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(bitstream_version=7)))
    with pytest.raises(BundleError, match="bitstream version 7"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest()))
    with pytest.raises(BundleError, match="file t is missing"):
        load_bundle(tmp_path)
