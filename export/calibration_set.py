"""Choosing the calibration set and the held-out check set from the training data pipeline.

The calibration set is drawn from one split (``train`` by default, never the split the accuracy check
uses) and balanced over tasks: indices are visited in a seeded random order and an image is taken while
any task it shows is still below its quota ``ceil(n / T)``. What was chosen (split, seed, indices and how
many images show each task) is stored in the bundle's manifest, so the calibration is reproducible.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch


class CalibrationSourceError(ValueError):
    """The data to calibrate or check on is missing or unusable; the message names it."""


class TaskDataset(Protocol):
    """What ``training.data`` datasets provide: items ``(image, labels, task_vector)``."""

    tasks: Sequence[Any]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@dataclass
class SampleSet:
    """Images ``(N, 3, H, W)``, labels ``(N, T)`` (-1: task absent), and a description for the manifest."""

    images: torch.Tensor
    labels: torch.Tensor
    info: dict[str, Any]

    def batches(self) -> list[torch.Tensor]:
        """One ``(1, 3, H, W)`` tensor per image (the edge client's static input shape)."""
        return [x[None] for x in self.images]


def balanced_order(task_vectors: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` positions of ``task_vectors`` (rows in visiting order), keeping a row while any of its
    tasks is below ``ceil(n / T)``, then filling up in the same order if some task has too few rows."""
    count, num_tasks = task_vectors.shape
    quota = math.ceil(n / num_tasks)
    per_task = np.zeros(num_tasks, dtype=np.int64)
    chosen: list[int] = []
    for i in range(count):
        if len(chosen) == n:
            break
        present = task_vectors[i] > 0
        if np.any(per_task[present] < quota):
            chosen.append(i)
            per_task += present
    taken = set(chosen)
    chosen += [i for i in range(count) if i not in taken][: n - len(chosen)]
    return chosen


def select_samples(dataset: TaskDataset, split: str, n: int, seed: int, task_names: Sequence[str], scan_factor: int = 4) -> SampleSet:
    """A task-balanced sample of ``n`` images: a seeded random ``scan_factor * n`` candidates of the split
    are visited in random order (see :func:`balanced_order`)."""
    size = len(dataset)
    if n < 1:
        raise CalibrationSourceError(f"need at least one sample, asked for {n}")
    if size == 0:
        raise CalibrationSourceError(f"the {split} split is empty")
    if n > size:
        raise CalibrationSourceError(f"asked for {n} samples but the {split} split has only {size} images")
    candidates = np.random.default_rng(seed).permutation(size)[: min(size, scan_factor * n)]
    vectors = np.stack([dataset[int(i)][2].numpy() for i in candidates])
    if vectors.shape[1] != len(task_names):
        raise CalibrationSourceError(f"the {split} split has {vectors.shape[1]} tasks, the model {len(task_names)}")
    picked = balanced_order(vectors, n)
    indices = [int(candidates[p]) for p in picked]
    images, labels = zip(*[dataset[i][:2] for i in indices])
    chosen = vectors[picked] > 0
    info = {
        "samples": len(indices),
        "split": split,
        "seed": seed,
        "per_task": {t: int(c) for t, c in zip(task_names, chosen.sum(axis=0))},
        "indices": indices,
    }
    return SampleSet(torch.stack(images).float(), torch.stack(labels).long(), info)


def data_config(meta: dict[str, Any], checkpoint: Path, override: Path | None) -> dict[str, Any]:
    """The config whose ``data`` section to use: ``override``'s (a training config file), else the one
    stored in the checkpoint's metadata. Images are read on demand (no whole-split cache)."""
    from training.config import ConfigError, load_config

    if override is not None:
        try:
            cfg = load_config(override)
        except ConfigError as exc:
            raise CalibrationSourceError(f"data config: {exc}") from None
    else:
        cfg = meta.get("config")
        if not isinstance(cfg, dict) or "data" not in cfg:
            raise CalibrationSourceError(
                f"checkpoint {checkpoint} does not record its training config; pass --data-config CONFIG.yaml to say which data to use"
            )
    cfg = copy.deepcopy(cfg)
    cfg["data"]["cache"] = False
    return cfg


def load_split(cfg: dict[str, Any], split: str, task_names: Sequence[str]) -> TaskDataset:
    """One split of the configured data, checked against the model's tasks."""
    from training.data import DatasetError, build_datasets

    if split not in ("train", "val", "test"):
        raise CalibrationSourceError(f"unknown data split {split!r}; expected train, val or test")
    try:
        train, val, test, tasks, _ = build_datasets(cfg, splits=(split,))
    except (DatasetError, OSError) as exc:
        raise CalibrationSourceError(f"data source: {exc}") from None
    names = [t.name for t in tasks]
    if names != list(task_names):
        raise CalibrationSourceError(f"the data has tasks {names}, the model has {list(task_names)}")
    return {"train": train, "val": val, "test": test}[split]
