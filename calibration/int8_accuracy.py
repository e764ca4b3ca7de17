"""Accuracy of the int8 edge client against the float model, end to end through the real codec.

The int8 path is what a device runs: :class:`runtime_edge.client.EdgeRuntime` on the raw held-out images
(the manifest's preprocessing, the bundle's edge file on its runtime, the task-mask rule, quantization and
rANS), giving the exact bitstreams a device would send. The float path runs the eager PyTorch client of the
source checkpoint on training's preprocessing of the same images and codes its latents with the same
tables. Both sets of bitstreams are then decoded (``codec.decode_latent``) and run through the server half
on the backend ``serve.py`` uses (``server.onnx`` on ONNX Runtime)::

    raw image ─► EdgeRuntime.encode ───────────────────────────► bitstream ─┐
    tensor    ─► eager client ─► task mask, quantize, encode ──► bitstream ─┴► decode ─► server half ─► logits

Per-task accuracy is :func:`training.metrics.task_accuracy`: over the images that show the task (label >= 0),
an answer is correct when the task is in the image's task mask (the server only answers the tasks the
bitstream names) and the argmax of the task's logits is the label; a task no image shows is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import codec
from codec.bundle import Bundle, file_sha256
from codec.manifest import task_mask_from_logits
from training.metrics import task_accuracy

SERVER_BATCH = 32
_EPS = 1e-9  # accuracy differences are ratios of counts; ignore float rounding at the threshold

ServerRun = Callable[[np.ndarray], list[np.ndarray]]


class CheckError(RuntimeError):
    """The accuracy check cannot run (missing checkpoint or data, mismatched bundle, runtime failure)."""


@dataclass
class PathOutputs:
    """What one path produced for N images."""

    symbols: np.ndarray  # (N, C, h, w) int32
    masks: np.ndarray  # (N,) int
    num_bytes: np.ndarray  # (N,) int
    logits: list[np.ndarray]  # per task (N, n_labels)

    @property
    def predictions(self) -> np.ndarray:
        """``(N, T)`` top-1 label of every task."""
        return np.stack([np.argmax(lg, axis=1) for lg in self.logits], axis=1)

    @property
    def active(self) -> np.ndarray:
        """``(N, T)``: task ``t`` is in image ``i``'s task mask."""
        return (self.masks[:, None] >> np.arange(len(self.logits))) & 1 == 1

    def task_accuracy(self, labels: np.ndarray, task_names: Sequence[str]) -> dict[str, float]:
        """:func:`training.metrics.task_accuracy` of these outputs against ``(N, T)`` labels."""
        return task_accuracy(self.predictions, labels, self.active, task_names)


def eager_bitstreams(client: torch.nn.Module, images: Sequence[np.ndarray], tables: Any) -> list[bytes]:
    """Bitstreams of a PyTorch edge client (float or its int8 graph) on preprocessed ``(1,3,H,W)`` images:
    task mask by the manifest's rule, the codec's quantization and rANS."""
    out = []
    with torch.no_grad():
        for x in images:
            latent, task_logits = client(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
            mask = task_mask_from_logits(task_logits.numpy().reshape(-1))
            out.append(codec.encode(codec.quantize(latent.numpy()[0], tables), mask, tables))
    return out


def serve_bitstreams(bitstreams: Sequence[bytes], tables: Any, server: ServerRun, num_tasks: int) -> PathOutputs:
    """Decode every bitstream as the server does and run the server half on the decoded latents."""
    decoded = [codec.decode(data, tables) for data in bitstreams]
    y_hat = np.stack([codec.dequantize(d.symbols, tables).astype(np.float32) for d in decoded])
    outs: list[list[np.ndarray]] = [[] for _ in range(num_tasks)]
    for start in range(0, len(y_hat), SERVER_BATCH):
        for t, o in enumerate(server(y_hat[start : start + SERVER_BATCH])):
            outs[t].append(np.asarray(o))
    return PathOutputs(
        np.stack([d.symbols for d in decoded]),
        np.array([d.task_mask for d in decoded]),
        np.array([len(b) for b in bitstreams]),
        [np.concatenate(o) for o in outs],
    )


def compare(
    float_out: PathOutputs, int8_out: PathOutputs, labels: np.ndarray, task_names: Sequence[str], max_drop: float
) -> dict[str, Any]:
    """The ``int8_check.json`` body (accuracies as fractions, drops in percentage points)."""
    f_acc = float_out.task_accuracy(labels, task_names)
    i_acc = int8_out.task_accuracy(labels, task_names)
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
    rows.append(
        f"symbol agreement {result['symbol_agreement']:.4f}, task-mask agreement {result['task_mask_agreement']:.4f}, "
        f"{result['images']} images"
    )
    return "\n".join(rows)


def source_model(bundle: Bundle, checkpoint: Path | None) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """The float model the bundle was exported from (its hash must match the manifest's)."""
    from training.build import load_model
    from training.checkpoint import CheckpointError

    src = bundle.manifest.source_checkpoint
    path = Path(checkpoint if checkpoint is not None else src["path"])
    if not path.is_file():
        raise CheckError(f"source checkpoint {path}: no such file (pass --checkpoint if it moved)")
    if file_sha256(path) != src["sha256"]:
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
    from codec.files import atomic_write_json
    from codec.bundle import BundleError
    from export.calibration_set import CalibrationSourceError, data_config, load_split, select_samples
    from runtime_edge.client import EdgeRuntime
    from runtime_edge.models import EdgeRuntimeError
    from runtime_server.backends import BackendUnavailableError, load_backend

    try:
        device = EdgeRuntime(artifacts)
    except BundleError as exc:
        raise CheckError(str(exc)) from None
    except EdgeRuntimeError as exc:
        raise CheckError(f"cannot run the bundle's edge client here: {exc}") from None
    bundle = device.bundle
    model, meta, ckpt = source_model(bundle, checkpoint)
    calib = bundle.manifest.edge.quantization.get("calibration", {})
    if calib.get("split") == split:
        raise CheckError(f"the edge client was calibrated on the {split} split; check on another split (--split)")
    try:
        cfg = data_config(meta, ckpt, data_config_path)
        dataset = load_split(cfg, split, bundle.task_names)
        n = len(dataset) if samples is None else samples
        held_out = select_samples(dataset, split, n, seed, bundle.task_names)
    except CalibrationSourceError as exc:
        raise CheckError(str(exc)) from None
    try:
        server = load_backend("onnxruntime", bundle).run
    except BackendUnavailableError as exc:
        raise CheckError(str(exc)) from None
    labels = held_out.labels.numpy()
    num_tasks = len(bundle.task_names)
    float_bits = eager_bitstreams(model.client.eval(), [x.numpy() for x in held_out.batches()], bundle.tables)
    try:
        int8_bits = [device.encode(dataset.pil(i)).bitstream for i in held_out.info["indices"]]
    except EdgeRuntimeError as exc:
        raise CheckError(f"the bundle's edge client failed: {exc}") from None
    float_out = serve_bitstreams(float_bits, bundle.tables, server, num_tasks)
    int8_out = serve_bitstreams(int8_bits, bundle.tables, server, num_tasks)
    edge = bundle.manifest.edge
    result = {
        "bundle": str(bundle.root),
        "edge": {"target": edge.target, "file": edge.file, "runtime": edge.runtime},
        "split": split,
        **compare(float_out, int8_out, labels, bundle.task_names, max_drop),
    }
    atomic_write_json(bundle.root / "int8_check.json", result)
    return result
