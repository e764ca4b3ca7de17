"""Where a missing piece once fell back silently, it is now an error that names it, or a logged fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch.nn as nn
from onnx import TensorProto, helper

from codec import rans
from export.quantize import check_keep_float
from runtime_edge.models import EdgeRuntimeError, OnnxModel, load_edge_model


def _identity_onnx(path: Path, outputs: list[str]) -> None:
    nodes = [helper.make_node("Identity", ["image"], [name]) for name in outputs]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 2, 2]) for name in outputs],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))


def test_edge_onnx_with_other_output_names_is_refused(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    _identity_onnx(good, ["latent", "task_logits"])
    _identity_onnx(bad, ["out0", "out1"])
    latent, logits = OnnxModel(good).run(np.ones((1, 3, 2, 2), np.float32))
    assert latent.shape == logits.shape == (1, 3, 2, 2)
    with pytest.raises(EdgeRuntimeError, match=r"outputs \['out0', 'out1'\].*\['latent', 'task_logits'\]"):
        OnnxModel(bad)


def test_edge_runtime_comes_from_the_manifest_not_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "edge.onnx"
    _identity_onnx(path, ["latent", "task_logits"])
    with pytest.raises(EdgeRuntimeError, match="not a executorch program"):
        load_edge_model(path, "executorch")
    with pytest.raises(EdgeRuntimeError, match="unknown edge runtime 'tflite'"):
        load_edge_model(path, "tflite")


def test_misspelled_keep_float_layer_is_an_error() -> None:
    client = nn.Sequential()
    client.add_module("encoder", nn.Sequential())
    client.encoder.add_module("project", nn.Conv2d(3, 4, 1))
    check_keep_float(client, ["encoder.project", "encoder"])
    with pytest.raises(ValueError, match=r"\['encoder.projekt'\] are not modules.*encoder.project"):
        check_keep_float(client, ["encoder.project", "encoder.projekt"])


def test_broken_compressai_coder_is_logged_before_falling_back(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise ImportError("ans.so: undefined symbol")

    monkeypatch.setattr(rans, "_load_compressai_ans", broken)
    rans._compressai_backend.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="mantis.codec"):
            assert rans.available_backends() == ["python"]
        assert any(
            r.levelno == logging.WARNING and "undefined symbol" in r.getMessage() and "pure-Python" in r.getMessage()
            for r in caplog.records
        )
        with pytest.raises(rans.CodecError, match="compressai rANS backend was requested"):
            rans.get_backend("compressai")
    finally:
        rans._compressai_backend.cache_clear()


def test_missing_compressai_is_logged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def missing() -> None:
        raise ModuleNotFoundError("compressai is not installed", name="compressai")

    monkeypatch.setattr(rans, "_load_compressai_ans", missing)
    rans._compressai_backend.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="mantis.codec"):
            assert rans.get_backend().name == "python"
        assert any(r.levelno == logging.INFO and "not installed" in r.getMessage() for r in caplog.records)
    finally:
        rans._compressai_backend.cache_clear()


def test_real_compressai_coder_loads_as_a_module() -> None:
    rans._compressai_backend.cache_clear()
    assert rans.available_backends()[0] == "compressai"
    assert type(rans.get_backend()).__name__ == "CompressAIBackend"
