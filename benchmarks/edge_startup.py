"""Start-up of the edge command: wall time from starting ``runtime_edge.run`` on one image to its printed result,
in a given interpreter (e.g. a device venv with ``mantis-edge[pte]``), with what it wrote to stderr.

    uv run python -m benchmarks.edge_startup --python DEVICE_VENV/bin/python --artifacts BUNDLE --image photo.jpg
    uv run python -m benchmarks.edge_startup --python .venv/bin/python --artifacts BUNDLE --image photo.jpg --pte-runtime official

Each run is a fresh process (``-P``: the current directory is not on its path), ``--save`` into a temporary
directory, or ``--server URL``; the report gives the median, min and max over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import Headline, Table, add_results_arguments, write_results


def time_edge_command(
    python: str, artifacts: Path, image: Path, repeats: int, server: str | None = None, pte_runtime: str = "auto", timeout: float = 300.0
) -> dict[str, object]:
    """Run the edge command ``repeats`` times; seconds per run, and the last run's stdout and stderr."""
    seconds, proc = [], None
    with tempfile.TemporaryDirectory() as tmp:
        dest = ["--server", server] if server else ["--save", tmp]
        cmd = [python, "-P", "-m", "runtime_edge.run", "--artifacts", str(artifacts), *dest, "--pte-runtime", pte_runtime, str(image)]
        for _ in range(repeats):
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
            seconds.append(time.perf_counter() - t)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    assert proc is not None
    return {"command": cmd, "seconds": seconds, "median_s": statistics.median(seconds), "stdout": proc.stdout, "stderr": proc.stderr}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="start-to-answer time of runtime_edge.run on one image")
    p.add_argument("--python", default=sys.executable, help="interpreter with codec and runtime_edge importable (default: this one)")
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--server", help="serve.py URL (default: --save into a temporary directory)")
    p.add_argument("--pte-runtime", default="auto", choices=("auto", "numpy", "official"))
    p.add_argument("--repeats", type=int, default=5)
    add_results_arguments(p, "edge_startup_PTERUNTIME")
    args = p.parse_args(argv)
    args.results_name = args.results_name.replace("PTERUNTIME", args.pte_runtime)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        r = time_edge_command(args.python, args.artifacts.resolve(), args.image.resolve(), args.repeats, args.server, args.pte_runtime)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"edge_startup: {exc}", file=sys.stderr)
        return 2
    s = r["seconds"]
    print(
        f"{' '.join(r['command'][:4])} ... ({args.pte_runtime}): median {r['median_s']:.2f} s, min {min(s):.2f} s, max {max(s):.2f} s over {len(s)} runs"
    )
    print(f"stdout ({len(r['stdout'].splitlines())} lines):\n{r['stdout'].rstrip()}")
    print(f"stderr ({len(r['stderr'].splitlines())} lines){':' if r['stderr'] else ''}\n{r['stderr'].rstrip()}".rstrip())
    how = f"--server {args.server}" if args.server else "--save"
    write_results(
        args.results_name,
        title=f"Start-up of the edge command ({args.pte_runtime} .pte runtime), start to printed answer",
        module="benchmarks.edge_startup",
        argv=argv,
        headline=[
            Headline(f"edge command start to answer, one image, {args.pte_runtime} .pte runtime ({how})", round(r["median_s"], 2), "s")
        ],
        tables=[
            Table(
                f"{len(s)} fresh processes",
                ["interpreter", "mode", "median s", "min s", "max s", "stderr lines"],
                [[args.python, how, round(r["median_s"], 2), round(min(s), 2), round(max(s), 2), len(r["stderr"].splitlines())]],
            )
        ],
        data={k: v for k, v in r.items()},
        results_dir=args.results_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
