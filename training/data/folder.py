"""Real images: ``ImageFolder``-style trees plus a YAML file that groups classes into tasks.

Layout: ``ROOT/<split>/<class>/<image>`` for the splits ``train``, ``val`` and (optionally) ``test``.
The task map (the ImageNet-subgroups use case) looks like::

    tasks:
      - name: dogs
        classes: [n02085620, n02085782]      # class folder names; label i is classes[i]
      - name: birds
        classes: [n01530575, n01531178]
    teacher_index:                           # the class's index in the teacher's logits: required for
      n02085620: 151                         # a torchvision or timm teacher, unused by the cnn teacher
      ...

A class may belong to several tasks (its images are then relevant to all of them); class folders that
no task names are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np
import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

from runtime_edge.preprocess import to_rgb
from training.data.common import DatasetError, Normalizer, TaskSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


@dataclass(frozen=True)
class TaskMap:
    """Tasks over folder classes, read from a YAML file."""

    path: Path
    tasks: tuple[TaskSpec, ...]
    teacher_index: dict[str, int] | None

    @property
    def classes(self) -> list[str]:
        seen: dict[str, None] = {}
        for task in self.tasks:
            seen.update(dict.fromkeys(task.labels))
        return list(seen)

    def teacher_indices(self, teacher_kind: str) -> list[list[int]]:
        """Per task, the logit index of each of its classes in a ``teacher_kind`` (torchvision or timm) teacher."""
        if self.teacher_index is None:
            raise DatasetError(
                f"task map {self.path}: teacher.kind {teacher_kind!r} needs 'teacher_index' (each class's index in the "
                "teacher's logits, e.g. 'teacher_index: {cat: 281, dog: 207}'); only the cnn teacher does without it"
            )
        missing = [c for c in self.classes if c not in self.teacher_index]
        if missing:
            raise DatasetError(
                f"task map {self.path}: 'teacher_index' lacks classes {missing} (teacher.kind {teacher_kind!r} needs every class)"
            )
        return [[self.teacher_index[c] for c in task.labels] for task in self.tasks]


def load_task_map(path: str | Path) -> TaskMap:
    """Read and validate a task map YAML; errors name the file and the offending entry."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"task map {path}: no such file")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DatasetError(f"task map {path}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list) or not doc["tasks"]:
        raise DatasetError(f"task map {path}: expected a mapping with a non-empty 'tasks' list")
    unknown = set(doc) - {"tasks", "teacher_index"}
    if unknown:
        raise DatasetError(f"task map {path}: unknown keys {sorted(unknown)}")
    tasks = []
    for i, entry in enumerate(doc["tasks"]):
        if not isinstance(entry, dict) or set(entry) != {"name", "classes"}:
            raise DatasetError(f"task map {path}: tasks[{i}] must have exactly the keys 'name' and 'classes'")
        name, classes = entry["name"], entry["classes"]
        if not isinstance(name, str) or not name:
            raise DatasetError(f"task map {path}: tasks[{i}].name must be a non-empty string")
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
            raise DatasetError(f"task map {path}: tasks[{i}] ({name}) needs a list of at least 2 class names")
        if len(set(classes)) != len(classes):
            raise DatasetError(f"task map {path}: tasks[{i}] ({name}) lists a class twice")
        tasks.append(TaskSpec(name, tuple(classes)))
    if len({t.name for t in tasks}) != len(tasks):
        raise DatasetError(f"task map {path}: task names must be distinct")
    index = doc.get("teacher_index")
    if index is not None:
        if not isinstance(index, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in index.items()
        ):
            raise DatasetError(f"task map {path}: teacher_index must map class names to non-negative integers")
    return TaskMap(path, tuple(tasks), index)


class FolderMultiTask:
    """Raw source over ``split_dir/<class>/<image>`` for the classes of a task map."""

    def __init__(self, split_dir: str | Path, task_map: TaskMap, normalizer: Normalizer) -> None:
        split_dir = Path(split_dir)
        if not split_dir.is_dir():
            raise DatasetError(f"image folder {split_dir}: no such directory")
        self.tasks = list(task_map.tasks)
        self.normalizer = normalizer
        memberships = {c: [] for c in task_map.classes}
        for t, task in enumerate(task_map.tasks):
            for label, c in enumerate(task.labels):
                memberships[c].append((t, label))
        self.samples: list[tuple[Path, np.ndarray, np.ndarray]] = []
        for c, member in memberships.items():
            class_dir = split_dir / c
            if not class_dir.is_dir():
                raise DatasetError(f"image folder {class_dir}: missing (class {c!r} of task map {task_map.path})")
            files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DatasetError(f"image folder {class_dir}: no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
            labels = np.full(len(self.tasks), -1, dtype=np.int64)
            vector = np.zeros(len(self.tasks), dtype=np.float32)
            for t, label in member:
                labels[t], vector[t] = label, 1.0
            self.samples += [(f, labels, vector) for f in files]

    def __len__(self) -> int:
        return len(self.samples)

    def pil(self, index: int) -> Image.Image:
        path = self.samples[index][0]
        try:
            with Image.open(path) as img:
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))  # upright, as the edge runtime reads it
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetError(f"image {path}: unreadable ({exc})") from None

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, labels, vector = self.samples[index]
        return self.normalizer.uint8_array(self.pil(index)), labels.copy(), vector.copy()


def folder_splits(root: str | Path) -> dict[str, Path]:
    """The split directories of a tree: train and val are required, test falls back to val."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root}: no such directory")
    splits = {}
    for name in ("train", "val"):
        if not (root / name).is_dir():
            raise DatasetError(f"image folder {root}: needs a {name!r} subfolder (ROOT/{name}/<class>/<image>)")
        splits[name] = root / name
    splits["test"] = root / "test" if (root / "test").is_dir() else root / "val"
    return splits
