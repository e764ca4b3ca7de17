"""Input-compression baselines: JPEG / WebP at quality q, decoded, classified by the full teacher.

The image is first resized to the model's input size (what the server would feed the teacher anyway, so
the baseline never pays for pixels the model does not see), compressed by Pillow with its strongest
settings, and decoded again; the bytes are ``len()`` of the compressed file. The teacher answers every
task for every image (it has no task detector); accuracy is :func:`training.metrics.task_accuracy`, as in
``training.evaluate``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from benchmarks.image_codecs import compress, decode
from training.data import Normalizer
from training.metrics import mean_task_accuracy, task_accuracy

DEFAULT_QUALITIES = (1, 2, 3, 5, 10, 20, 30, 50, 70, 90, 95)
"""Dense at the low end, where the equal-accuracy comparison usually lands."""


def _timed_decode(data: bytes) -> tuple[Image.Image, float]:
    start = time.perf_counter()
    img = decode(data)
    return img, (time.perf_counter() - start) * 1000.0


class TeacherClassifier:
    """The full teacher on batches of PIL images, preprocessed exactly as the checkpoint says."""

    def __init__(self, teacher: nn.Module, preprocessing: dict[str, Any], batch_size: int = 256) -> None:
        self.teacher = teacher.eval()
        self.normalizer = Normalizer(preprocessing)
        self.batch_size = batch_size

    @torch.no_grad()
    def predict(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Top-1 label index per task, ``(N, T)``."""
        preds = []
        for start in range(0, len(images), self.batch_size):
            chunk = np.stack([self.normalizer.uint8_array(img) for img in images[start : start + self.batch_size]])
            x = self.normalizer.from_uint8(torch.from_numpy(chunk).permute(0, 3, 1, 2))
            preds.append(torch.stack([logits.argmax(1) for logits in self.teacher(x)], dim=1).numpy())
        return np.concatenate(preds)

    @torch.no_grad()
    def time_single(self, images: Sequence[Image.Image], warmup: int = 5) -> dict[str, float]:
        """Median ms per image at batch size 1: ``preprocess`` (resize + normalise) and ``forward``."""
        pre, fwd = [], []
        for i, img in enumerate(images):
            t0 = time.perf_counter()
            x = self.normalizer(img)[None]
            t1 = time.perf_counter()
            self.teacher(x)
            t2 = time.perf_counter()
            if i >= warmup:
                pre.append((t1 - t0) * 1000.0)
                fwd.append((t2 - t1) * 1000.0)
        if not fwd:
            raise ValueError(f"need more than {warmup} images to time the teacher")
        return {"preprocess": float(np.median(pre)), "forward": float(np.median(fwd))}


def codec_curve(
    fmt: str,
    qualities: Sequence[int],
    images: Sequence[Image.Image],
    labels: np.ndarray,
    classifier: TeacherClassifier,
    task_names: Sequence[str],
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Rate-accuracy points ``{quality, bytes_per_image, task_accuracy, mean_task_accuracy, encode_ms,
    decode_ms}`` for one format; ``encode_ms`` is the median of resizing + encoding one image,
    ``decode_ms`` the median decoding time. Every number is measured on ``images``."""
    resized, resize_ms = [], []
    for img in images:
        start = time.perf_counter()
        resized.append(classifier.normalizer.resize(img))
        resize_ms.append((time.perf_counter() - start) * 1000.0)
    everything = np.ones(labels.shape, dtype=bool)
    points = []
    for q in qualities:
        coded = [compress(img, fmt, q) for img in resized]
        decoded, decode_ms = zip(*(_timed_decode(c.data) for c in coded))
        acc = task_accuracy(classifier.predict(decoded), labels, everything, task_names)
        point = {
            "quality": int(q),
            "bytes_per_image": float(np.mean([len(c.data) for c in coded])),
            "task_accuracy": acc,
            "mean_task_accuracy": mean_task_accuracy(acc),
            "encode_ms": float(np.median([r + c.encode_ms for r, c in zip(resize_ms, coded)])),
            "decode_ms": float(np.median(decode_ms)),
        }
        log(f"{fmt} q{q}: {point['bytes_per_image']:.0f} bytes, mean task accuracy {point['mean_task_accuracy']:.3f}")
        points.append(point)
    return points


def equal_accuracy(mantis_bytes: float, mantis_accuracy: float, curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The smallest-bytes point of ``curve`` whose mean task accuracy reaches ``mantis_accuracy``.

    ``ratio`` is its bytes per image over MANTiS's. When no point reaches it, ``reached`` is False and the
    ratio is taken at the most accurate point (what the baseline would need is more than that).
    """
    points = sorted(curve, key=lambda p: p["bytes_per_image"])
    reaching = [p for p in points if p["mean_task_accuracy"] >= mantis_accuracy]
    if reaching:
        p, reached = reaching[0], True
    else:
        p, reached = max(points, key=lambda q: (q["mean_task_accuracy"], -q["bytes_per_image"])), False
    return {
        "quality": p["quality"],
        "bytes_per_image": p["bytes_per_image"],
        "mean_task_accuracy": p["mean_task_accuracy"],
        "reached": reached,
        "ratio": p["bytes_per_image"] / mantis_bytes,
    }
