"""Split a Stage 2 checkpoint into an int8 edge client, a server half and entropy tables (one bundle).

    uv run python export/split.py --checkpoint runs/demo/stage2.safetensors --target executorch --out artifacts/demo

An existing --out is replaced only when it is empty or holds a bundle of the same checkpoint and target;
--force replaces a different bundle. Nothing is written unless every exported half passes its check.
With --triton-repository DIR the bundle is also written as a Triton Inference Server model repository
(export/triton_repository.py; its options here are prefixed --triton-).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.quantize import OBSERVERS
from export.edge import EDGE_TARGETS
from export.errors import ExportError
from export.exporter import SERVER_ENGINES, ExportOptions, export_bundle
from export.triton_repository import RepositoryError, add_options, options_from, write_repository


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="Stage 2 checkpoint (.safetensors)")
    p.add_argument("--target", required=True, choices=EDGE_TARGETS, help="edge client format")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument(
        "--model-name",
        default=None,
        metavar="NAME",
        help="the name servers serve the model under (letters, digits, _ - .; default: the training run's directory and its data, e.g. pets-Pets-photos)",
    )
    p.add_argument("--server-engine", choices=SERVER_ENGINES, default=None, help="also build a server engine (fp16)")
    g = p.add_argument_group("calibration")
    g.add_argument("--calibration-samples", type=int, default=128, help="images to calibrate on (default 128)")
    g.add_argument("--calibration-split", default="train", choices=("train", "val", "test"))
    g.add_argument("--observer", default="histogram", choices=OBSERVERS, help="activation range observer")
    g.add_argument(
        "--data-config", type=Path, default=None, help="training config whose data section to calibrate on (default: the checkpoint's)"
    )
    g.add_argument("--keep-float", nargs="+", default=[], metavar="MODULE", help="client modules to keep in float (e.g. encoder.project)")
    g.add_argument("--check-samples", type=int, default=32, help="held-out images for the export checks")
    g.add_argument("--check-split", default="val", choices=("train", "val", "test"))
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an --out that holds a different bundle")
    t = p.add_argument_group("Triton Inference Server model repository")
    t.add_argument(
        "--triton-repository", type=Path, default=None, help="also write the bundle as a model version of this Triton repository"
    )
    add_options(t, "triton-")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = ExportOptions(
        checkpoint=args.checkpoint,
        target=args.target,
        out=args.out,
        calibration_samples=args.calibration_samples,
        calibration_split=args.calibration_split,
        observer=args.observer,
        data_config=args.data_config,
        keep_float=tuple(args.keep_float),
        check_samples=args.check_samples,
        check_split=args.check_split,
        server_engine=args.server_engine,
        force=args.force,
        seed=args.seed,
        model_name=args.model_name,
    )
    try:
        export_bundle(opts)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.triton_repository is not None:
        try:
            written = write_repository(args.out, args.triton_repository, options_from(args, "triton-"))
        except RepositoryError as exc:
            print(f"error: the bundle is written, the Triton repository is not: {exc}", file=sys.stderr)
            return 2
        print(f"Triton repository {written.root}: model {written.model} version {written.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
