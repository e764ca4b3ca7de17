"""The EfficientNet-Lite0 split at 224x224 on this CPU, in one run: edge latency at 1 and 2 threads, program
sizes, and the server half's throughput with dynamic batching vs batch size 1.

    uv run python -m benchmarks.effnet_latency --artifacts artifacts/effnet_lite0 --checkpoint runs/effnet_lite0_224/stage2.safetensors

Edge: the bundle's int8 ``edge.pte`` (what the device runs) against the whole EfficientNet-Lite0 (the teacher,
every layer, 1000 logits) as an int8 ExecuTorch program made by the same PT2E/XNNPACK flow and calibration
images as the edge client, as an fp32 ExecuTorch program (XNNPACK) and in float eager PyTorch. For each
thread count the ExecuTorch thread pool is reset and the programs are loaded anew (a delegate keeps the pool
it was loaded with); timings are medians of interleaved rounds (``benchmarks.latency.time_round_robin``).
Server: ``serve.py`` started twice on loopback (``benchmarks.loadgen.run_configs``, as
``benchmarks/server_throughput.py``), fed the real bitstreams of the held-out photos.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks.results import Headline, Table, write_results

MODULE = "benchmarks.effnet_latency"
TARGET_SPEEDUP = 3.0
EDGE_INT8 = "edge client, ExecuTorch int8 (bundle edge.pte)"
WHOLE_INT8 = "whole EfficientNet-Lite0, ExecuTorch int8"
WHOLE_FP32 = "whole EfficientNet-Lite0, ExecuTorch fp32"
WHOLE_EAGER = "whole EfficientNet-Lite0, float eager PyTorch"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="executorch bundle exported from --checkpoint")
    p.add_argument("--checkpoint", type=Path, required=True, help="the Stage 2 checkpoint (teacher.safetensors beside it)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--calibration-samples", type=int, default=32)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=600, help="server requests per configuration")
    p.add_argument("--time-cap", type=float, default=60.0, help="server seconds per configuration at most")
    p.add_argument("--name", default="effnet_latency", help="results file name")
    return p.parse_args(argv)


def edge_latency(
    bundle_pte: Path, whole: torch.nn.Module, calibration: list[torch.Tensor], threads: Sequence[int], warmup: int, repeats: int, tmp: Path
) -> tuple[dict[int, dict[str, Any]], dict[str, int]]:
    """Per thread count, the median and p90 ms of each program; and the program sizes."""
    from executorch.runtime import Runtime

    from export.edge import lower_executorch
    from benchmarks.latency import set_threads, time_round_robin
    from export.quantize import quantize_pt2e
    from runtime_edge.models import ExecuTorchModel

    x = calibration[0]
    int8_path, fp32_path = tmp / "whole_int8.pte", tmp / "whole_fp32.pte"
    lower_executorch(quantize_pt2e(copy.deepcopy(whole), x, calibration, "histogram"), x, int8_path)
    lower_executorch(copy.deepcopy(whole), x, fp32_path)
    sizes = {
        "edge.pte (int8 edge client)": bundle_pte.stat().st_size,
        "whole EfficientNet-Lite0 int8 .pte": int8_path.stat().st_size,
        "whole EfficientNet-Lite0 fp32 .pte": fp32_path.stat().st_size,
    }
    xn = x.numpy()
    out = {}
    for t in threads:
        counts = set_threads(t)
        edge = ExecuTorchModel(bundle_pte)
        int8 = Runtime.get().load_program(int8_path).load_method("forward")
        fp32 = Runtime.get().load_program(fp32_path).load_method("forward")
        fns = {
            EDGE_INT8: lambda e=edge: e.run(xn),
            WHOLE_INT8: lambda m=int8: m.execute([x]),
            WHOLE_FP32: lambda m=fp32: m.execute([x]),
            WHOLE_EAGER: lambda: whole(x),
        }
        with torch.no_grad():
            timings = time_round_robin(fns, warmup, repeats)
        out[t] = {"threads": counts, "ms": {tm.name: {"median": tm.median_ms, "p90": tm.p90_ms} for tm in timings}}
    return out, sizes


def server_throughput(artifacts: Path, images: list[Any], clients: int, requests: int, time_cap: float) -> list[dict[str, Any]]:
    """serve.py with dynamic batching and with batch size 1, on the real bitstreams of ``images``."""
    from codec.bundle import read_manifest
    from runtime_edge.client import EdgeRuntime
    from benchmarks.loadgen import run_configs

    edge = EdgeRuntime(artifacts)
    bitstreams = [edge.encode(img).bitstream for img in images]
    model = read_manifest(artifacts).model_name
    common = ["--backend", "onnxruntime", "--max-request-images", "1"]
    configs = [
        ("dynamic (max 32, 2 ms)", common + ["--max-batch-size", "32", "--max-queue-delay-ms", "2"]),
        ("batch size 1", common + ["--max-batch-size", "1", "--max-queue-delay-ms", "0"]),
    ]
    results = run_configs(artifacts, model, configs, bitstreams, clients, requests, time_cap)
    return [r.summary() | {"mean_bitstream_bytes": sum(map(len, bitstreams)) / len(bitstreams)} for r in results]


def main(argv: Sequence[str] | None = None) -> int:
    from export.calibration_set import CalibrationSourceError, data_config, load_split, select_samples
    from export.exporter import load_source
    from benchmarks.latency import teacher_model

    args = parse_args(argv)
    edge_pte = args.artifacts / "edge.pte"
    if not edge_pte.is_file():
        print(f"error: {edge_pte} missing: export the checkpoint with --target executorch", file=sys.stderr)
        return 2
    _, meta, _ = load_source(args.checkpoint)
    whole, whole_source = teacher_model(meta, args.checkpoint)
    names = [t["name"] for t in meta["tasks"]]
    try:
        cfg = data_config(meta, args.checkpoint, None)
        calib = select_samples(load_split(cfg, "train", names), "train", args.calibration_samples, 0, names)
        test = load_split(cfg, "test", names)
    except CalibrationSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        latency, sizes = edge_latency(edge_pte, whole, calib.batches(), args.threads, args.warmup, args.repeats, Path(tmp))
    server = server_throughput(args.artifacts, [test.pil(i) for i in range(len(test))], args.clients, args.requests, args.time_cap)
    size = calib.images.shape[-1]
    headline = []
    rows = []
    for t, r in latency.items():
        ms = r["ms"]
        speedup = ms[WHOLE_INT8]["median"] / ms[EDGE_INT8]["median"]
        target = f">= {TARGET_SPEEDUP:g}x" + (f": {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}" if t == 1 else "")
        headline.append(
            Headline(
                f"int8 edge client vs whole EfficientNet-Lite0 int8, {t} thread{'s' if t > 1 else ''}",
                round(speedup, 2),
                "x faster",
                target,
            )
        )
        rows += [
            [t, name, round(v["median"], 3), round(v["p90"], 3), round(v["median"] / ms[EDGE_INT8]["median"], 2)] for name, v in ms.items()
        ]
    dynamic, single = server
    ratio = dynamic["throughput_rps"] / single["throughput_rps"] if single["throughput_rps"] else float("inf")
    headline.append(
        Headline(
            "edge.pte size / whole EfficientNet-Lite0 int8 .pte",
            round(sizes["edge.pte (int8 edge client)"] / sizes["whole EfficientNet-Lite0 int8 .pte"], 4),
            "",
        )
    )
    headline.append(Headline("server half throughput, dynamic batching / batch size 1", round(ratio, 2), "x"))
    tables = [
        Table(
            f"Edge latency at {size}x{size}, batch 1 (ms; ratio = time / int8 edge client)",
            ["threads", "program", "median ms", "p90 ms", "ratio"],
            rows,
        ),
        Table("Program sizes", ["program", "bytes"], [[k, v] for k, v in sizes.items()]),
        Table(
            f"serve.py on loopback, {args.clients} concurrent clients, single-image requests (ONNX Runtime)",
            ["configuration", "ok", "failed", "req/s", "p50 ms", "p99 ms", "mean batch"],
            [
                [
                    s["label"],
                    s["ok"],
                    s["failed"],
                    round(s["throughput_rps"], 1),
                    round(s["p50_ms"], 1),
                    round(s["p99_ms"], 1),
                    round(s["mean_batch"], 2),
                ]
                for s in server
            ],
        ),
    ]
    notes = [
        f"Whole network: {whole_source}; int8 and fp32 ExecuTorch programs made in this run, calibrated on the same "
        f"{len(calib.images)} training crops as the edge client's latency input.",
        "This CPU is shared with other work while the benchmark runs; the programs are timed interleaved so that load hits them alike, "
        "and the ratios are what the run measured. On a phone's CPU the absolute times differ.",
    ]
    write_results(
        args.name,
        title="EfficientNet-Lite0 split at 224x224: edge latency, sizes, server throughput",
        module=MODULE,
        argv=argv,
        headline=headline,
        tables=tables,
        notes=notes,
        data={"latency": {str(k): v for k, v in latency.items()}, "sizes": sizes, "server": server, "server_ratio": ratio},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
