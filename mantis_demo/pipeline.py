"""The whole MANTiS pipeline on the built-in data, as ``demo.py`` runs it.

1. train (``training/train.py``; a finished run with the same config is reused as is),
2. export the int8 ExecuTorch edge client and the server half (``export/split.py --target executorch``;
   a bundle of the same checkpoint is reused),
3. save the held-out (``test``) split as PNG files with their labels,
4. evaluate the float model in process (real entropy coding, ``training.evaluate``),
5. start ``runtime_server/serve.py`` on loopback, run the edge runtime over every held-out PNG (the real
   ``.pte`` on the ExecuTorch runtime, rANS, HTTP), stop the server,
6. the JPEG and WebP baselines (teacher on decoded images), teacher timings,
7. bytes on the wire per image for every transport, MANTiS against JPEG and WebP at their equal-accuracy
   qualities, counted on the socket by a TCP proxy (``benchmarks.wire``),
8. ``report.json``, ``report.md`` and plots (``mantis_demo.report``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from codec.bundle import BundleError, file_sha256, load_bundle
from codec.files import atomic_write_json
from mantis_demo import report as report_mod
from benchmarks import wire as wire_benchmark
from benchmarks.baselines import DEFAULT_QUALITIES, TeacherClassifier, codec_curve
from runtime_edge.client import EdgeRuntime
from runtime_edge.preprocess import load_image
from runtime_edge.predict import request_predictions
from runtime_edge.transport.http import KServeClient
from runtime_server.process import ServerProcess
from training.metrics import mean_task_accuracy, task_accuracy

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "training" / "configs" / "demo.yaml"
WARMUP_IMAGES = 5
WIRE_IMAGES = 200
"""Held-out images the wire accounting sends per payload set and transport (bytes per image vary by < 1 % beyond it)."""


class DemoError(RuntimeError):
    """A pipeline stage failed; the message names the stage and where its log is."""


@dataclass
class DemoOptions:
    out: Path
    config: Path = DEFAULT_CONFIG
    checkpoint: Path | None = None  # use this Stage 2 checkpoint instead of training
    artifacts: Path | None = None  # use this bundle instead of exporting
    limit: int | None = None  # held-out images to use (default: the whole test split)
    qualities: Sequence[int] = DEFAULT_QUALITIES
    backend: str = "onnxruntime"
    calibration_samples: int = 128
    check_samples: int = 32
    sweep: Path | None = None  # a finished training/sweep.py directory: MANTiS and No-FiLM as curves
    curve: Sequence[float] | None = None  # beta' of MANTiS's int8 curve (trained, exported, measured), or None: no curve
    stages_s: dict[str, float] = field(default_factory=dict)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class _Stage:
    """``with _Stage(opts, "train"):`` logs the stage and records its wall time."""

    def __init__(self, opts: DemoOptions, name: str, log: Callable[[str], None]) -> None:
        self.opts, self.name, self.log = opts, name, log

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        self.log(f"== {self.name}")

    def __exit__(self, *exc: object) -> None:
        self.opts.stages_s[self.name] = round(time.perf_counter() - self.start, 2)


def train(config: Path, out: Path, log: Callable[[str], None] = _log) -> Path:
    """Stage 2 checkpoint for ``config`` in ``out``: reused when ``out`` holds a finished run of exactly this
    config, else ``training/train.py`` (which itself reuses every finished stage whose config matches)."""
    from training.checkpoint import CheckpointError, read_checkpoint
    from training.config import load_config
    from training.train import main as train_main

    cfg = load_config(config)
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():
        try:
            ckpt = Path(json.loads(metrics_path.read_text())["checkpoint"])
            _, meta = read_checkpoint(ckpt, "stage2")
            if meta.get("config") == cfg and (ckpt.parent / "teacher.safetensors").is_file():
                log(f"reusing the finished training run in {out} ({ckpt.name})")
                return ckpt
        except (CheckpointError, KeyError, ValueError, OSError) as exc:
            log(f"not reusing {out}: {exc}")
    code = train_main(["--config", str(config), "--out", str(out)])
    if code != 0:
        raise DemoError(f"training failed (training/train.py exited with {code})")
    return Path(json.loads(metrics_path.read_text())["checkpoint"])


def export(checkpoint: Path, out: Path, opts: DemoOptions, log: Callable[[str], None] = _log) -> Path:
    """An int8 ExecuTorch bundle of ``checkpoint`` in ``out`` (reused when it verifies and matches)."""
    from export.split import main as split_main

    if (out / "manifest.json").is_file():
        try:
            manifest = load_bundle(out).manifest
            if manifest.source_checkpoint["sha256"] == file_sha256(checkpoint) and manifest.edge.target == "executorch":
                log(f"reusing the bundle in {out}")
                return out
        except BundleError as exc:
            log(f"not reusing {out}: {exc}")
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--target",
        "executorch",
        "--out",
        str(out),
        "--force",
        "--calibration-samples",
        str(opts.calibration_samples),
        "--check-samples",
        str(opts.check_samples),
    ]
    code = split_main(argv)
    if code != 0:
        raise DemoError(f"export failed (export/split.py exited with {code})")
    return out


@dataclass
class HeldOut:
    paths: list[Path]
    labels: np.ndarray  # (N, T), -1 where a task does not apply
    task_names: list[str]
    size: tuple[int, int]


def save_held_out(cfg: dict[str, Any], out: Path, limit: int | None) -> HeldOut:
    """Write the test split as ``out/NNNNN.png`` plus ``out/labels.json`` (label names, null when absent)."""
    from training.data import build_datasets

    _, _, test, tasks, _ = build_datasets({**cfg, "data": {**cfg["data"], "cache": False}}, splits=("test",))
    n = len(test) if limit is None else min(limit, len(test))
    out.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for i in range(n):
        image, lab, _ = test.source.raw(i)
        path = out / f"{i:05d}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(image, mode="RGB").save(tmp, format="PNG")
        tmp.replace(path)
        paths.append(path)
        labels.append(lab)
    names = [t.name for t in tasks]
    doc = {p.name: {t.name: (t.labels[int(l[k])] if l[k] >= 0 else None) for k, t in enumerate(tasks)} for p, l in zip(paths, labels)}
    atomic_write_json(out / "labels.json", doc, indent=1)
    h, w = Image.open(paths[0]).size[::-1]
    return HeldOut(paths, np.stack(labels).astype(np.int64), names, (h, w))


def evaluate_float(checkpoint: Path, cfg: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The float Stage 2 model in PyTorch on the same held-out images, with real entropy coding."""
    from torch.utils.data import DataLoader, Subset

    from training.build import load_model
    from training.data import build_datasets
    from training.evaluate import evaluate

    model, _ = load_model(checkpoint, stage="stage2")
    _, _, test, tasks, _ = build_datasets(cfg, splits=("test",))
    data = test if limit is None else Subset(test, range(min(limit, len(test))))
    m = evaluate(model, DataLoader(data, batch_size=cfg["data"]["eval_batch_size"]), tasks, desc="float eval")
    keys = ("task_accuracy", "mean_task_accuracy", "bytes_per_image", "task_detection_accuracy", "images")
    return {k: m[k] for k in keys}


def run_edge(bundle_dir: Path, held: HeldOut, opts: DemoOptions, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Every held-out PNG through the real edge client and serve.py; accuracy, bytes and latencies."""
    runtime = EdgeRuntime(bundle_dir)
    if runtime.bundle.task_names != held.task_names:
        raise DemoError(f"bundle tasks {runtime.bundle.task_names} differ from the data's {held.task_names}")
    labels = {t: runtime.bundle.labels(t) for t in held.task_names}
    index = {t: {name: j for j, name in enumerate(labels[t])} for t in held.task_names}
    n, num_tasks = len(held.paths), len(held.task_names)
    preds = np.full((n, num_tasks), -1, dtype=np.int64)
    active = np.zeros((n, num_tasks), dtype=bool)
    nbytes: list[int] = []
    lat: dict[str, list[float]] = {"edge_encode": [], "entropy_coding": [], "server": [], "end_to_end": []}
    failed = 0
    with ServerProcess(bundle_dir, opts.out / "serve.log", ["--backend", opts.backend]) as server:
        log(f"serve.py ready at {server.url} (log {opts.out / 'serve.log'})")
        with KServeClient(server.url, timeout=30.0) as client:
            for img_path in held.paths[:WARMUP_IMAGES]:
                request_predictions(client, runtime.model_name, [runtime.encode(load_image(img_path)).bitstream], held.task_names, labels)
            for i, img_path in enumerate(held.paths):
                image = load_image(img_path)
                enc = runtime.encode(image)
                [pred], result = request_predictions(client, runtime.model_name, [enc.bitstream], held.task_names, labels)
                failed += result.attempts - 1
                nbytes.append(enc.num_bytes)
                lat["edge_encode"].append(enc.timings["preprocess_ms"] + enc.timings["edge_ms"])
                lat["entropy_coding"].append(enc.timings["entropy_ms"])
                lat["server"].append(result.elapsed_ms)
                lat["end_to_end"].append(enc.timings["total_ms"] + result.elapsed_ms)
                for t, task in enumerate(held.task_names):
                    if task in pred.tasks:
                        active[i, t] = True
                        preds[i, t] = index[task][pred.tasks[task].label]
        server_side = server.server_side_ms()
    truth = held.labels >= 0
    acc = task_accuracy(preds, held.labels, active, held.task_names)
    return {
        "task_accuracy": acc,
        "mean_task_accuracy": mean_task_accuracy(acc),
        "bytes_per_image": float(np.mean(nbytes)),
        "bytes": {"min": int(np.min(nbytes)), "max": int(np.max(nbytes)), "p50": float(np.median(nbytes)), "total": int(np.sum(nbytes))},
        "task_detection_accuracy": float(np.mean(np.all(active == truth, axis=1))),
        "images": n,
        "retried_requests": failed,
        "latency_ms": {k: report_mod.summarize_ms(v) for k, v in lat.items()},
        "server_side_ms": server_side,
    }


def run_baselines(teacher_path: Path, held: HeldOut, qualities: Sequence[int], log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Teacher (a ``teacher.safetensors``) on lossless PNG, JPEG and WebP curves, and its batch-1 timings."""
    from training.build import load_model

    teacher, meta = load_model(teacher_path, stage="teacher")
    classifier = TeacherClassifier(teacher, meta["preprocessing"])
    images = [load_image(p) for p in held.paths]
    everything = np.ones(held.labels.shape, dtype=bool)
    lossless = task_accuracy(classifier.predict(images), held.labels, everything, held.task_names)
    out: dict[str, Any] = {
        "teacher": {
            "task_accuracy": lossless,
            "mean_task_accuracy": mean_task_accuracy(lossless),
            "bytes_per_image": float(np.mean([p.stat().st_size for p in held.paths])),
            "input": "lossless PNG",
        }
    }
    for fmt in ("jpeg", "webp"):
        out[fmt] = codec_curve(fmt, qualities, images, held.labels, classifier, held.task_names, log)
    out["timing"] = classifier.time_single(images[: min(len(images), 200)])
    return out


def load_sweep(sweep_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """A sweep's ``curves.json``, checked to be measured on the same data (seed and data section) as ``cfg``."""
    from training.config import ConfigError, fingerprint, load_config
    from training.sweep import CURVES_FILE

    path = sweep_dir / CURVES_FILE
    if not path.is_file():
        raise DemoError(f"sweep {sweep_dir}: no {CURVES_FILE} (run training/sweep.py into it first)")
    try:
        sweep = json.loads(path.read_text())
        sweep_cfg = load_config(sweep["config"], sweep.get("sets", []))
    except (OSError, ValueError, KeyError, ConfigError) as exc:
        raise DemoError(f"sweep {path}: unreadable ({exc})") from None
    if fingerprint(sweep_cfg, ["seed", "data"]) != fingerprint(cfg, ["seed", "data"]):
        raise DemoError(
            f"sweep {sweep_dir} was measured on other data ({sweep['config']}) than the demo's --config; "
            "pass the sweep's config so both use the same held-out images"
        )
    return sweep


CURVE_DIR = "curve"
"""The int8 curve's sweep directory inside the demo's output (``OUT/curve/film/beta_*/``)."""


def measure_int8_curve(
    config: Path, checkpoint: Path, out: Path, betas: Sequence[float], log: Callable[[str], None] = _log
) -> dict[str, Any]:
    """MANTiS's int8 rate-accuracy curve: Stage 2 at every beta' (``training/sweep.py``, reusing the teacher and
    Stage 1 beside ``checkpoint``, and its Stage 2 at the config's beta'), every point exported as an int8
    bundle and measured on the device path over the whole test split (``calibration/int8_curve.py``)."""
    from calibration.int8_accuracy import CheckError
    from calibration.int8_curve import int8_curve
    from export.errors import ExportError
    from training.sweep import sweep

    try:
        sweep(config, out, betas, ["film"], reuse=[checkpoint.parent])
        return int8_curve(out, "film", None, "executorch", log)
    except (CheckError, ExportError) as exc:
        raise DemoError(f"int8 curve: {exc}") from None


def run_demo(opts: DemoOptions, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Run every stage into ``opts.out`` and return the report (also written as report.json / report.md)."""
    from training.config import load_config

    start = time.perf_counter()
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(opts.config)
    sweep = load_sweep(opts.sweep, cfg) if opts.sweep is not None else None
    if opts.curve is not None and opts.limit is not None:
        raise DemoError("the int8 curve is measured on the whole test split; --limit would compare it with JPEG/WebP on other images")
    with _Stage(opts, "train", log):
        checkpoint = opts.checkpoint or train(opts.config, out / "train", log)
    with _Stage(opts, "export", log):
        bundle_dir = opts.artifacts or export(checkpoint, out / "bundle", opts, log)
    bundle = load_bundle(bundle_dir)
    if bundle.manifest.source_checkpoint["sha256"] != file_sha256(checkpoint):
        raise DemoError(f"bundle {bundle_dir} was exported from another checkpoint than {checkpoint}")
    curve = None
    if opts.curve is not None:
        with _Stage(opts, "int8 curve", log):
            curve = measure_int8_curve(opts.config, checkpoint, out / CURVE_DIR, opts.curve, log)
    with _Stage(opts, "held-out images", log):
        held = save_held_out(cfg, out / "heldout", opts.limit)
        log(f"{len(held.paths)} held-out images in {out / 'heldout'}")
    with _Stage(opts, "float evaluation", log):
        float_metrics = evaluate_float(checkpoint, cfg, opts.limit)
    with _Stage(opts, "edge runtime -> serve.py", log):
        edge = run_edge(bundle_dir, held, opts, log)
        log(f"MANTiS int8 end to end: {edge['bytes_per_image']:.1f} bytes per image, mean task accuracy {edge['mean_task_accuracy']:.3f}")
    with _Stage(opts, "baselines", log):
        base = run_baselines(checkpoint.parent / "teacher.safetensors", held, opts.qualities, log)
    with _Stage(opts, "wire bytes", log):
        eq = report_mod.equal_accuracy_summary(edge["bytes_per_image"], edge["mean_task_accuracy"], {k: base[k] for k in ("jpeg", "webp")})
        wire = wire_benchmark.measure(
            bundle_dir,
            held.paths[:WIRE_IMAGES],
            {k: eq[k]["quality"] for k in ("jpeg", "webp")},
            out,
            opts.backend,
            lambda msg: log(f"wire: {msg}"),
        )
    lat = edge.pop("latency_ms")
    report = {
        "model_name": bundle.manifest.model_name,
        "config": str(opts.config),
        "checkpoint": str(checkpoint),
        "edge": {
            "file": bundle.manifest.edge.file,
            "runtime": bundle.manifest.edge.runtime,
            "quantization": bundle.manifest.edge.quantization.get("scheme"),
        },
        "server": {"backend": opts.backend},
        "dataset": {"split": "test", "images": len(held.paths), "height": held.size[0], "width": held.size[1], "tasks": held.task_names},
        "float": float_metrics,
        "edge_int8": edge,
        "teacher": base["teacher"],
        "jpeg": base["jpeg"],
        "webp": base["webp"],
        "latency_ms": lat,
        "wire": wire,
        "measured_compute_ms": {
            "mantis_edge": lat["edge_encode"]["p50"] + lat["entropy_coding"]["p50"],
            "mantis_server": edge["server_side_ms"]["decode"] + edge["server_side_ms"]["server_half"],
            "teacher_preprocess": base["timing"]["preprocess"],
            "teacher": base["timing"]["forward"],
        },
        "stages_s": opts.stages_s,
    }
    if sweep is not None:
        report["sweep"] = report_mod.sweep_section(sweep, {k: base[k] for k in ("jpeg", "webp")}, str(opts.sweep))
        best = report["sweep"].get("vs_best_baseline")
        if best:
            log(f"MANTiS vs the best baseline ({best['format'].upper()}): BD-rate {best['bd_rate_percent']:+.1f} %")
    if curve is not None:
        report["int8_curve"] = report_mod.int8_curve_section(curve, {k: base[k] for k in ("jpeg", "webp")}, str(out / CURVE_DIR))
        best = report["int8_curve"].get("vs_best_baseline")
        if best:
            log(f"MANTiS int8 curve vs the best baseline ({best['format'].upper()}): BD-rate {best['bd_rate_percent']:+.1f} %")
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report = report_mod.finalize(report, out)
    eq = report["equal_accuracy"]
    for key in ("jpeg", "webp"):
        b = eq[key]
        log(
            f"bytes at equal accuracy vs {key.upper()} q{b['quality']}: {b['ratio']:.1f}x"
            + ("" if b["reached"] else " (not reached; lower bound)")
        )
    log(f"report: {out / 'report.md'} ({report['wall_s']:.0f} s)")
    return report
