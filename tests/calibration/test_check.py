"""calibration/: the calibration set, the observers, layers kept in float, and the accuracy-vs-int8 check
(float model vs the int8 edge client on its real runtime, through the real codec and the server half)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from calibration.int8_accuracy import CheckError, PathOutputs, compare, run_check
from calibration.check import main as check_main
from export.calibration_set import CalibrationSourceError, balanced_order, select_samples
from export.quantize import OBSERVERS, onnx_nodes_in_modules, pt2e_quantizer, quantize_onnx, quantize_pt2e
from codec.bundle import load_bundle


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)))


class _Nested(nn.Module):
    """An ``encoder`` with a ``project`` layer inside, like the edge client's ``encoder.project``."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential()
        self.encoder.add_module("conv", nn.Conv2d(3, 8, 3, padding=1))
        self.encoder.add_module("act", nn.ReLU())
        self.encoder.add_module("project", nn.Conv2d(8, 8, 1))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _per_channel_weights(graph: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in graph.graph.nodes if n.op == "call_function" and "dequantize_per_channel" in str(n.target)]


def test_balanced_order_quota_and_fill() -> None:
    # task 0 is common, task 2 rare: the quota keeps task 0 from taking every slot
    vectors = np.array([[1, 0, 0]] * 20 + [[0, 1, 0]] * 5 + [[0, 0, 1]] * 2 + [[1, 1, 0]] * 3, dtype=np.float32)
    order = np.random.default_rng(0).permutation(len(vectors))
    picked = balanced_order(vectors[order], 9)
    counts = (vectors[order][picked] > 0).sum(axis=0)
    assert len(set(picked)) == 9
    assert counts[2] == 2 and counts[1] >= 3 and counts[0] <= 6
    assert balanced_order(vectors[order], 9) == picked


def test_select_samples_is_seeded_and_checked(tiny_checkpoint: Path) -> None:
    from export.calibration_set import data_config, load_split
    from training.checkpoint import read_checkpoint

    _, meta = read_checkpoint(tiny_checkpoint)
    names = [t["name"] for t in meta["tasks"]]
    ds = load_split(data_config(meta, tiny_checkpoint, None), "val", names)
    a = select_samples(ds, "val", 12, 3, names)
    b = select_samples(ds, "val", 12, 3, names)
    assert a.info["indices"] == b.info["indices"] and torch.equal(a.images, b.images)
    assert a.images.shape[0] == 12 and set(a.info["per_task"]) == set(names)
    assert all(v > 0 for v in a.info["per_task"].values())
    for i, idx in enumerate(a.info["indices"]):
        assert torch.equal(a.labels[i], ds[idx][1])
    with pytest.raises(CalibrationSourceError, match="only"):
        select_samples(ds, "val", len(ds) + 1, 0, names)
    with pytest.raises(CalibrationSourceError, match="at least one"):
        select_samples(ds, "val", 0, 0, names)


def test_histogram_observer_clips_an_outlier_minmax_keeps() -> None:
    torch.manual_seed(0)
    observers = {o: pt2e_quantizer(o).global_config.input_activation.observer_or_fake_quant_ctr() for o in OBSERVERS}
    for i in range(8):
        t = torch.randn(1, 3, 128, 128)
        if i == 3:
            t.view(-1)[0] = 60.0  # one outlier among 393k values
        for ob in observers.values():
            ob(t)
    minmax = observers["minmax"].calculate_qparams()[0].item()
    hist = observers["histogram"].calculate_qparams()[0].item()
    assert minmax == pytest.approx((60.0 - observers["minmax"].min_val.item()) / 255, rel=1e-3)
    assert hist < minmax / 4


def test_pt2e_quantization_and_keep_float() -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(1, 3, 16, 16)
    calib = [torch.randn(1, 3, 16, 16) for _ in range(8)]
    for observer in OBSERVERS:
        q = quantize_pt2e(net, x, calib, observer)
        assert len(_per_channel_weights(q)) == 2
        with torch.no_grad():
            assert torch.allclose(q(x), net(x), atol=0.05 * net(x).abs().max().item())
    kept = quantize_pt2e(net, x, calib, "histogram", keep_float=["head"])
    assert len(_per_channel_weights(kept)) == 1  # only conv's weight is int8; head stays float
    with pytest.raises(ValueError, match="unknown observer"):
        quantize_pt2e(net, x, calib, "mse")


def test_onnx_quantization_observers_and_keep_float(tmp_path: Path) -> None:
    net = _Net().eval()
    x = torch.randn(1, 3, 16, 16)
    float_path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(float_path), dynamo=True, input_names=["image"], external_data=False)
    calib = [torch.randn(1, 3, 16, 16).numpy() for _ in range(4)]
    for observer in ("minmax", "histogram"):
        quantize_onnx(float_path, tmp_path / f"{observer}.onnx", "image", calib, observer)
        ops = [n.op_type for n in onnx.load(str(tmp_path / f"{observer}.onnx")).graph.node]
        assert ops.count("QuantizeLinear") >= 2
    quantize_onnx(float_path, tmp_path / "kept.onnx", "image", calib, "histogram", keep_float=["head"])
    model = onnx.load(str(tmp_path / "kept.onnx"))
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8_weights) == 1
    with pytest.raises(ValueError, match="no ONNX nodes"):
        quantize_onnx(float_path, tmp_path / "x.onnx", "image", calib, "histogram", keep_float=["missing"])


def test_onnx_keep_float_of_a_nested_module(tmp_path: Path) -> None:
    net = _Nested().eval()
    x = torch.randn(1, 3, 16, 16)
    float_path = tmp_path / "nested.onnx"
    torch.onnx.export(net, (x,), str(float_path), dynamo=True, input_names=["image"], external_data=False)
    assert onnx_nodes_in_modules(float_path, ["encoder.project"]) == [
        n.name for n in onnx.load(str(float_path)).graph.node if n.op_type == "Conv" and n.input[1].startswith("encoder.project")
    ]
    assert len(onnx_nodes_in_modules(float_path, ["encoder"])) >= 3  # conv, relu, project
    calib = [torch.randn(1, 3, 16, 16).numpy() for _ in range(4)]
    quantize_onnx(float_path, tmp_path / "kept.onnx", "image", calib, "histogram", keep_float=["encoder.project"])
    model = onnx.load(str(tmp_path / "kept.onnx"))
    int8_weights = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4}
    assert len(int8_weights) == 2 and not any("project" in n for n in int8_weights)


def _outputs(masks: list[int], preds: list[int], nbytes: int = 40) -> PathOutputs:
    logits = np.full((len(preds), 3), -5.0, np.float32)
    logits[np.arange(len(preds)), preds] = 5.0
    return PathOutputs(np.zeros((len(preds), 2, 1, 1), np.int32), np.array(masks), np.full(len(preds), nbytes), [logits, logits])


def test_task_accuracy_counts_tasks_missing_from_the_mask_as_wrong() -> None:
    labels = np.array([[0, -1], [1, 2], [2, 2], [-1, 0]])
    out = _outputs(masks=[0b01, 0b10, 0b11, 0b10], preds=[0, 1, 2, 0])
    acc = out.task_accuracy(labels, ["a", "b"])
    assert acc == {"a": pytest.approx(2 / 3), "b": pytest.approx(2 / 3)}


def test_compare_threshold_in_points() -> None:
    labels = np.array([[0, 0]] * 100)
    f = _outputs([0b11] * 100, [0] * 100)
    i = _outputs([0b11] * 99 + [0b01], [0] * 100, nbytes=41)
    result = compare(f, i, labels, ["a", "b"], max_drop=1.0)
    assert result["drop_points"] == {"a": 0.0, "b": pytest.approx(1.0)} and result["passed"]
    assert not compare(f, i, labels, ["a", "b"], max_drop=0.5)["passed"]
    assert result["int8"]["bytes_per_image"] == 41 and result["task_mask_agreement"] == pytest.approx(0.99)


def test_check_cli_on_executorch_bundle(executorch_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(executorch_bundle, bundle)
    rc = check_main(["--artifacts", str(bundle), "--samples", "24"])
    printed = capsys.readouterr().out
    report = json.loads((bundle / "int8_check.json").read_text())
    assert rc == (0 if report["passed"] else 1)
    assert report["edge"]["runtime"] == "executorch" and report["images"] == 24 and report["split"] == "test"
    tasks = load_bundle(bundle).task_names
    for path in ("float", "int8"):
        assert set(report[path]["task_accuracy"]) <= set(tasks)
        assert all(0.0 <= v <= 1.0 for v in report[path]["task_accuracy"].values())
        assert report[path]["bytes_per_image"] > 16  # header plus a real rANS payload
    assert 0.9 <= report["symbol_agreement"] <= 1.0
    assert "symbol agreement" in printed and "bytes/image" in printed
    # a threshold no drop can meet makes the check fail with status 1
    rc = check_main(["--artifacts", str(bundle), "--samples", "8", "--max-drop", "-0.001"])
    assert rc == 1 and "FAIL" in capsys.readouterr().err


def test_check_on_onnx_bundle_runs_the_device_runtime(onnx_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 path is EdgeRuntime.encode on raw images: what a device runs, bytes included."""
    from runtime_edge.client import EdgeRuntime

    bundle = tmp_path / "b"
    shutil.copytree(onnx_bundle, bundle)
    sent: list[int] = []
    real = EdgeRuntime.encode

    def spy(self, image):
        enc = real(self, image)
        sent.append(enc.num_bytes)
        return enc

    monkeypatch.setattr(EdgeRuntime, "encode", spy)
    report = run_check(bundle, samples=8)
    assert report["edge"]["runtime"] == "onnxruntime" and report["images"] == 8
    assert len(sent) == 8 and report["int8"]["bytes_per_image"] == pytest.approx(sum(sent) / 8)
    assert (bundle / "int8_check.json").is_file()


def test_check_errors(executorch_bundle: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert check_main(["--artifacts", str(tmp_path)]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err
    with pytest.raises(CheckError, match="not the one"):
        run_check(executorch_bundle, checkpoint=tiny_checkpoint.with_name("stage1.safetensors"))
    with pytest.raises(CheckError, match="calibrated on the train split"):
        run_check(executorch_bundle, split="train")


def test_layer_sensitivity_rows(tiny_checkpoint: Path) -> None:
    from calibration.layer_sensitivity import format_sensitivity, layer_sensitivity, quantizable_layers
    from training.build import load_model

    model, _ = load_model(tiny_checkpoint, stage="stage2")
    names = quantizable_layers(model.client)
    assert "encoder.project" in names and "task_detector.classifier" in names and "stem.layers.0.0" in names
    result = layer_sensitivity(tiny_checkpoint, calibration_samples=8, samples=12, layers=["encoder.project"])
    assert set(result["rows"]) == {"<all int8>", "encoder.project"} and result["most_sensitive_first"] == ["encoder.project"]
    for row in result["rows"].values():
        assert 0.0 <= row["symbol_agreement"] <= 1.0 and set(row["drop_points"]) == set(result["float_task_accuracy"])
    assert "encoder.project" in format_sensitivity(result)


def test_int8_curve_exports_checks_and_reuses_each_point(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    import calibration.int8_curve as int8_curve

    point = tmp_path / "film" / "beta_1"
    point.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, point / "stage2.safetensors")
    (point / "point.json").write_text(json.dumps({"result": "stage2", "point": {"beta": 1.0}}))
    baselines = tmp_path / "report.json"
    baselines.write_text(
        json.dumps(
            {"jpeg": [{"bytes_per_image": b, "mean_task_accuracy": a} for b, a in [(300, 0.1), (600, 0.2), (900, 0.3), (1200, 0.4)]]}
        )
    )
    report = int8_curve.int8_curve(tmp_path, "film", baselines, target="onnx", log=lambda msg: None)
    [row] = report["points"]
    assert row["beta"] == 1.0 and row["images"] > 0 and row["bytes_per_image"] > 16
    assert 0.0 <= row["mean_task_accuracy"] <= 1.0 and (point / "bundle_onnx" / "int8_check.json").is_file()
    assert "at least" in report["vs_baselines"]["jpeg"]["error"]  # one point is no curve: said, not computed
    assert json.loads((tmp_path / "int8_film.json").read_text())["points"] == report["points"]
    monkeypatch.setattr(int8_curve, "export_bundle", lambda *a, **k: pytest.fail("a finished point was exported again"))
    assert int8_curve.int8_curve(tmp_path, "film", None, target="onnx", log=lambda msg: None)["points"] == report["points"]
    (tmp_path / "no_film" / "beta_1").mkdir(parents=True)
    (tmp_path / "no_film" / "beta_1" / "point.json").write_text(json.dumps({"result": "no_film", "point": {"beta": 1.0}}))
    with pytest.raises(int8_curve.Int8CurveError, match="not a Stage 2 model"):
        int8_curve.int8_curve(tmp_path, "no_film", None)
    with pytest.raises(int8_curve.Int8CurveError, match="no such curve"):
        int8_curve.int8_curve(tmp_path, "famo", None)


@pytest.mark.parametrize(
    "module", ["calibration.check", "calibration.compare_observers", "calibration.int8_curve", "benchmarks.edge_latency", "export.split"]
)
def test_help_describes_the_command_in_whole_sentences(module: str, capsys: pytest.CaptureFixture) -> None:
    import importlib

    script = importlib.import_module(module)
    with pytest.raises(SystemExit):
        script.parse_args(["--help"])
    described = " ".join(capsys.readouterr().out.split("\n\n")[1].split())
    assert described == " ".join(script.__doc__.split("\n\n")[0].split()) and described.endswith(".")
