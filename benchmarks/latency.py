"""Edge latency at a given resolution, measured in one run: the int8 ExecuTorch edge client against the
float edge client in eager PyTorch, the float edge client on ExecuTorch (fp32 XNNPACK), the whole
teacher (what the device would run without a split) in eager PyTorch, and, for why split at all at a realistic
size, a torchvision ResNet-50 (random weights: latency does not depend on them) in fp32 eager PyTorch and as an
int8 ExecuTorch program (the same PT2E/XNNPACK flow and calibration images as the edge client).

The int8 program is calibrated on real images of the configured data rendered/resized at the benchmark
resolution. Timings are medians over ``repeats`` interleaved rounds after ``warmup`` rounds, on the threads torch and
XNNPACK use by default on this machine, or a given number for both.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from export.calibration_set import data_config, load_split, select_samples
from export.edge import lower_executorch
from export.exporter import load_source
from export.quantize import quantize_pt2e
from runtime_edge.models import ExecuTorchModel


RESNET_FP32 = "ResNet-50, float eager PyTorch"
RESNET_INT8 = "ResNet-50, ExecuTorch int8 (XNNPACK)"


@dataclass
class Timing:
    name: str
    median_ms: float
    p90_ms: float


def time_round_robin(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> list[Timing]:
    """Time every function ``repeats`` times, interleaved (one call of each per round), so that load from
    other processes affects all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t) * 1000.0)
    out = []
    for name, s in samples.items():
        s.sort()
        out.append(Timing(name, statistics.median(s), s[min(len(s) - 1, int(0.9 * len(s)))]))
    return out


def teacher_model(meta: dict[str, Any], checkpoint: Path) -> tuple[torch.nn.Module, str]:
    """The teacher the Stage 2 model was distilled from: its weights when ``teacher.safetensors`` lies
    beside the checkpoint, else its architecture (latency does not depend on the weights)."""
    from training.build import load_model
    from training.models import create_model

    path = checkpoint.with_name("teacher.safetensors")
    if path.is_file():
        model, _ = load_model(path, stage="teacher")
        return model.eval(), str(path)
    spec = meta["model"]["kwargs"]["teacher"]
    return create_model(spec["name"], **spec["kwargs"]).eval(), f"{spec['name']} (architecture only)"


def set_threads(threads: int | None) -> dict[str, int]:
    """Use ``threads`` threads in both eager PyTorch and the ExecuTorch XNNPACK thread pool (None: leave
    each at its default); return what each uses."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    if threads is not None:
        torch.set_num_threads(threads)
        _unsafe_reset_threadpool(threads)
    return {"torch": torch.get_num_threads(), "executorch": _threadpool_get_thread_count()}


RESNET_CALIBRATION = 8
"""Calibration images for the int8 ResNet-50 (its latency does not depend on them; its export time does)."""


def resnet50_programs(x: torch.Tensor, calibration: list[torch.Tensor], tmp: Path) -> tuple[torch.nn.Module, Path]:
    """torchvision ResNet-50 with random weights, eval mode, and its int8 ExecuTorch program at ``x``'s shape."""
    from torchvision.models import resnet50

    torch.manual_seed(0)
    model = resnet50(weights=None).eval()
    path = tmp / "resnet50_int8.pte"
    lower_executorch(quantize_pt2e(copy.deepcopy(model), x, calibration, "histogram"), x, path)
    return model, path


def benchmark(
    checkpoint: Path,
    size: int = 224,
    calibration_samples: int = 32,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    resnet: bool = True,
) -> dict[str, Any]:
    """Measure everything in the module docstring (the ResNet-50 rows when ``resnet``); returns timings (ms), ratios
    and the ``.pte`` sizes."""
    model, meta, _ = load_source(checkpoint)
    cfg = data_config(meta, checkpoint, None)
    cfg["data"]["image_size"] = size
    task_names = [t["name"] for t in meta["tasks"]]
    calib = select_samples(load_split(cfg, "train", task_names), "train", calibration_samples, 0, task_names)
    x = calib.images[:1].clone()
    edge = model.client.eval()
    teacher, teacher_source = teacher_model(meta, checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        int8_path, fp32_path = Path(tmp) / "edge_int8.pte", Path(tmp) / "edge_fp32.pte"
        quantized = quantize_pt2e(edge, x, calib.batches(), "histogram")
        lower_executorch(quantized, x, int8_path)
        lower_executorch(copy.deepcopy(edge), x, fp32_path)
        if resnet:
            resnet_model, resnet_path = resnet50_programs(x, calib.batches()[:RESNET_CALIBRATION], Path(tmp))
        # Before any program is loaded: the XNNPACK delegates keep the thread pool they were loaded with.
        thread_counts = set_threads(threads)
        int8_run, fp32_run = ExecuTorchModel(int8_path).run, ExecuTorchModel(fp32_path).run
        xn = x.numpy()
        fns = {
            "edge client, ExecuTorch int8 (XNNPACK)": lambda: int8_run(xn),
            "edge client, ExecuTorch fp32 (XNNPACK)": lambda: fp32_run(xn),
            "edge client, float eager PyTorch": lambda: edge(x),
            "whole teacher, float eager PyTorch": lambda: teacher(x),
        }
        sizes = {"edge_int8.pte": int8_path.stat().st_size, "edge_fp32.pte": fp32_path.stat().st_size}
        if resnet:
            from executorch.runtime import Runtime

            resnet_method = Runtime.get().load_program(resnet_path).load_method("forward")  # one output: not an edge client
            fns[RESNET_INT8] = lambda: resnet_method.execute([x])
            fns[RESNET_FP32] = lambda: resnet_model(x)
            sizes["resnet50_int8.pte"] = resnet_path.stat().st_size
        with torch.no_grad():
            timings = time_round_robin(fns, warmup, repeats)
        ref = np.asarray(edge(x)[0].detach())
        rel = float(np.sqrt(np.mean((int8_run(xn)[0] - ref) ** 2)) / max(float(np.std(ref)), 1e-12))
    int8_ms = timings[0].median_ms
    by_name = {t.name: t.median_ms for t in timings}
    resnet_ratios = (
        {
            "speedup_int8_vs_resnet50_fp32_eager": by_name[RESNET_FP32] / int8_ms,
            "speedup_int8_vs_resnet50_int8_executorch": by_name[RESNET_INT8] / int8_ms,
        }
        if resnet
        else {}
    )
    return {
        "input": [1, 3, size, size],
        "threads": thread_counts,
        "teacher": teacher_source,
        "timings_ms": {t.name: {"median": t.median_ms, "p90": t.p90_ms} for t in timings},
        "speedup_int8_vs_float_eager": timings[2].median_ms / int8_ms,
        "speedup_int8_vs_fp32_executorch": timings[1].median_ms / int8_ms,
        "speedup_int8_vs_teacher": timings[3].median_ms / int8_ms,
        "pte_bytes": sizes,
        "int8_latent_rel_rmse": rel,
        **resnet_ratios,
    }


def format_report(r: dict[str, Any]) -> str:
    th = r["threads"]
    lines = [f"edge latency at {r['input'][2]}x{r['input'][3]}, threads: torch {th['torch']}, ExecuTorch {th['executorch']}; medians"]
    for name, t in r["timings_ms"].items():
        lines.append(f"  {name:<42}{t['median']:>9.3f} ms  (p90 {t['p90']:.3f})")
    lines.append(
        f"  int8 vs float eager:     {r['speedup_int8_vs_float_eager']:.2f}x faster (target >= 2x: "
        f"{'PASS' if r['speedup_int8_vs_float_eager'] >= 2 else 'FAIL'})"
    )
    lines.append(f"  int8 vs fp32 ExecuTorch: {r['speedup_int8_vs_fp32_executorch']:.2f}x")
    lines.append(f"  int8 vs whole teacher:   {r['speedup_int8_vs_teacher']:.2f}x  (teacher: {r['teacher']})")
    if "speedup_int8_vs_resnet50_fp32_eager" in r:
        fp32, int8 = r["speedup_int8_vs_resnet50_fp32_eager"], r["speedup_int8_vs_resnet50_int8_executorch"]
        lines.append(
            f"  int8 edge client vs ResNet-50 fp32 eager:     {fp32:.1f}x faster (target >= 10x: {'PASS' if fp32 >= 10 else 'FAIL'})"
        )
        lines.append(f"  int8 edge client vs ResNet-50 int8 ExecuTorch: {int8:.1f}x faster (target > 1x: {'PASS' if int8 > 1 else 'FAIL'})")
    for name, size in r["pte_bytes"].items():
        lines.append(f"  {name}: {size} bytes ({size / 1024:.1f} KiB)")
    lines.append(f"  int8 latent relative RMSE vs float: {r['int8_latent_rel_rmse']:.4f}")
    return "\n".join(lines)
