"""Results files: every benchmark writes what it measured, with where and how it was measured.

    results/NAME.json = {
        "name": NAME, "title": str, "command": "python -m benchmarks.NAME ...",
        "commit": git HEAD (+ "dirty": whether the tree had uncommitted changes), "date": UTC ISO 8601,
        "machine": {"cpus": int, "cpu_model": str, "platform": str, "python": str, "load_average_1m": float},
        "headline": [{"metric": str, "value": float|int|str, "unit": str, "target": str}],
        "tables": [{"caption": str, "columns": [str], "rows": [[cell, ...]]}],
        "notes": [str],                     # what the run shows and what it cannot
        "data": {...},                      # the raw numbers, free form
    }

``docs/results.md`` and the README's headline table are generated from these files
(``python -m benchmarks.report``), never typed.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codec.files import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "results"


@dataclass
class Table:
    """One table of a results file: a caption, column names and rows of cells (numbers or strings)."""

    caption: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.caption!r}: row {row!r} has {len(row)} cells for {len(self.columns)} columns")
        return {"caption": self.caption, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}


@dataclass
class Headline:
    """One headline number: shown in the README's results table and at the top of its section."""

    metric: str
    value: float | int | str
    unit: str = ""
    target: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "unit": self.unit, "target": self.target}


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(module: str, argv: list[str] | None) -> dict[str, Any]:
    """Commit, command, date and machine of a run of ``python -m MODULE ARGV`` (or of ``MODULE ARGV`` where
    MODULE is a command line such as ``./mantis demo``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    program = module.split() if " " in module else ["python", "-m", module]
    return {
        "command": " ".join([*program, *map(shlex.quote, args)]),
        "commit": _git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    }


def write_results(
    name: str,
    *,
    title: str,
    module: str,
    argv: list[str] | None,
    headline: list[Headline],
    tables: list[Table] = (),  # type: ignore[assignment]
    notes: list[str] = (),  # type: ignore[assignment]
    data: dict[str, Any] | None = None,
    results_dir: Path | None = None,
) -> Path:
    """Write ``results/NAME.json`` atomically and return its path."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"results name {name!r}: letters, digits, '_' and '-' only")
    doc = {"name": name, "title": title, **provenance(module, argv)}
    doc["headline"] = [h.to_json() for h in headline]
    doc["tables"] = [t.to_json() for t in tables]
    doc["notes"] = list(notes)
    doc["data"] = data or {}
    path = (results_dir or RESULTS_DIR) / f"{name}.json"
    atomic_write_json(path, doc)
    print(f"results written to {path}")
    return path


def add_results_arguments(parser: Any, default_name: str) -> None:
    """``--results-dir`` and ``--results-name``: where a benchmark writes its results file."""
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the results file goes (default: %(default)s)")
    parser.add_argument("--results-name", default=default_name, help="the results file's name, without .json (default: %(default)s)")
