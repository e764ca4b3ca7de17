"""The demo pipeline: the report's arithmetic, and a smoke run on the tiny config that measures everything
through the real edge client and serve.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.image_codecs import compress
from mantis_demo.pipeline import DemoOptions, run_demo
from benchmarks.baselines import equal_accuracy
from mantis_demo.report import bandwidth_table, equal_accuracy_summary
from runtime_edge.client import EdgeRuntime
from runtime_edge.preprocess import load_image

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("demo_script", REPO / "demo.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def _point(q: int, nbytes: float, acc: float) -> dict:
    return {"quality": q, "bytes_per_image": nbytes, "mean_task_accuracy": acc}


def test_equal_accuracy_takes_the_smallest_reaching_point() -> None:
    curve = [_point(90, 3000, 0.95), _point(10, 800, 0.70), _point(50, 1500, 0.90), _point(30, 1100, 0.85)]
    eq = equal_accuracy(200, 0.85, curve)
    assert (eq["quality"], eq["bytes_per_image"], eq["reached"]) == (30, 1100, True)
    assert eq["ratio"] == pytest.approx(5.5)
    miss = equal_accuracy(200, 0.99, curve)
    assert (miss["quality"], miss["reached"], miss["ratio"]) == (90, False, pytest.approx(15.0))


def test_bytes_target_counts_lower_bounds() -> None:
    """5x fewer bytes than the smallest reaching quality, or than the most accurate one when none reaches."""
    jpeg = [_point(50, 1000, 0.90), _point(90, 3000, 0.95)]
    webp = [_point(10, 300, 0.93), _point(30, 480, 0.955)]
    met = equal_accuracy_summary(50, 0.96, {"jpeg": jpeg, "webp": webp})
    assert met["meets_target"] and not met["webp"]["reached"] and met["webp"]["ratio"] == pytest.approx(9.6)
    assert not equal_accuracy_summary(100, 0.96, {"jpeg": jpeg, "webp": webp})["meets_target"]  # 4.8x vs WebP q30
    reached = equal_accuracy_summary(50, 0.92, {"jpeg": jpeg, "webp": webp})
    assert reached["meets_target"] and reached["webp"]["reached"] and reached["webp"]["quality"] == 10


def test_bandwidth_table_follows_the_stated_formula() -> None:
    rows = bandwidth_table(2.0, 5.0, 250, 1.0, 20.0, 2500, 40.0, rates_mbit=(1, 10))
    # 250 bytes at 1 Mbit/s = 2 ms; 2500 bytes = 20 ms
    assert rows[0] == {"mbit_s": 1.0, "mantis_ms": pytest.approx(9.0), "jpeg_ms": pytest.approx(41.0), "teacher_on_edge_ms": 40.0}
    assert rows[1]["mantis_ms"] == pytest.approx(7.2) and rows[1]["jpeg_ms"] == pytest.approx(23.0)


def test_demo_arguments() -> None:
    with pytest.raises(SystemExit):
        demo.parse_args(["--artifacts", "x"])  # a bundle needs the checkpoint it came from
    assert demo.parse_args([]).out == Path("runs/demo")


def test_demo_reports_a_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert demo.main(["--out", str(tmp_path), "--config", str(tmp_path / "none.yaml")]) != 0
    assert "none.yaml" in capsys.readouterr().err


def test_demo_smoke_on_the_tiny_config(tmp_path: Path, tiny_checkpoint: Path, executorch_bundle: Path) -> None:
    out = tmp_path / "demo"
    opts = DemoOptions(
        out=out,
        config=REPO / "training" / "configs" / "tiny.yaml",
        checkpoint=tiny_checkpoint,
        artifacts=executorch_bundle,
        limit=24,
        qualities=(10, 50, 90),
    )
    returned = run_demo(opts, log=lambda msg: None)
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(returned))
    tasks = report["dataset"]["tasks"]
    assert report["dataset"]["images"] == 24

    for section in ("float", "edge_int8", "teacher"):
        acc = report[section]["task_accuracy"]
        assert set(acc) == set(tasks) and all(0.0 <= v <= 1.0 for v in acc.values())
        assert report[section]["mean_task_accuracy"] == pytest.approx(np.mean(list(acc.values())))

    # bytes are the real bitstreams of the held-out PNGs through the .pte (encoding is deterministic)
    edge = EdgeRuntime(executorch_bundle)
    pngs = sorted((out / "heldout").glob("*.png"))
    assert len(pngs) == 24
    lengths = [edge.encode(load_image(p)).num_bytes for p in pngs]
    assert report["edge_int8"]["bytes_per_image"] == pytest.approx(np.mean(lengths))
    assert report["edge_int8"]["images"] == 24 and report["edge_int8"]["retried_requests"] == 0

    # baselines: the listed qualities, bytes = len of the Pillow files at the model's input size
    for fmt in ("jpeg", "webp"):
        assert [p["quality"] for p in report[fmt]] == [10, 50, 90]
        sizes = [p["bytes_per_image"] for p in report[fmt]]
        assert sizes == sorted(sizes)
    h, w = edge.bundle.manifest.preprocessing.input_size
    q50 = np.mean([len(compress(load_image(p).resize((w, h)), "jpeg", 50).data) for p in pngs])
    assert report["jpeg"][1]["bytes_per_image"] == pytest.approx(q50)

    lat = report["latency_ms"]
    assert set(lat) >= {"edge_encode", "entropy_coding", "server", "end_to_end"}
    assert all(lat[k]["n"] == 24 and lat[k]["mean"] > 0 for k in lat)
    assert lat["end_to_end"]["mean"] > lat["server"]["mean"]
    # serve.py's own accounting: its parts fit inside the request, the request inside the HTTP round trip
    inside = report["edge_int8"]["server_side_ms"]
    assert all(inside[k] > 0 for k in ("decode", "server_half", "request"))
    assert inside["decode"] + inside["queue"] + inside["server_half"] <= inside["request"] < lat["server"]["mean"]
    assert report["measured_compute_ms"]["mantis_server"] == pytest.approx(inside["decode"] + inside["server_half"])

    eq = report["equal_accuracy"]
    for fmt in ("jpeg", "webp"):
        point = next(p for p in report[fmt] if p["quality"] == eq[fmt]["quality"])
        assert eq[fmt]["ratio"] == pytest.approx(point["bytes_per_image"] / report["edge_int8"]["bytes_per_image"])
    rows = report["bandwidth"]["rows"]
    assert [r["mbit_s"] for r in rows] == [1.0, 10.0, 100.0]
    assert rows[0]["mantis_ms"] > rows[2]["mantis_ms"] and rows[0]["jpeg_ms"] > rows[2]["jpeg_ms"]

    md = (out / "report.md").read_text()
    for heading in ("## Accuracy and bytes", "## Bytes at equal accuracy", "## Latency", "## Bandwidth", "T(R) = "):
        assert heading in md
    for plot in ("rate_accuracy.png", "bandwidth.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))
