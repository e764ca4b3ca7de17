"""Bytes on the wire per image, measured by a byte-counting TCP proxy on loopback, for every transport;
MANTiS bitstreams against JPEG and WebP files at the equal-accuracy qualities; and gRPC-stream against
HTTP throughput with concurrent clients. Every number is measured in one run.

    uv run python -m benchmarks.wire --artifacts DIR --images DIR [--limit 100]
        [--report REPORT.json | --jpeg-quality Q --webp-quality Q] [--clients 32] [--requests 2000] [--results-dir results]

``--images`` is a directory of PNG files (the demo writes its held-out set to ``OUT/heldout``);
``--report`` is that demo's ``report.json``, whose equal-accuracy qualities pick the JPEG and WebP
files (the teacher on the decoded image reaches MANTiS's accuracy there: ``mantis_demo/baselines.py``).
Image files travel in the ``bitstream`` tensor over the same transports; serve.py refuses them (they are
no bitstreams), so their uplink is what counts. Exit status 1 when a target is missed or a MANTiS request
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence


from benchmarks.results import Headline, Table, add_results_arguments, write_results
from codec.bundle import BundleError, load_bundle
from benchmarks.image_codecs import compress
from runtime_edge.client import EdgeRuntime
from runtime_edge.preprocess import ImageError, load_image
from runtime_server.backends import BACKENDS
from benchmarks.loadgen import run_transports
from runtime_server.process import LOOPBACK, ServerError, ServerProcess, free_port
from benchmarks.wire_accounting import measure_transports

MANTIS = "MANTiS"
TARGETS = {
    "gRPC stream": {"up_ratio": 3.0, "down_per_image": 120.0},
    "compact stream": {"up_ratio": 1.3, "down_per_image": 32.0},
}
EQUAL_ACCURACY_RATIO = 5.0


def payload_sets(artifacts: Path, images: Sequence[Path], qualities: dict[str, int]) -> dict[str, list[bytes]]:
    """MANTiS bitstreams of ``images`` (the bundle's edge client), and per ``{format: quality}`` the image
    files as the baselines make them (resized to the model input, Pillow's strongest settings)."""
    from training.data import Normalizer

    edge = EdgeRuntime(artifacts)
    pre = edge.bundle.manifest.preprocessing
    resize = Normalizer({"input_size": list(pre.input_size), "mean": list(pre.mean), "std": list(pre.std)}).resize
    pictures = [load_image(p) for p in images]
    sets = {MANTIS: [edge.encode(img).bitstream for img in pictures]}
    for fmt, quality in qualities.items():
        sets[f"{fmt.upper()} q{quality}"] = [compress(resize(img), fmt, quality).data for img in pictures]
    return sets


def measure(
    artifacts: Path,
    images: Sequence[Path],
    qualities: dict[str, int],
    work_dir: Path,
    backend: str = "onnxruntime",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Wire bytes per image of every payload set over every transport (one serve.py, HTTP + gRPC), with
    the targets' verdicts. ``qualities`` are the JPEG/WebP qualities to compare at."""
    bundle = load_bundle(artifacts)
    model = bundle.manifest.model_name
    counts = [len(bundle.labels(t)) for t in bundle.task_names]
    sets = payload_sets(artifacts, images, qualities)
    grpc_port = free_port()
    # The image files are refused on purpose, hundreds of times from one address: without a budget of refused
    # requests, so that every one of them is answered as its transport answers a mistake (not held and 429).
    args = ["--backend", backend, "--grpc-port", str(grpc_port), "--client-error-burst", "0"]
    with ServerProcess(artifacts, work_dir / "serve-wire.log", args) as server:
        rows = measure_transports((LOOPBACK, server.port), (LOOPBACK, grpc_port), model, sets, counts, log=log)
    table = [r.summary() for r in rows]
    mantis = {r["transport"]: r for r in table if r["payload"] == MANTIS}
    checks = []
    for transport, limits in TARGETS.items():
        row = mantis[transport]
        for key, limit in limits.items():
            checks.append({"what": f"{transport}: {key}", "value": row[key], "limit": f"<= {limit:g}", "met": row[key] <= limit})
    for name in sets:
        if name == MANTIS:
            continue
        for r in table:
            if r["payload"] == name:
                ratio = r["up_per_image"] / mantis[r["transport"]]["up_per_image"]
                checks.append(
                    {
                        "what": f"{name} / MANTiS uplink over {r['transport']}",
                        "value": ratio,
                        "limit": f">= {EQUAL_ACCURACY_RATIO:g}",
                        "met": ratio >= EQUAL_ACCURACY_RATIO,
                    }
                )
    failed = sum(r["refused"] for r in table if r["payload"] == MANTIS)
    return {"images": len(images), "qualities": qualities, "rows": table, "checks": checks, "mantis_failed": failed}


def qualities_from_report(path: Path) -> dict[str, int]:
    """The JPEG and WebP equal-accuracy qualities of a demo ``report.json``."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {fmt: int(doc["equal_accuracy"][fmt]["quality"]) for fmt in ("jpeg", "webp")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="bytes on the wire per image for every transport, measured by a TCP proxy on loopback")
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory")
    p.add_argument("--images", type=Path, required=True, help="directory of PNG images (e.g. the demo's OUT/heldout)")
    p.add_argument("--limit", type=int, default=100, help="images to send (default 100)")
    p.add_argument("--report", type=Path, help="demo report.json: compare JPEG/WebP at its equal-accuracy qualities")
    p.add_argument("--jpeg-quality", type=int, help="JPEG quality (instead of --report)")
    p.add_argument("--webp-quality", type=int, help="WebP quality (instead of --report)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients of the throughput run (0: skip it)")
    p.add_argument("--requests", type=int, default=2000, help="requests per transport in the throughput run")
    p.add_argument("--time-cap", type=float, default=60.0, help="seconds per transport at most in the throughput run")
    add_results_arguments(p, "wire")
    args = p.parse_args(argv)
    if args.report is None and (args.jpeg_quality is None or args.webp_quality is None):
        p.error("give --report, or both --jpeg-quality and --webp-quality")
    if args.limit < 1 or args.clients < 0 or args.requests < 1 or args.time_cap <= 0:
        p.error("--limit and --requests must be >= 1, --clients >= 0, --time-cap > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        qualities = qualities_from_report(args.report) if args.report else {"jpeg": args.jpeg_quality, "webp": args.webp_quality}
        images = sorted(args.images.glob("*.png"))[: args.limit]
        if not images:
            raise FileNotFoundError(f"no *.png images in {args.images}")
        print(
            f"{len(images)} images from {args.images}, JPEG q{qualities['jpeg']} and WebP q{qualities['webp']}, {LOOPBACK}, {os.cpu_count()} CPUs"
        )
        with tempfile.TemporaryDirectory(prefix="mantis-wire-") as work:
            result = measure(args.artifacts, images, qualities, Path(work), args.backend)
        throughput = None
        if args.clients:
            model = load_bundle(args.artifacts).manifest.model_name
            bitstreams = payload_sets(args.artifacts, images, {})[MANTIS]
            runs = run_transports(
                args.artifacts, model, ["--backend", args.backend], bitstreams, args.clients, args.requests, args.time_cap
            )
            throughput = [r.summary() for r in runs]
    except (BundleError, ImageError, ServerError, OSError, KeyError, ValueError) as exc:
        print(f"wire: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'payload':<14} {'transport':<28} {'payload_B':>9} {'up_B/img':>9} {'up/payload':>10} {'down_B/img':>10} {'refused':>7}")
    for r in result["rows"]:
        print(
            f"{r['payload']:<14} {r['transport']:<28} {r['payload_bytes']:>9.1f} {r['up_per_image']:>9.1f} {r['up_ratio']:>9.2f}x "
            f"{r['down_per_image']:>10.1f} {r['refused']:>7}"
        )
    checks = list(result["checks"])
    if throughput is not None:
        http, stream = throughput
        print(f"\n{'transport':<20} {'ok':>6} {'failed':>6} {'req/s':>8} {'p50_ms':>7} {'p99_ms':>7}")
        for r in throughput:
            print(f"{r['label']:<20} {r['ok']:>6} {r['failed']:>6} {r['throughput_rps']:>8.1f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}")
        ratio = stream["throughput_rps"] / http["throughput_rps"] if http["throughput_rps"] else float("inf")
        checks.append(
            {"what": f"gRPC stream / HTTP throughput, {args.clients} clients", "value": ratio, "limit": ">= 1", "met": ratio >= 1.0}
        )
        checks.append(
            {
                "what": "failed requests in the throughput run",
                "value": http["failed"] + stream["failed"],
                "limit": "= 0",
                "met": http["failed"] + stream["failed"] == 0,
            }
        )
    print()
    for c in checks:
        print(f"{c['what']}: {c['value']:.2f} (target {c['limit']}: {'met' if c['met'] else 'NOT met'})")
    write_results(
        args.results_name,
        title="Bytes on the wire per image, every transport, counted on the socket",
        module="benchmarks.wire",
        argv=argv,
        headline=[Headline(c["what"], round(c["value"], 2), "", c["limit"]) for c in checks],
        tables=[
            Table(
                f"{len(images)} images; JPEG q{qualities['jpeg']} and WebP q{qualities['webp']}; bytes per image, both directions",
                ["payload", "transport", "payload B", "up B/image", "up / payload", "down B/image", "refused"],
                [
                    [
                        r["payload"],
                        r["transport"],
                        round(r["payload_bytes"], 1),
                        round(r["up_per_image"], 1),
                        round(r["up_ratio"], 2),
                        round(r["down_per_image"], 1),
                        r["refused"],
                    ]
                    for r in result["rows"]
                ],
            )
        ]
        + (
            [
                Table(
                    f"throughput, {args.clients} concurrent clients, single-image requests",
                    ["transport", "answered", "failed", "req/s", "p50 ms", "p99 ms"],
                    [
                        [r["label"], r["ok"], r["failed"], round(r["throughput_rps"], 1), round(r["p50_ms"], 2), round(r["p99_ms"], 2)]
                        for r in throughput
                    ],
                )
            ]
            if throughput is not None
            else []
        ),
        data={**result, "throughput": throughput, "checks": checks},
        results_dir=args.results_dir,
    )
    ok = all(c["met"] for c in checks) and result["mantis_failed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
