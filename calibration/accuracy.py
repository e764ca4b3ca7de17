"""Accuracy of the int8 edge client against the float model, end to end through the real codec.

Both paths run the same pipeline on held-out images: edge client -> task mask (the manifest's rule) ->
``codec.quantize`` -> ``codec.encode`` (the bytes that would be sent) -> ``codec.decode`` ->
``codec.dequantize`` -> server half (``server.onnx`` on ONNX Runtime) -> per-task logits. The float path's
edge client is the eager PyTorch client from the source checkpoint; the int8 path's is the bundle's edge
file on its real runtime (ExecuTorch for ``.pte``, ONNX Runtime for ``.onnx``, Core ML on macOS).

A task's accuracy counts the images that show that task (label >= 0); an answer is correct when the task
is in the image's task mask (the server only answers the tasks the bitstream names) and the argmax of the
task's logits is the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import codec
from codec.bundle import Bundle, file_sha256, task_mask_from_logits
from export.runners import Runner

SERVER_BATCH = 32
_EPS = 1e-9  # accuracy differences are ratios of counts; ignore float rounding at the threshold


class CheckError(RuntimeError):
    """The accuracy check cannot run (missing checkpoint or data, mismatched bundle, runtime failure)."""


@dataclass
class PathOutputs:
    """What one path produced for N images."""

    symbols: np.ndarray  # (N, C, h, w) int32
    masks: np.ndarray  # (N,) int
    num_bytes: np.ndarray  # (N,) int
    logits: list[np.ndarray]  # per task (N, n_labels)


def run_path(edge: Runner, images: Sequence[np.ndarray], tables: Any, server: Runner) -> PathOutputs:
    """Edge client -> task mask -> codec round trip -> server half, for every image."""
    symbols, masks, sizes, decoded = [], [], [], []
    num_tasks = 0
    for x in images:
        latent, task_logits = edge(x)[:2]
        mask = task_mask_from_logits(np.asarray(task_logits).reshape(-1))
        num_tasks = np.asarray(task_logits).size
        sym = codec.quantize(np.asarray(latent, np.float32)[0], tables)
        data = codec.encode(sym, mask, tables)
        dec = codec.decode(data, tables)
        if dec.task_mask != mask or not np.array_equal(dec.symbols, sym):
            raise CheckError("the codec did not round-trip a bitstream (decoded symbols or task mask differ)")
        symbols.append(sym)
        masks.append(mask)
        sizes.append(len(data))
        decoded.append(codec.dequantize(dec.symbols, tables).astype(np.float32))
    y_hat = np.stack(decoded)
    outs: list[list[np.ndarray]] = [[] for _ in range(num_tasks)]
    for start in range(0, len(y_hat), SERVER_BATCH):
        for t, o in enumerate(server(y_hat[start : start + SERVER_BATCH])):
            outs[t].append(np.asarray(o))
    return PathOutputs(np.stack(symbols), np.array(masks), np.array(sizes), [np.concatenate(o) for o in outs])


def task_accuracy(out: PathOutputs, labels: np.ndarray, task_names: Sequence[str]) -> dict[str, float]:
    """Per task: correct answers / images that show the task (see the module docstring)."""
    acc = {}
    for t, name in enumerate(task_names):
        shown = labels[:, t] >= 0
        if not shown.any():
            continue
        active = (out.masks[shown] >> t) & 1 == 1
        right = np.argmax(out.logits[t][shown], axis=1) == labels[shown, t]
        acc[name] = float(np.mean(active & right))
    return acc


def compare(float_out: PathOutputs, int8_out: PathOutputs, labels: np.ndarray, task_names: Sequence[str], max_drop: float) -> dict[str, Any]:
    """The ``int8_check.json`` body (accuracies as fractions, drops in percentage points)."""
    f_acc = task_accuracy(float_out, labels, task_names)
    i_acc = task_accuracy(int8_out, labels, task_names)
    drops = {t: 100.0 * (f_acc[t] - i_acc[t]) for t in f_acc}
    return {
        "images": int(len(labels)),
        "float": {"task_accuracy": f_acc, "bytes_per_image": float(np.mean(float_out.num_bytes))},
        "int8": {"task_accuracy": i_acc, "bytes_per_image": float(np.mean(int8_out.num_bytes))},
        "symbol_agreement": float(np.mean(float_out.symbols == int8_out.symbols)),
        "task_mask_agreement": float(np.mean(float_out.masks == int8_out.masks)),
        "drop_points": drops,
        "max_drop_points": max_drop,
        "passed": all(d <= max_drop + _EPS for d in drops.values()),
    }


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the comparison."""
    rows = [f"{'task':<16}{'float':>9}{'int8':>9}{'drop (pts)':>12}"]
    for t, f in result["float"]["task_accuracy"].items():
        i = result["int8"]["task_accuracy"][t]
        flag = "" if result["drop_points"][t] <= result["max_drop_points"] + _EPS else "  FAIL"
        rows.append(f"{t:<16}{100 * f:>8.2f}%{100 * i:>8.2f}%{result['drop_points'][t]:>12.2f}{flag}")
    rows.append(f"{'bytes/image':<16}{result['float']['bytes_per_image']:>9.1f}{result['int8']['bytes_per_image']:>9.1f}")
    rows.append(f"symbol agreement {result['symbol_agreement']:.4f}, task-mask agreement {result['task_mask_agreement']:.4f}, "
                f"{result['images']} images")
    return "\n".join(rows)


def source_model(bundle: Bundle, checkpoint: Path | None) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """The float model the bundle was exported from (its hash must match the manifest's)."""
    from training.build import load_model
    from training.checkpoint import CheckpointError

    src = bundle.manifest.get("source_checkpoint", {})
    path = Path(checkpoint if checkpoint is not None else src.get("path", ""))
    if not path.is_file():
        raise CheckError(f"source checkpoint {path}: no such file (pass --checkpoint if it moved)")
    if file_sha256(path) != src.get("sha256"):
        raise CheckError(f"checkpoint {path} is not the one bundle {bundle.root} was exported from (sha256 differs)")
    try:
        model, meta = load_model(path, stage="stage2")
    except CheckpointError as exc:
        raise CheckError(str(exc)) from None
    return model, meta, path


def run_check(
    artifacts: Path,
    checkpoint: Path | None = None,
    split: str = "test",
    samples: int | None = None,
    max_drop: float = 1.0,
    data_config_path: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Float vs int8 on ``samples`` held-out images (all of ``split`` by default); returns the
    ``int8_check.json`` body and writes it into ``artifacts``."""
    from calibration.dataset import CalibrationSourceError, data_config, load_split, select_samples
    from codec.bundle import BundleError, load_bundle
    from codec.files import atomic_write_json
    from export.runners import coreml_available, edge_runner, onnx_runner
    from export.verify import eager_outputs

    try:
        bundle = load_bundle(artifacts)
    except BundleError as exc:
        raise CheckError(str(exc)) from None
    model, meta, ckpt = source_model(bundle, checkpoint)
    calib = bundle.edge.get("quantization", {}).get("calibration", {})
    if calib.get("split") == split:
        raise CheckError(f"the edge client was calibrated on the {split} split; check on another split (--split)")
    try:
        cfg = data_config(meta, ckpt, data_config_path)
        dataset = load_split(cfg, split, bundle.task_names)
        n = len(dataset) if samples is None else samples
        held_out = select_samples(dataset, split, n, seed, bundle.task_names)
    except CalibrationSourceError as exc:
        raise CheckError(str(exc)) from None
    images = [x.numpy() for x in held_out.batches()]
    labels = held_out.labels.numpy()
    edge = bundle.edge
    if edge["runtime"] == "coreml":
        ok, reason = coreml_available()
        if not ok:
            raise CheckError(f"{edge['file']}: {reason}; run this check on macOS, or export --target executorch or onnx here")
    try:
        int8_edge = edge_runner(bundle.path(edge["file"]), edge["runtime"], edge["inputs"][0]["name"], tuple(o["name"] for o in edge["outputs"]))
    except Exception as exc:  # each runtime raises its own types when it cannot load a program
        raise CheckError(f"cannot run {edge['file']} on {edge['runtime']}: {exc}") from None
    server = onnx_runner(bundle.path(bundle.server["onnx"]["file"]))
    float_out = run_path(eager_outputs(model.client.eval()), images, bundle.tables, server)
    int8_out = run_path(int8_edge, images, bundle.tables, server)
    result = {
        "bundle": str(bundle.root),
        "edge": {k: edge[k] for k in ("target", "file", "runtime")},
        "split": split,
        **compare(float_out, int8_out, labels, bundle.task_names, max_drop),
    }
    atomic_write_json(bundle.root / "int8_check.json", result)
    return result
