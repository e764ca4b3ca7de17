"""WebDataset tar shards as a data source, and the converter from a folder tree into shards.

A shard is a plain tar file in the WebDataset layout: each sample is a group of members sharing a key,
here ``<key>.<ext>`` (the image file's bytes as they were, ``ext`` one of jpg, jpeg, png, ...) and
``<key>.cls`` (the class name, UTF-8). Classes are grouped into tasks by the same task map as a folder
tree (``training/data/folder.py``), so ``convert`` turns ``ROOT/{train,val[,test]}/<class>/<image>``
plus ``tasks.yaml`` into ``OUT/{split}-000000.tar ...`` without changing what a model trains on::

    uv run python -m training.data.shards --root /data/subgroups --task-map tasks.yaml --out /data/shards

A config then names the shards of each split (``data.kind: webdataset``, ``data.webdataset.train`` ...)
as a local path, a glob (``/data/shards/train-*.tar``), a brace pattern (``train-{000000..000009}.tar``)
or any URL WebDataset opens (``https://...``, ``pipe:...``). The training loop draws batches in a
deterministic order that a resumed run can reproduce, so it needs random access: the shards are read once,
in order, and the samples' encoded image bytes are kept in memory (decoded per access, or once into the
``data.cache``).
"""

from __future__ import annotations

import argparse
import glob
import io
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from braceexpand import braceexpand
from PIL import Image, ImageOps, UnidentifiedImageError

from codec.files import atomic_write, directory_kept_on_success
from training.data.common import DatasetError, Normalizer
from training.data.folder import IMAGE_EXTENSIONS, FolderMultiTask, TaskMap, folder_splits, load_task_map

_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def expand_urls(pattern: str) -> list[str]:
    """Shard URLs of a pattern: braces expanded, local globs matched (sorted); local files must exist."""
    urls: list[str] = []
    for part in braceexpand(pattern):
        if "://" in part or part.startswith("pipe:"):
            urls.append(part)
        elif glob.has_magic(part):
            matched = sorted(glob.glob(part))
            if not matched:
                raise DatasetError(f"shards {pattern}: no file matches {part}")
            urls += matched
        elif not Path(part).is_file():
            raise DatasetError(f"shards {pattern}: no such file {part}")
        else:
            urls.append(part)
    return urls


class ShardMultiTask:
    """Raw source over the samples of WebDataset shards whose class a task map names."""

    def __init__(self, pattern: str, task_map: TaskMap, normalizer: Normalizer) -> None:
        import webdataset as wds

        self.tasks = list(task_map.tasks)
        self.normalizer = normalizer
        targets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for c in task_map.classes:
            labels = np.full(len(self.tasks), -1, dtype=np.int64)
            vector = np.zeros(len(self.tasks), dtype=np.float32)
            for t, task in enumerate(task_map.tasks):
                if c in task.labels:
                    labels[t], vector[t] = task.labels.index(c), 1.0
            targets[c] = (labels, vector)
        self.samples: list[tuple[str, bytes, str]] = []  # (where, encoded image, class)
        seen: set[str] = set()
        urls = expand_urls(pattern)
        try:
            for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
                where = f"{sample.get('__url__', pattern)}:{sample['__key__']}"
                if "cls" not in sample:
                    raise DatasetError(f"shard sample {where}: no .cls member (the class name)")
                image = next((sample[e] for e in _EXTS if e in sample), None)
                if image is None:
                    raise DatasetError(f"shard sample {where}: no image member (looked for {', '.join(_EXTS)})")
                cls = sample["cls"].decode("utf-8").strip()
                if cls in targets:
                    self.samples.append((where, image, cls))
                    seen.add(cls)
        except DatasetError:
            raise
        except Exception as exc:  # webdataset and tarfile raise many kinds; name the shards either way
            raise DatasetError(f"shards {pattern}: unreadable ({type(exc).__name__}: {exc})") from None
        missing = [c for c in task_map.classes if c not in seen]
        if missing:
            raise DatasetError(f"shards {pattern}: no samples of classes {missing} (named by task map {task_map.path})")
        self._targets = targets

    def __len__(self) -> int:
        return len(self.samples)

    def pil(self, index: int) -> Image.Image:
        where, data, _ = self.samples[index]
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return ImageOps.exif_transpose(img).convert("RGB")  # upright, as a folder source reads it
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetError(f"image {where}: unreadable ({exc})") from None

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels, vector = self._targets[self.samples[index][2]]
        return self.normalizer.uint8_array(self.pil(index)), labels.copy(), vector.copy()


def convert(root: str | Path, task_map_path: str | Path, out: str | Path, max_per_shard: int = 10000) -> dict[str, list[str]]:
    """Write the splits of a folder tree as shards ``OUT/<split>-NNNNNN.tar``; returns the files per split.

    Only the classes the task map names are written, images as their original bytes, in the order a
    folder source lists them. Every shard is written atomically.
    """
    task_map = load_task_map(task_map_path)
    splits = folder_splits(root)
    with directory_kept_on_success(out) as out_dir:  # a failed conversion leaves no empty folder
        return _write_shards(splits, task_map, out_dir, max_per_shard)


def _write_shards(splits: dict[str, Path], task_map: TaskMap, out: Path, max_per_shard: int) -> dict[str, list[str]]:
    import webdataset as wds

    if splits["test"] == splits["val"]:
        del splits["test"]
    written: dict[str, list[str]] = {}
    listing = Normalizer({"input_size": [1, 1], "mean": [0, 0, 0], "std": [1, 1, 1]})  # only lists, never decodes
    for split, split_dir in splits.items():
        paths = [path for path, _, _ in FolderMultiTask(split_dir, task_map, listing).samples]
        names = []
        for k, first in enumerate(range(0, len(paths), max_per_shard)):
            chunk = paths[first : first + max_per_shard]

            def write(tmp: str, chunk: list[Path] = chunk, first: int = first) -> None:
                with wds.TarWriter(tmp) as sink:
                    for i, path in enumerate(chunk, start=first):
                        sink.write(
                            {
                                "__key__": f"{i:09d}",
                                path.suffix.lower().lstrip("."): path.read_bytes(),
                                "cls": path.parent.name.encode("utf-8"),
                            }
                        )

            final = out / f"{split}-{k:06d}.tar"
            atomic_write(final, write)
            names.append(str(final))
        written[split] = names
    return written


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.data.shards", description="Convert an ImageFolder tree + task map into WebDataset shards"
    )
    p.add_argument("--root", required=True, help="ROOT/{train,val[,test]}/<class>/<image>")
    p.add_argument("--task-map", required=True, help="the tasks.yaml grouping classes into tasks")
    p.add_argument("--out", required=True, help="output directory for <split>-NNNNNN.tar")
    p.add_argument("--max-per-shard", type=int, default=10000, help="samples per shard (default 10000)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        written = convert(args.root, args.task_map, args.out, args.max_per_shard)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, files in written.items():
        print(f"{split}: {len(files)} shards, {files[0]} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
