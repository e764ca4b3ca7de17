"""Size of the ``mantis-edge`` wheel that ``export/edge_wheel.py`` writes, as built from this tree.

    uv run python -m benchmarks.edge_wheel            # writes results/edge_wheel.json

Builds the wheel into a temporary directory and records its file name, its size in bytes, and the
number and unpacked size of the files it holds (what a device downloads before its dependencies).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

from benchmarks.results import Table, write_results
from export.edge_wheel import build_wheel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results-dir", type=Path, default=None, help="where results/edge_wheel.json goes (default results/)")
    return p.parse_args(argv)


def measure() -> dict:
    """The built wheel's name, size, and its files' count and unpacked size, by package."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            infos = zf.infolist()
        per_top: dict[str, list[int]] = {}
        for info in infos:
            top = info.filename.split("/", 1)[0]
            entry = per_top.setdefault(top, [0, 0])
            entry[0] += 1
            entry[1] += info.file_size
        return {
            "file": wheel.name,
            "bytes": wheel.stat().st_size,
            "files": len(infos),
            "unpacked_bytes": sum(i.file_size for i in infos),
            "per_directory": per_top,
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    m = measure()
    write_results(
        "edge_wheel",
        title="The mantis-edge wheel (export/edge_wheel.py)",
        module="benchmarks.edge_wheel",
        argv=argv,
        headline=[],
        tables=[
            Table(
                "files in the wheel",
                ["directory", "files", "unpacked bytes"],
                [[k, v[0], v[1]] for k, v in sorted(m["per_directory"].items())],
            )
        ],
        notes=[
            f"{m['file']}: {m['bytes']} bytes, {m['files']} files, {m['unpacked_bytes']} bytes unpacked; "
            "numpy, Pillow and the backend of an extra come on top"
        ],
        data=m,
        results_dir=args.results_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
