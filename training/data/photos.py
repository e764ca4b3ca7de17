"""Natural photographs that install offline: the sample photos of scikit-image and scikit-learn, labelled by a
pretrained teacher (no labelled natural-image data set ships in a package).

``SAMPLE_PHOTOS`` names 20 photographs: 11 colour ones (``astronaut``, ``chelsea`` (a cat), ``coffee``,
``rocket``, ``motorcycle_left``/``motorcycle_right`` (one stereo pair: the same scene), ``hubble_deep_field``,
``immunohistochemistry`` (a microscope slide), ``retina`` (a fundus photograph), scikit-learn's ``china``
and ``flower``) and 9 greyscale ones, given three equal channels (``camera``, ``coins``, ``moon``, ``page``,
``text``, ``brick``, ``grass``, ``gravel``, ``clock``). Left out: drawings and renderings (``logo``,
``colorwheel``, ``horse``, ``checkerboard``, ...), ``cat`` (the same file as ``chelsea``), and the files that
scikit-image downloads on first use.

Whole photos are held out for testing (``data.photos.test``); the stereo pair counts as one photo and
must stay on one side. Every image is ``image_size`` square, RGB uint8:

* training (``train``): ``train_crops`` random resized crops of every other photo, drawn once from the
  seed: area a uniform fraction in ``crop_scale`` of the photo's, aspect ratio log-uniform in ``crop_ratio``,
  position uniform (torchvision's ``RandomResizedCrop`` rule: 10 tries, then the largest central crop
  within the ratio range), then mirrored with probability 1/2;
* testing (``val`` and ``test``, the same images): every held-out photo in the 14 fixed views of
  :data:`TEST_VIEWS` (the whole photo squashed, the central square, the central 80 % square, the four
  corner squares of 70 % of the shorter side; each as is and mirrored).

Labels: one task, ``imagenet``, over the teacher's 1000 classes; an image's label is the teacher's top-1
class on the uncompressed image, so accuracy on this data is top-1 agreement with the teacher (fidelity).
``KNOWN_CLASSES`` lists the ImageNet classes that fit what a photo shows, where one does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from training.data.common import DatasetError, Normalizer, TaskSpec


def _skimage(name: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[index] if index is not None else image

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


SAMPLE_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle_left": _skimage("stereo_motorcycle", 0),
    "motorcycle_right": _skimage("stereo_motorcycle", 1),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "camera": _skimage("camera"),
    "coins": _skimage("coins"),
    "moon": _skimage("moon"),
    "page": _skimage("page"),
    "text": _skimage("text"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "clock": _skimage("clock"),
}
"""Name -> loader of every usable sample photo (uint8, HxW or HxWx3)."""

SAME_SCENE = (("motorcycle_left", "motorcycle_right"),)
"""Photos of one scene: held out together or not at all."""

KNOWN_CLASSES: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 285),  # tabby, tiger cat, Egyptian cat
    "coffee": (967, 968, 504),  # espresso, cup, coffee mug
    "rocket": (657, 744, 812),  # missile, projectile, space shuttle
    "motorcycle_left": (665, 670),  # moped, motor scooter
    "motorcycle_right": (665, 670),
    "clock": (409, 892),  # analog clock, wall clock
    "flower": (985,),  # daisy
    "camera": (759, 872),  # reflex camera, tripod
}
"""ImageNet-1k class indices that fit what the photo shows (any of them counts as right)."""

TEST_VIEWS: tuple[str, ...] = tuple(
    f"{crop}{flip}"
    for crop in ("full", "center", "center80", "top_left70", "top_right70", "bottom_left70", "bottom_right70")
    for flip in ("", "_flip")
)
"""The views every held-out photo is tested in."""


def load_photo(name: str) -> Image.Image:
    """A sample photo as an RGB PIL image (greyscale ones get three equal channels)."""
    if name not in SAMPLE_PHOTOS:
        raise DatasetError(f"unknown sample photo {name!r}; known: {', '.join(SAMPLE_PHOTOS)}")
    try:
        array = np.asarray(SAMPLE_PHOTOS[name]())
    except (ImportError, OSError, ValueError) as exc:
        raise DatasetError(f"sample photo {name!r}: cannot be loaded ({exc})") from None
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array[:, :, :3]).astype(np.uint8), "RGB")


def view_box(view: str, width: int, height: int) -> tuple[int, int, int, int]:
    """The crop box (left, top, right, bottom) of a test view (without its ``_flip`` suffix)."""
    side = min(width, height)
    if view == "full":
        return 0, 0, width, height
    fractions = {"center": 1.0, "center80": 0.8}
    if view in fractions:
        s = round(side * fractions[view])
        left, top = (width - s) // 2, (height - s) // 2
        return left, top, left + s, top + s
    corners = {"top_left70": (0, 0), "top_right70": (1, 0), "bottom_left70": (0, 1), "bottom_right70": (1, 1)}
    if view not in corners:
        raise DatasetError(f"unknown test view {view!r}; known: {', '.join(TEST_VIEWS)}")
    s = round(side * 0.7)
    fx, fy = corners[view]
    left, top = fx * (width - s), fy * (height - s)
    return left, top, left + s, top + s


def random_resized_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop`` box: 10 tries at a random area and log-uniform aspect ratio, then
    the largest central crop within the ratio range."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


@dataclass(frozen=True)
class PhotoItem:
    """One image: a box of a photo, resized, maybe mirrored; ``view`` names it."""

    photo: str
    box: tuple[int, int, int, int]
    flip: bool
    view: str


def check_split(test: Sequence[str]) -> None:
    """``DatasetError`` for an unknown held-out photo, a repeated one, a scene split across the sides, or
    no photo left for training."""
    for name in test:
        if name not in SAMPLE_PHOTOS:
            raise DatasetError(f"data.photos.test: unknown sample photo {name!r}; known: {', '.join(SAMPLE_PHOTOS)}")
    if len(set(test)) != len(test):
        raise DatasetError(f"data.photos.test names a photo twice: {list(test)}")
    for scene in SAME_SCENE:
        held = [p for p in scene if p in test]
        if held and len(held) != len(scene):
            raise DatasetError(f"data.photos.test: {', '.join(scene)} show one scene; hold out all of them or none")
    if len(test) == len(SAMPLE_PHOTOS):
        raise DatasetError("data.photos.test holds out every photo; none is left for training")


def photo_items(split: str, photos_cfg: dict[str, Any], seed: int, photos: dict[str, Image.Image]) -> list[PhotoItem]:
    """The images of a split (see the module docstring), in a fixed order."""
    test = list(photos_cfg["test"])
    check_split(test)
    if split in ("val", "test"):
        items = []
        for name in test:
            w, h = photos[name].size
            items += [PhotoItem(name, view_box(v.removesuffix("_flip"), w, h), v.endswith("_flip"), v) for v in TEST_VIEWS]
        return items
    if split != "train":
        raise DatasetError(f"unknown split {split!r}")
    items = []
    for p, name in enumerate(n for n in SAMPLE_PHOTOS if n not in test):
        rng = np.random.default_rng([seed, p])
        w, h = photos[name].size
        for c in range(photos_cfg["train_crops"]):
            box = random_resized_box(w, h, photos_cfg["crop_scale"], photos_cfg["crop_ratio"], rng)
            flip = bool(rng.random() < 0.5)
            items.append(PhotoItem(name, box, flip, f"crop{c}{'_flip' if flip else ''}"))
    return items


Labeler = Callable[[torch.Tensor], torch.Tensor]
"""Normalised images (N, 3, H, W) -> the teacher's top-1 class per image."""


class PhotoCrops:
    """Raw source over the crops of one split, labelled by the teacher's top-1 class in chunks as they are read."""

    CHUNK = 32

    def __init__(
        self, items: list[PhotoItem], photos: dict[str, Image.Image], task: TaskSpec, normalizer: Normalizer, labeler: Labeler
    ) -> None:
        self.items = items
        self.photos = photos
        self.tasks = [task]
        self.normalizer = normalizer
        self.labeler = labeler
        self._labels = np.full(len(items), -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def pil(self, index: int) -> Image.Image:
        item = self.items[index]
        image = self.normalizer.resize(self.photos[item.photo].crop(item.box))
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if item.flip else image

    def label(self, index: int) -> int:
        """The teacher's top-1 class on the uncompressed image ``index``."""
        if self._labels[index] < 0:
            start = index - index % self.CHUNK
            chunk = range(start, min(start + self.CHUNK, len(self.items)))
            batch = torch.stack([self.normalizer(self.pil(i)) for i in chunk])
            self._labels[start : chunk.stop] = self.labeler(batch).numpy()
        return int(self._labels[index])

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = np.array(self.pil(index), dtype=np.uint8)
        return image, np.array([self.label(index)], dtype=np.int64), np.ones(1, dtype=np.float32)
