"""The EfficientNet-Lite0 split's edge client on an emulated aarch64 device against this machine, as a results file.

    uv run python -m benchmarks.effnet_device --artifacts artifacts/effnet_lite0 --samples 12

Runs ``benchmarks.aarch64.device_check`` (qemu-aarch64-static, Debian arm64 sysroot, torch-free edge runtime;
``benchmarks/device_check.py`` is the same check as a tool) on the first ``--samples`` held-out images of the
bundle's training config, with ``serve.py`` on this machine answering both sides, and writes
``results/NAME.json``: bitstreams identical byte for byte, answers equal.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from benchmarks.results import Headline, Table, write_results

MODULE = "benchmarks.effnet_device"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="executorch bundle")
    p.add_argument("--config", type=Path, default=Path("training/configs/effnet_lite0_224.yaml"), help="config whose test split is used")
    p.add_argument("--samples", type=int, default=12)
    p.add_argument("--out", type=Path, default=Path("runs/device"), help="sysroot, wheels, bitstreams (reused)")
    p.add_argument("--name", default="effnet_device", help="results file name")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.aarch64 import DeviceCheckError, device_check, format_report, write_heldout

    args = parse_args(argv)
    try:
        images = write_heldout(args.config, args.samples, args.out / "heldout_effnet")
        results, sysroot_seconds = device_check([args.artifacts], images, args.out)
    except (DeviceCheckError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(results, sysroot_seconds))
    headline = [Headline(f"{r.runtime} bitstreams identical on aarch64", f"{r.identical}/{r.images}", "", "all") for r in results]
    headline += [Headline(f"{r.runtime} server answers equal on aarch64", "yes" if r.answers_equal else "no", "", "yes") for r in results]
    table = Table(
        "Emulated aarch64 (qemu, cortex-a72) vs x86_64",
        ["runtime", "images", "identical", "answers equal", "arm s", "x86 s"],
        [[r.runtime, r.images, r.identical, r.answers_equal, round(r.arm_seconds, 1), round(r.x86_seconds, 1)] for r in results],
    )
    notes = [
        "Emulation proves the code and the integer numerics on ARM (the same bytes as x86); it says nothing about speed on a real board."
    ]
    write_results(
        args.name,
        title="EfficientNet-Lite0 split: edge client on emulated aarch64",
        module=MODULE,
        argv=argv,
        headline=headline,
        tables=[table],
        notes=notes,
        data={"images": [str(p) for p in images], "sysroot_seconds": sysroot_seconds, "results": [asdict(r) for r in results]},
    )
    return 0 if all(r.identical == r.images and r.answers_equal for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
