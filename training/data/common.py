"""Pieces shared by the dataset kinds: preprocessing, the item format, an in-memory cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from codec.manifest import Preprocessing


class DatasetError(ValueError):
    """A dataset folder, image or task map cannot be used; the message names the file."""


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: its name and label names (label ``i`` is ``labels[i]``)."""

    name: str
    labels: tuple[str, ...]

    def to_meta(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels)}


def preprocessing_meta(input_size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """The preprocessing description stored in every checkpoint, in the bundle manifest's schema
    (:class:`codec.manifest.Preprocessing`): PIL RGB image -> resize to ``input_size`` (H, W; bilinear) ->
    float in [0, 1] -> (x - mean) / std, NCHW."""
    spec = Preprocessing(
        input_size=(int(input_size[0]), int(input_size[1])),
        mean=tuple(float(m) for m in mean),  # type: ignore[arg-type]
        std=tuple(float(s) for s in std),  # type: ignore[arg-type]
    )
    return spec.to_dict()


class Normalizer:
    """uint8 HWC / PIL RGB -> normalised float CHW tensor, exactly as the preprocessing metadata says."""

    def __init__(self, preprocessing: dict[str, Any]) -> None:
        self.size = tuple(preprocessing["input_size"])
        self.mean = torch.tensor(preprocessing["mean"], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(preprocessing["std"], dtype=torch.float32)[:, None, None]

    def resize(self, image: Image.Image) -> Image.Image:
        image = image.convert("RGB")
        h, w = self.size
        if image.size != (w, h):
            image = image.resize((w, h), Image.BILINEAR)
        return image

    def uint8_array(self, image: Image.Image) -> np.ndarray:
        """Resized RGB image as a uint8 HxWx3 array."""
        return np.array(self.resize(image), dtype=np.uint8)

    def from_uint8(self, chw: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> normalised float; the same arithmetic as ``to_tensor`` + ``normalize``."""
        return chw.float().div(255).sub(self.mean).div(self.std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.from_uint8(torch.from_numpy(self.uint8_array(image)).permute(2, 0, 1).contiguous())


class RawSource(Protocol):
    """What the multi-task datasets expose: raw uint8 images plus targets."""

    tasks: list[TaskSpec]

    def __len__(self) -> int: ...

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def pil(self, index: int) -> Image.Image: ...


class MultiTaskDataset(Dataset):
    """Items ``(image, labels, task_vector)``: the normalised image, one label per task (-1 where the task
    does not apply) and the multi-hot vector of the tasks that apply.

    ``cache=True`` renders / decodes every image once into memory (uint8), which is what makes CPU training
    on the procedural data fast; ``pil(index)`` always gives the raw RGB image for the runtime demos.
    """

    def __init__(self, source: RawSource, preprocessing: dict[str, Any], cache: bool = False, desc: str = "data") -> None:
        self.source = source
        self.tasks = source.tasks
        self.preprocessing = preprocessing
        self.normalizer = Normalizer(preprocessing)
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._vectors: torch.Tensor | None = None
        if cache:
            self._fill_cache(desc)

    def _fill_cache(self, desc: str) -> None:
        n = len(self.source)
        h, w = self.preprocessing["input_size"]
        images = torch.empty((n, 3, h, w), dtype=torch.uint8)
        labels = torch.empty((n, len(self.tasks)), dtype=torch.long)
        vectors = torch.empty((n, len(self.tasks)), dtype=torch.float32)
        for i in tqdm(range(n), desc=f"rendering {desc}", leave=False, disable=None):
            img, lab, vec = self.source.raw(i)
            images[i] = torch.from_numpy(img).permute(2, 0, 1)
            labels[i] = torch.from_numpy(lab)
            vectors[i] = torch.from_numpy(vec)
        self._images, self._labels, self._vectors = images, labels, vectors

    def __len__(self) -> int:
        return len(self.source)

    def pil(self, index: int) -> Image.Image:
        """The raw RGB image of item ``index`` (what a camera would hand the edge runtime)."""
        return self.source.pil(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._images is not None:
            return self.normalizer.from_uint8(self._images[index]), self._labels[index], self._vectors[index]
        img, lab, vec = self.source.raw(index)
        x = self.normalizer.from_uint8(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        return x, torch.from_numpy(lab).long(), torch.from_numpy(vec).float()
