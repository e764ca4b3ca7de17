"""Results files and the pages generated from them: docs/results.md and the README's headline table are
never stale, and a results file that is not one is an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.results import Headline, Table, write_results


def test_published_pages_are_generated_from_the_results_files() -> None:
    assert report.main(["--check"]) == 0, "docs/results.md or README.md is stale: run python -m benchmarks.report"


def test_a_written_results_file_renders_with_its_provenance(tmp_path: Path) -> None:
    path = write_results(
        "example",
        title="An example",
        module="benchmarks.example",
        argv=["--flag", "a b"],
        headline=[Headline("ratio", 2.5, "x", ">= 2x")],
        tables=[Table("t", ["a", "b"], [[1, 2.25]])],
        notes=["a note"],
        data={"raw": [1, 2]},
        results_dir=tmp_path,
    )
    doc = json.loads(path.read_text())
    assert doc["command"] == "python -m benchmarks.example --flag 'a b'"
    assert doc["machine"]["cpus"] >= 1 and doc["date"].endswith("+00:00") and len(doc["commit"]) in (40, 7)
    page = report.render_doc(report.load_results(tmp_path))
    assert "## An example" in page and "| ratio | 2.50x | >= 2x |" in page and "| 1 | 2.25 |" in page and "- a note" in page
    readme = report.render_readme(f"intro\n{report.BEGIN}\nold\n{report.END}\nrest\n", report.load_results(tmp_path))
    assert readme.startswith("intro\n") and readme.endswith("\nrest\n") and "old" not in readme
    assert "| ratio | 2.50x | >= 2x | [example](docs/results.md#example) |" in readme


def test_a_table_row_of_the_wrong_width_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has 1 cells for 2 columns"):
        write_results("bad", title="t", module="m", argv=[], headline=[], tables=[Table("t", ["a", "b"], [[1]])], results_dir=tmp_path)


def test_a_file_that_is_no_results_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"name": "broken"}')
    with pytest.raises(ValueError, match="broken.json: results file lacks title"):
        report.load_results(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not a readable results file"):
        report.load_results(tmp_path)
