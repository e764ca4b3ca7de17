"""benchmarks/edge_wheel.py: the size the docs quote is measured on the wheel export/edge_wheel.py writes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from benchmarks.edge_wheel import main
from export.edge_wheel import build_wheel


def test_wheel_size_results_describe_the_built_wheel(tmp_path: Path) -> None:
    assert main(["--results-dir", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "edge_wheel.json").read_text())
    wheel = build_wheel(tmp_path / "dist")
    assert doc["data"]["file"] == wheel.name and doc["data"]["bytes"] == wheel.stat().st_size  # byte-for-byte reproducible
    with zipfile.ZipFile(wheel) as zf:
        assert doc["data"]["files"] == len(zf.infolist())
    assert {row[0] for row in doc["tables"][0]["rows"]} == {"codec", "runtime_edge", wheel.name.split("-py3")[0] + ".dist-info"}
