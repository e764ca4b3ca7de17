"""The edge runtime on an emulated aarch64 device (qemu-user, Debian arm64 sysroot, PyPI aarch64 wheels, no torch):
bitstreams byte for byte and the server's answers against this machine's, per torch-free edge format.

    uv run python -m benchmarks.device_check --artifacts BUNDLE_PTE BUNDLE_ONNX --data-config CONFIG.yaml --samples 200
    uv run python -m benchmarks.device_check --artifacts BUNDLE --images photo1.jpg photo2.jpg

Exit status: 0 all bitstreams identical and all answers the same, 1 something differs, 2 the check could not run.
What it proves and what it cannot: benchmarks/aarch64.py and README.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from benchmarks.aarch64 import MIRROR, DeviceCheckError, device_check, format_report, write_heldout
from benchmarks.results import Headline, Table, add_results_arguments, write_results
from codec.bundle import BundleError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="edge runtime on emulated aarch64 vs x86: bitstreams and answers")
    p.add_argument("--artifacts", type=Path, nargs="+", required=True, help="bundles (edge.pte and/or edge.onnx)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, nargs="+", help="image files")
    src.add_argument("--data-config", type=Path, help="training config whose test split gives the held-out images")
    p.add_argument("--samples", type=int, default=200, help="held-out images from --data-config (default 200)")
    p.add_argument("--out", type=Path, default=Path("runs/device"), help="sysroot, wheels, bitstreams (reused; default runs/device)")
    p.add_argument("--mirror", default=MIRROR, help=f"Debian mirror (default {MIRROR})")
    p.add_argument(
        "--pin", action="append", default=[], metavar="REQ", help="extra requirement for the device install, e.g. numpy==2.2.6 (repeatable)"
    )
    add_results_arguments(p, "device_check")
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error("--samples must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        images = args.images or write_heldout(args.data_config, args.samples, args.out / "heldout")
        results, sysroot_seconds = device_check(args.artifacts, images, args.out, args.mirror, args.pin)
    except (DeviceCheckError, BundleError, OSError, ValueError) as exc:
        print(f"device_check: {exc}", file=sys.stderr)
        return 2
    print(format_report(results, sysroot_seconds))
    write_results(
        args.results_name,
        title="The edge runtime on an emulated aarch64 device (qemu-user, Cortex-A72) vs this machine",
        module="benchmarks.device_check",
        argv=argv,
        headline=[Headline(f"aarch64 bitstreams identical to x86 ({r.runtime})", r.identical, f"of {r.images}", "all") for r in results],
        tables=[
            Table(
                "per edge format",
                [
                    "runtime",
                    "images",
                    "bitstreams identical",
                    "answers the same",
                    "device install bytes",
                    "emulated seconds",
                    "x86 seconds",
                ],
                [
                    [r.runtime, r.images, r.identical, r.answers_equal, r.install_bytes, round(r.arm_seconds, 1), round(r.x86_seconds, 1)]
                    for r in results
                ],
            )
        ],
        notes=["Emulation proves code and numerics on an ARMv8 CPU model; its times say nothing about a real board's speed."],
        data={"sysroot_seconds": sysroot_seconds, "results": [asdict(r) for r in results]},
        results_dir=args.results_dir,
    )
    return 0 if all(r.identical == r.images and r.answers_equal for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
