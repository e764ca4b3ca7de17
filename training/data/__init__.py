"""Datasets: the built-in procedural multi-task data, ImageFolder trees with a task map, and WebDataset shards.

Items are ``(image, labels, task_vector)``: the normalised float image, a LongTensor with one label
per task (-1 where the task does not apply) and the multi-hot FloatTensor of the tasks that apply.
"""

from __future__ import annotations

from typing import Any

from training.data.common import DatasetError, MultiTaskDataset, Normalizer, TaskSpec, preprocessing_meta
from training.data.folder import FolderMultiTask, TaskMap, folder_splits, load_task_map
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
]


def task_map_path(cfg: dict[str, Any]) -> str:
    """The task map of a folder or webdataset config."""
    data = cfg["data"]
    if data["kind"] not in ("folder", "webdataset"):
        raise DatasetError(f"data.kind {data['kind']!r} has no task map")
    return data[data["kind"]]["task_map"]


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
            split: SyntheticMultiTask(
                syn[f"{split}_size"], size, cfg["seed"], split, syn["tasks"], syn["two_task_fraction"]
            )
            for split in splits
        }
        tasks = SyntheticMultiTask(1, size, cfg["seed"], "train", syn["tasks"], syn["two_task_fraction"]).tasks
    elif data["kind"] == "folder":
        task_map = load_task_map(data["folder"]["task_map"])
        dirs = folder_splits(data["folder"]["root"])
        normalizer = Normalizer(preprocessing)
        sources = {split: FolderMultiTask(dirs[split], task_map, normalizer) for split in splits}
        tasks = list(task_map.tasks)
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
    out = {
        split: MultiTaskDataset(source, preprocessing, cache=data["cache"], desc=split) for split, source in sources.items()
    }
    return out.get("train"), out.get("val"), out.get("test"), tasks, preprocessing
