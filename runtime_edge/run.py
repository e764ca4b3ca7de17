"""Encode images on the device and get the server's answers (or save the bitstreams).

    mantis-edge --artifacts DIR --server URL IMAGE...        # = python -m runtime_edge.run
    mantis-edge --artifacts DIR --save OUT_DIR IMAGE...

``URL`` picks the transport by its scheme (:func:`runtime_edge.transport.connect`): ``http://HOST:PORT``,
``https://HOST:PORT`` or ``HOST:PORT`` alone (KServe v2 HTTP), ``grpc://HOST:PORT`` (KServe v2 gRPC, one stream
kept open for all images; the ``grpc`` extra) or ``ws://HOST:PORT`` (the compact stream, codec/STREAM.md). An
IMAGE may be a folder: the image files directly inside it. Prints, per image, the bytes sent and each active
task's top-k labels (with ``--scores`` also their probabilities, for which the server sends the logits).
``--save`` writes ``OUT_DIR/<image stem>.mtb`` (the exact bitstream that would be sent) instead of sending.
An image that cannot be read is reported and the others are still answered. Exit status: 0 success, 2 bad
input (an image, the bundle, arguments, a missing package), 1 the server was unreachable or rejected the request.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from codec.files import atomic_write_bytes
from codec.bundle import BundleError
from codec.wire import TOKEN_ENV, read_token
from runtime_edge.client import EdgeRuntime
from runtime_edge.extras import EXTRAS, USES, install_command
from runtime_edge.models import PTE_RUNTIMES, EdgeRuntimeError
from runtime_edge.predict import request_predictions
from runtime_edge.preprocess import DEFAULT_MAX_PIXELS, ImageError, folder_images, load_image
from runtime_edge.transport import MissingTransportError, RetryPolicy, Transport, TransportError, connect, scheme_of

BITSTREAM_SUFFIX = ".mtb"

EPILOG = "packages (extras of the mantis-edge wheel):\n" + "\n".join(f"  {install_command(extra):32} {USES[extra]}" for extra in EXTRAS)


def program_name() -> str:
    """The name this command was started by (``mantis-edge``, or ``run.py``), for its messages."""
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "mantis-edge"


def plural(count: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=program_name(),
        description="MANTiS edge runtime: image -> bitstream -> server -> per-task answers",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory written by export/split.py")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument(
        "--server",
        help="serve.py URL: http://HOST:PORT (also https://, or HOST:PORT alone), grpc://HOST:PORT "
        "(the grpc extra) or ws://HOST:PORT (the compact stream)",
    )
    dest.add_argument("--save", type=Path, metavar="DIR", help="write <image stem>.mtb bitstreams to DIR instead of sending")
    p.add_argument("--model", help="model name on the server (default: the bundle's model_name)")
    p.add_argument("--top-k", type=int, default=1, help="labels per active task (default 1)")
    p.add_argument(
        "--scores", action="store_true", help="also print each label's probability (the server then sends logits; http:// and grpc:// only)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="images per request (default 1)")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="deadline in seconds for each request: connecting, sending, the whole answer, retries (default 10)",
    )
    p.add_argument("--retries", type=int, default=3, help="retries for refused/reset connections and 503 (default 3)")
    p.add_argument("--token-file", type=Path, help=f"bearer token file (else ${TOKEN_ENV} if set)")
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS:,})",
    )
    p.add_argument(
        "--pte-runtime",
        choices=PTE_RUNTIMES,
        default="auto",
        help="runtime of an edge.pte: numpy (executorch-numpy-runtime, no torch), official (executorch), "
        "auto (numpy where installed and able to load it, else official; default)",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files, or folders of them")
    args = p.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1 or args.retries < 0 or args.timeout <= 0 or args.max_image_pixels < 1:
        p.error("--top-k, --batch-size and --max-image-pixels must be >= 1, --retries >= 0, --timeout > 0")
    if args.server is not None:
        try:
            scheme = scheme_of(args.server)
        except ValueError as exc:
            p.error(str(exc))
        if args.scores and scheme == "ws":
            p.error("--scores needs the logits, which the compact stream (ws://) does not carry: use http:// or grpc:// for --scores")
    return args


def readable_images(paths: list[Path], max_pixels: int, err: TextIO) -> tuple[list[Path], int]:
    """The images to encode (each folder replaced by its images) and how many inputs were refused; every refused
    one is reported on ``err`` with the reason, naming the file."""
    images: list[Path] = []
    refused = 0
    for path in paths:
        try:
            candidates = folder_images(path) if path.is_dir() else [path]
        except (ImageError, OSError) as exc:
            print(f"{program_name()}: {exc}", file=err)
            refused += 1
            continue
        for image in candidates:
            try:
                load_image(image, max_pixels)
            except ImageError as exc:
                print(f"{program_name()}: {exc}", file=err)
                refused += 1
                continue
            images.append(image)
    return images, refused


def save_bitstreams(runtime: EdgeRuntime, images: list[Path], out_dir: Path, out: TextIO) -> None:
    """Encode every image and write ``out_dir/<stem>.mtb``."""
    stems = [img.stem for img in images]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ValueError(f"several images share the stem(s) {dupes}; their .mtb files would overwrite each other")
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in images:
        enc = runtime.encode(load_image(path, runtime.max_pixels))
        target = out_dir / f"{path.stem}{BITSTREAM_SUFFIX}"
        atomic_write_bytes(target, enc.bitstream)
        total += enc.num_bytes
        tasks = ", ".join(runtime.active_tasks(enc.task_mask))
        print(f"{path}: {enc.num_bytes} bytes -> {target} (tasks: {tasks})", file=out)
    print(f"{plural(len(images), 'image')}, {total / len(images):.1f} bytes per image on average", file=out)


def send_images(
    runtime: EdgeRuntime, client: Transport, model: str, images: list[Path], top_k: int, batch_size: int, out: TextIO, scores: bool = False
) -> None:
    """Encode, send in batches of ``batch_size``, and print each image's answers."""
    tasks = runtime.bundle.task_names
    labels = {t: runtime.bundle.labels(t) for t in tasks}
    total = 0
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        encoded = [runtime.encode(load_image(p, runtime.max_pixels)) for p in chunk]
        preds, _ = request_predictions(client, model, [e.bitstream for e in encoded], tasks, labels, top_k, scores)
        for path, enc, pred in zip(chunk, encoded, preds):
            total += enc.num_bytes
            print(f"{path}: {enc.num_bytes} bytes sent, active tasks: {', '.join(pred.active_tasks)}", file=out)
            for task in pred.active_tasks:
                tp = pred.tasks[task]
                if tp.probabilities is None:
                    answer = ", ".join(tp.labels)
                else:
                    answer = ", ".join(f"{lab} ({p:.2f})" for lab, p in zip(tp.labels, tp.probabilities))
                print(f"  {task}: {answer}", file=out)
    print(f"{plural(len(images), 'image')}, {total / len(images):.1f} bytes per image on average", file=out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prog = program_name()
    images, refused = readable_images(args.images, args.max_image_pixels, sys.stderr)
    if not images:
        return 2
    try:
        runtime = EdgeRuntime(args.artifacts, max_pixels=args.max_image_pixels, pte_runtime=args.pte_runtime)
        if args.save is not None:
            save_bitstreams(runtime, images, args.save, sys.stdout)
        else:
            label_counts = [len(runtime.bundle.labels(t)) for t in runtime.bundle.task_names]
            client = connect(
                args.server,
                timeout=args.timeout,
                retry=RetryPolicy(retries=args.retries),
                token=read_token(args.token_file),
                label_counts=label_counts,
            )
            with client:
                send_images(runtime, client, args.model or runtime.model_name, images, args.top_k, args.batch_size, sys.stdout, args.scores)
    except (BundleError, ImageError, EdgeRuntimeError, MissingTransportError, ValueError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except TransportError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    if refused:
        done = "saved" if args.save is not None else "answered"
        print(f"{prog}: {plural(refused, 'input')} could not be read (named above); {plural(len(images), 'image')} {done}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
