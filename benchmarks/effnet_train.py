"""Training time of a configuration, from scratch, with the machine's load while it ran.

    uv run python -m benchmarks.effnet_train --config training/configs/effnet_lite0_224.yaml --out runs/effnet_lite0_224

Runs every stage of the config into an empty ``--out`` (finished stages there would be reused and not
timed, so a non-empty one is refused) and writes ``results/NAME.json``: wall time, CPU time of the process
(user + system, all its threads), the seconds of each stage, the 1-minute load average sampled every
``--sample-s`` seconds (other processes share the cores), and the run's metrics.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from benchmarks.results import Headline, Table, write_results

MODULE = "benchmarks.effnet_train"
SHARED_LOAD_MARGIN = 0.5
"""A load average above the number of cores plus this (the run itself keeps them busy) means other work ran."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=Path("training/configs/effnet_lite0_224.yaml"))
    p.add_argument("--out", type=Path, required=True, help="an empty (or new) run directory")
    p.add_argument("--budget-min", type=float, default=15.0, help="the wall-time target, minutes (default 15)")
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between load-average samples")
    p.add_argument("--name", default="effnet_train", help="results file name")
    return p.parse_args(argv)


class LoadSampler:
    """Samples ``os.getloadavg()[0]`` in a background thread until stopped."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every_s)

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: Sequence[str] | None = None) -> int:
    from training.config import ConfigError, load_config
    from training.pipeline import run

    args = parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; its finished stages would be reused, not timed", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cores = len(os.sched_getaffinity(0))
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    with LoadSampler(args.sample_s) as load:
        metrics = run(cfg, args.out)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    mean_load = sum(load.samples) / len(load.samples)
    stage2 = metrics["stage2"]
    headline = [
        Headline("training wall time", round(wall / 60, 2), "min", f"<= {args.budget_min:g} min on {cores} cores"),
        Headline("training CPU time (user + system)", round(cpu / 60, 2), "min"),
        Headline("mean 1-min load average during training", round(mean_load, 2), f"on {cores} cores"),
        Headline(
            "top-1 agreement with the teacher (float, real codec)",
            round(stage2["task_accuracy"]["imagenet"], 4),
            "",
            f"{stage2['images']} held-out images",
        ),
        Headline("bytes per image", round(stage2["bytes_per_image"], 1), "B"),
    ]
    seconds = Table("Seconds per stage", ["stage", "seconds"], [[k, v] for k, v in metrics["seconds"].items()])
    span = f"the 1-minute load average on its {cores} cores was {min(load.samples):.1f} to {max(load.samples):.1f} (mean {mean_load:.1f})"
    shared = max(load.samples) > cores + SHARED_LOAD_MARGIN
    notes = [
        (
            f"Measured on a machine shared with other work: {span} while this ran, so the wall time is longer than on an idle "
            "machine; the CPU time is what this process used."
            if shared
            else f"Measured with nothing else of note running: {span} while this ran, this run's own threads included."
        ),
        f"Target: wall time <= {args.budget_min:g} min: {'met' if wall <= args.budget_min * 60 else 'NOT met'}.",
    ]
    write_results(
        args.name,
        title=f"Training time of {args.config.name}",
        module=MODULE,
        argv=argv,
        headline=headline,
        tables=[seconds],
        notes=notes,
        data={"config": str(args.config), "wall_s": wall, "cpu_s": cpu, "cores": cores, "load_samples": load.samples, "metrics": metrics},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
