"""Evaluation with real entropy coding: every image is encoded to bytes, decoded, and only then classified.

For a Stage 2 model each image's latent and task mask go through the project's bitstream format
(``codec``): the server half sees the decoded latent and runs the tasks the decoded mask names; a task
that applies to the image but is not in the mask counts as a miss. ``bytes_per_image`` is the mean
``len()`` of those bitstreams (header included); ``estimated_bytes_per_image`` is the entropy model's
estimate ``sum(-log2 p(y_hat)) / 8``. ``fixed_bytes_per_image`` is what every bitstream costs whatever it
carries: the header plus the rANS flush floor (``codec.rans.FLUSH_FIXED_BYTES``).
``coding_overhead`` is the rest of the real bytes beyond the estimate, as a fraction of the estimate:
``(bytes - fixed - estimated) / estimated``; it holds the byte alignment of the packed rANS state (0 to 1
byte) and the 16-bit precision of the integer tables. ``coding_overhead_bytes`` gives the same excess in
bytes per image (mean, min, max).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.tables import tables_from_bottleneck
import codec
from codec.rans import FLUSH_FIXED_BYTES
from training.data.common import TaskSpec
from training.metrics import mean_task_accuracy, task_accuracy
from training.models.added_tasks import AddedTaskServer
from training.models.mantis import SplitModel, TaskServer, active_tasks_from_logits


class LatentCoder:
    """Real coding of one image's latent plus its task mask, in the project's bitstream format."""

    def __init__(self, model: SplitModel) -> None:
        model.update(force=False)
        self.tables = tables_from_bottleneck(model.entropy_bottleneck)
        self.header_bytes = codec.HEADER_SIZE
        self.fixed_bytes = codec.HEADER_SIZE + FLUSH_FIXED_BYTES

    def roundtrip(self, y: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Encode and decode a batch image by image: ``(y_hat, decoded masks, coded lengths)``."""
        symbols = codec.quantize(y.detach().float().cpu().numpy(), self.tables)
        out, dec_masks, lengths = [], [], []
        for i in range(symbols.shape[0]):
            bits = sum(1 << t for t in torch.nonzero(masks[i]).flatten().tolist())
            data = codec.encode(symbols[i], bits, self.tables)
            decoded = codec.decode(data, self.tables)
            out.append(torch.from_numpy(codec.dequantize(decoded.symbols, self.tables)))
            dec_masks.append([(decoded.task_mask >> t) & 1 for t in range(masks.shape[1])])
            lengths.append(len(data))
        return torch.stack(out), torch.tensor(dec_masks, dtype=torch.bool), lengths


def _estimated_bits(model: SplitModel, y: torch.Tensor) -> torch.Tensor:
    _, likelihoods = model.entropy_bottleneck(y.float(), training=False)
    return likelihoods.clamp_min(1e-9).log2().neg().flatten(1).sum(1)


class _Tally:
    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        self.tasks = tasks
        self.predictions: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.active: list[np.ndarray] = []
        self.detected = 0
        self.images = 0
        self.values: dict[str, float] = {}
        self.overheads: list[float] = []

    def add(self, name: str, value: float) -> None:
        self.values[name] = self.values.get(name, 0.0) + value

    def classify(self, logits: Sequence[torch.Tensor], labels: torch.Tensor, active: torch.Tensor) -> None:
        self.predictions.append(torch.stack([task_logits.argmax(1).cpu() for task_logits in logits], dim=1).numpy())
        self.labels.append(labels.cpu().numpy())
        self.active.append(active.cpu().numpy())

    def accuracy(self) -> dict[str, float]:
        """:func:`training.metrics.task_accuracy` over every image classified so far."""
        empty = np.zeros((0, len(self.tasks)), dtype=np.int64)
        return task_accuracy(
            *(np.concatenate(parts) if parts else empty for parts in (self.predictions, self.labels, self.active)),
            [task.name for task in self.tasks],
        )


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "min": 0.0, "max": 0.0}
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


@torch.no_grad()
def evaluate(
    model: SplitModel,
    loader: DataLoader,
    tasks: Sequence[TaskSpec],
    *,
    oracle: bool = False,
    teacher: nn.Module | None = None,
    device: torch.device | str = "cpu",
    desc: str = "eval",
) -> dict[str, Any]:
    """Metrics of a Stage 1 or Stage 2 model on held-out data, after a real encode -> decode round trip.

    Stage 2: ``task_accuracy`` (:func:`training.metrics.task_accuracy`: per task, over the images the task
    applies to; a task missing from the decoded mask counts as wrong; a task no image shows is left out),
    ``mean_task_accuracy``, ``task_detection_accuracy`` (share of images
    whose detected task set equals the true one), bytes. ``oracle=True`` feeds the true task vector to
    FiLM and sends the true mask (the Oracle ablation). For a model with server-detected tasks (an
    ``AddedTaskServer``) the mask is the decoded edge mask followed by the server detector's decisions.
    Stage 1 (pass ``teacher``): the teacher's tail classifies the decoded features, with the true task
    relevance; plus ``distill_mse`` to the teacher's features.
    """
    model.eval()
    device = torch.device(device)
    coder = LatentCoder(model)
    h, w = None, None
    server_detects = isinstance(model.server, AddedTaskServer)
    stage2 = server_detects or isinstance(model.server, TaskServer)
    if server_detects and oracle:
        raise ValueError(
            "the oracle evaluation feeds the true task vector to FiLM; a client with server-detected tasks has no FiLM input for them"
        )
    if not stage2 and teacher is None:
        raise ValueError("evaluating a Stage 1 model needs the teacher (its tail classifies the decoded features)")
    tally = _Tally(tasks)
    for x, labels, task_vector in tqdm(loader, desc=desc, leave=False, disable=None):
        x, task_vector = x.to(device), task_vector.to(device)
        h, w = x.shape[-2:]
        y, task_logits = model.client(x, task_vector if oracle else None)
        masks = task_vector.bool() if oracle else active_tasks_from_logits(task_logits)
        y_hat, dec_masks, lengths = coder.roundtrip(y, masks)
        y_hat = y_hat.to(device)
        if server_detects:
            dec_masks = torch.cat([dec_masks, (model.server.detect(y_hat) > 0).cpu()], dim=1)
        tally.images += x.shape[0]
        estimated = _estimated_bits(model, y).cpu() / 8
        tally.add("bytes", float(sum(lengths)))
        tally.add("estimated_bytes", float(estimated.sum()))
        tally.overheads += (torch.tensor(lengths, dtype=torch.float64) - coder.fixed_bytes - estimated.double()).tolist()
        tally.detected += int((dec_masks == task_vector.bool().cpu()).all(1).sum())
        out = model.server(y_hat)
        if stage2:
            tally.classify(out, labels, dec_masks)
        else:
            tally.add("mse", float(F.mse_loss(out, teacher.head(x), reduction="sum")) / out[0].numel())
            tally.classify(teacher.tail(out), labels, torch.ones_like(dec_masks))
    n = max(tally.images, 1)
    acc = tally.accuracy()
    bytes_per_image = tally.values.get("bytes", 0.0) / n
    estimated = tally.values.get("estimated_bytes", 0.0) / n
    metrics: dict[str, Any] = {
        "task_accuracy": acc,
        "mean_task_accuracy": mean_task_accuracy(acc),
        "bytes_per_image": bytes_per_image,
        "header_bytes_per_image": float(coder.header_bytes),
        "payload_bytes_per_image": bytes_per_image - coder.header_bytes,
        "fixed_bytes_per_image": float(coder.fixed_bytes),
        "estimated_bytes_per_image": estimated,
        "coding_overhead": (bytes_per_image - coder.fixed_bytes - estimated) / estimated if estimated else 0.0,
        "coding_overhead_bytes": _spread(tally.overheads),
        "bits_per_pixel": 8 * bytes_per_image / (h * w) if h else 0.0,
        "images": tally.images,
        "bitstream_version": codec.FORMAT_VERSION,
    }
    metrics["task_detection_accuracy"] = tally.detected / n
    if not stage2:
        metrics["distill_mse"] = tally.values.get("mse", 0.0) / n
    return metrics


@torch.no_grad()
def evaluate_teacher(
    teacher: nn.Module, loader: DataLoader, tasks: Sequence[TaskSpec], device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Per-task accuracy of an uncompressed teacher over the images each task applies to."""
    teacher.eval()
    tally = _Tally(tasks)
    for x, labels, _ in tqdm(loader, desc="teacher eval", leave=False, disable=None):
        logits = teacher(x.to(device))
        tally.classify(logits, labels, torch.ones(labels.shape, dtype=torch.bool))
    acc = tally.accuracy()
    return {"task_accuracy": acc, "mean_task_accuracy": mean_task_accuracy(acc)}
