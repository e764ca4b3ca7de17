"""Datasets: the built-in procedural multi-task data, ImageFolder trees with a task map, and WebDataset shards.

Items are ``(image, labels, task_vector)``: the normalised float image, a LongTensor with one label
per task (-1 where the task does not apply) and the multi-hot FloatTensor of the tasks that apply.
"""

from __future__ import annotations

from typing import Any

import torch

from training.data.common import DatasetError, MultiTaskDataset, Normalizer, TaskSpec, preprocessing_meta
from training.data.folder import FolderMultiTask, TaskMap, folder_splits, load_task_map
from training.data.photos import SAMPLE_PHOTOS, PhotoCrops, load_photo, photo_items
from training.data.synthetic import SyntheticMultiTask

__all__ = [
    "DatasetError",
    "FolderMultiTask",
    "MultiTaskDataset",
    "Normalizer",
    "SyntheticMultiTask",
    "TaskMap",
    "TaskSpec",
    "build_datasets",
    "load_task_map",
    "preprocessing_meta",
    "task_map_path",
    "teacher_class_indices",
]


def task_map_path(cfg: dict[str, Any]) -> str:
    """The task map of a folder or webdataset config."""
    data = cfg["data"]
    if data["kind"] not in ("folder", "webdataset"):
        raise DatasetError(f"data.kind {data['kind']!r} has no task map")
    return data[data["kind"]]["task_map"]


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in logit order (from torchvision's weights metadata; no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def teacher_class_indices(cfg: dict[str, Any], tasks: list[TaskSpec]) -> list[list[int]]:
    """Per task, the teacher logit of each class: from the task map, or (photos) every class of the teacher."""
    if cfg["data"]["kind"] == "photos":
        return [list(range(len(t.labels))) for t in tasks]
    return load_task_map(task_map_path(cfg)).teacher_indices(cfg["teacher"]["kind"])


def _teacher_labeler(cfg: dict[str, Any], tasks: list[TaskSpec]):
    """The configured pretrained teacher's top-1 class, as the labels of unlabelled photos."""
    from training.models import create_model

    t = cfg["teacher"]
    size = cfg["data"]["image_size"]
    teacher = create_model(
        f"teacher_{t['kind']}",
        arch=t["arch"],
        distill_layer=t["distill_layer"],
        task_class_indices=teacher_class_indices(cfg, tasks),
        input_size=(size, size),
        weights=t["weights"],
    ).eval()

    def top1(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return teacher(x)[0].argmax(1)

    return top1


def build_datasets(
    cfg: dict[str, Any], splits: tuple[str, ...] = ("train", "val", "test")
) -> tuple[MultiTaskDataset | None, MultiTaskDataset | None, MultiTaskDataset | None, list[TaskSpec], dict[str, Any]]:
    """``(train, val, test, tasks, preprocessing)`` for a validated config; splits not asked for are None."""
    data = cfg["data"]
    size = data["image_size"]
    preprocessing = preprocessing_meta((size, size), data["mean"], data["std"])
    if data["kind"] == "synthetic":
        syn = data["synthetic"]
        sources = {
            split: SyntheticMultiTask(syn[f"{split}_size"], size, cfg["seed"], split, syn["tasks"], syn["two_task_fraction"])
            for split in splits
        }
        tasks = SyntheticMultiTask(1, size, cfg["seed"], "train", syn["tasks"], syn["two_task_fraction"]).tasks
    elif data["kind"] == "folder":
        task_map = load_task_map(data["folder"]["task_map"])
        dirs = folder_splits(data["folder"]["root"])
        normalizer = Normalizer(preprocessing)
        sources = {split: FolderMultiTask(dirs[split], task_map, normalizer) for split in splits}
        tasks = list(task_map.tasks)
    elif data["kind"] == "photos":
        tasks = [TaskSpec("imagenet", imagenet_categories())]
        photos = {name: load_photo(name) for name in SAMPLE_PHOTOS}
        labeler = _teacher_labeler(cfg, tasks)
        normalizer = Normalizer(preprocessing)
        sources = {
            split: PhotoCrops(photo_items(split, data["photos"], cfg["seed"], photos), photos, tasks[0], normalizer, labeler)
            for split in splits
        }
    else:
        shards = data["webdataset"]
        task_map = load_task_map(shards["task_map"])
        normalizer = Normalizer(preprocessing)
        patterns = {"train": shards["train"], "val": shards["val"], "test": shards["test"] or shards["val"]}
        # imported here, not at the top: ``python -m training.data.shards`` runs that module as __main__
        # after importing this package, which must not have imported it already
        from training.data.shards import ShardMultiTask

        sources = {split: ShardMultiTask(patterns[split], task_map, normalizer) for split in splits}
        tasks = list(task_map.tasks)
    out = {split: MultiTaskDataset(source, preprocessing, cache=data["cache"], desc=split) for split, source in sources.items()}
    return out.get("train"), out.get("val"), out.get("test"), tasks, preprocessing
