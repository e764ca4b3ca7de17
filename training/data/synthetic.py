"""The built-in multi-task dataset: procedural images, rendered on the fly, deterministic by seed.

Every image shows one or two *cards* on a cluttered background. A card's colour says which task it
belongs to (so a task detector can see which tasks apply) and its content carries that task's label:

* ``shape`` (blue card): which of 8 shapes is drawn (circle, square, triangle, diamond, star, cross,
  hexagon, ring), with random size, position, rotation and colour;
* ``orientation`` (green card): the orientation of a fine sinusoidal grating, 12 classes 15 degrees
  apart, with random period (3 to 5.5 pixels), phase, contrast and +-3 degrees of jitter;
* ``count`` (orange card): how many small dots (1 to 6) are scattered on the card;
* ``texture`` (magenta card): which of 6 textures fills the card (checker, stripes, dots, grid, rings,
  blotches), with random period (4.5 to 7 pixels), rotation, ink and contrast. The initial training leaves
  it out (``data.synthetic.tasks`` defaults to the first three); it is the task that
  ``training/add_task.py`` adds to a deployed model.

The fine detail that separates the classes (stripe direction, dot count, a ring's hole, a star's points)
is exactly what a low-rate bottleneck throws away first, so compression has a visible accuracy cost.
Item ``i`` of a split depends only on ``(seed, split, i)``.

Tasks listed in ``ADDED_TASKS`` draw their randomness from a stream of their own: a config without them
renders exactly the images it rendered before they existed, byte for byte. With one or more of them in
the task list, item ``i`` first asks the added stream whether it shows an added task (with probability
``added / all tasks``): if it does, the whole image (the added card, possibly beside one card of another
task) comes from the added stream; if not, it is the very image the config without the added tasks renders.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from training.data.common import DatasetError, TaskSpec

SPLITS = {"train": 0, "val": 1, "test": 2}

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring")
ORIENTATIONS = tuple(f"{k * 15}deg" for k in range(12))
COUNTS = tuple(str(n) for n in range(1, 7))
TEXTURES = ("checker", "stripes", "dots", "grid", "rings", "blotches")
ADDED_STREAM = 1  # spawn key of the added tasks' random stream


def _coverage(sdf: np.ndarray, pixels_per_unit: float) -> np.ndarray:
    """Anti-aliased coverage of the region ``sdf < 0`` (sdf in card units)."""
    return np.clip(0.5 - sdf * pixels_per_unit, 0.0, 1.0)


def _polygon_sdf(u: np.ndarray, v: np.ndarray, sides: int, apothem: float, phase: float) -> np.ndarray:
    d = np.full(u.shape, -np.inf)
    for k in range(sides):
        a = phase + 2 * math.pi * k / sides
        d = np.maximum(d, u * math.cos(a) + v * math.sin(a) - apothem)
    return d


def _box_sdf(u: np.ndarray, v: np.ndarray, hu: float, hv: float) -> np.ndarray:
    return np.maximum(np.abs(u) - hu, np.abs(v) - hv)


def _shape_sdf(name: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    rho = np.hypot(u, v)
    if name == "circle":
        return rho - r
    if name == "square":
        return _box_sdf(u, v, 0.85 * r, 0.85 * r)
    if name == "triangle":
        return _polygon_sdf(u, v, 3, 0.55 * r, math.pi / 2)
    if name == "diamond":
        return (np.abs(u) + np.abs(v)) - 1.15 * r
    if name == "star":
        theta = np.arctan2(v, u)
        return rho - r * (0.62 + 0.38 * np.cos(5 * theta + math.pi / 2))
    if name == "cross":
        return np.minimum(_box_sdf(u, v, r, 0.32 * r), _box_sdf(u, v, 0.32 * r, r))
    if name == "hexagon":
        return _polygon_sdf(u, v, 6, 0.9 * r, 0.0)
    if name == "ring":
        return np.abs(rho - 0.72 * r) - 0.28 * r
    raise AssertionError(name)


Canvas = np.ndarray  # H x W x 3 float32 in [0, 1]


def _blend(canvas: Canvas, alpha: np.ndarray, color: np.ndarray, ys: slice, xs: slice) -> None:
    region = canvas[ys, xs]
    region += alpha[..., None] * (color[None, None, :] - region)


def _draw_shape(rng: np.random.Generator, canvas: Canvas, box: tuple[int, int, int, int], label: int, scale: float) -> None:
    y0, x0, h, w = box
    half = min(h, w) / 2.0
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32) + 0.5
    cy = y0 + h / 2 + rng.uniform(-0.15, 0.15) * half
    cx = x0 + w / 2 + rng.uniform(-0.15, 0.15) * half
    a = math.radians(rng.uniform(-15, 15))
    du, dv = (xx - cx) / half, (yy - cy) / half
    u = du * math.cos(a) + dv * math.sin(a)
    v = -du * math.sin(a) + dv * math.cos(a)
    r = rng.uniform(0.5, 0.72)
    alpha = _coverage(_shape_sdf(SHAPES[label], u, v, r), half)
    _blend(canvas, alpha, _ink(rng), slice(y0, y0 + h), slice(x0, x0 + w))


def _draw_grating(rng: np.random.Generator, canvas: Canvas, box: tuple[int, int, int, int], label: int, scale: float) -> None:
    y0, x0, h, w = box
    m = max(2, int(round(3 * scale)))
    y0, x0, h, w = y0 + m, x0 + m, h - 2 * m, w - 2 * m
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32) + 0.5
    theta = math.radians(label * 15 + rng.uniform(-3, 3))
    period = rng.uniform(3.2, 5.5) * scale
    # stripes run along theta: the intensity varies along the normal direction
    t = (xx * -math.sin(theta) + yy * math.cos(theta)) * (2 * math.pi / period) + rng.uniform(0, 2 * math.pi)
    alpha = rng.uniform(0.35, 0.9) * (0.5 + 0.5 * np.sin(t))
    _blend(canvas, alpha, _ink(rng), slice(y0, y0 + h), slice(x0, x0 + w))


def _draw_dots(rng: np.random.Generator, canvas: Canvas, box: tuple[int, int, int, int], label: int, scale: float) -> None:
    y0, x0, h, w = box
    count = label + 1
    ink = _ink(rng)
    radius = rng.uniform(1.8, 2.6) * scale
    while True:
        margin = radius + 2 * scale
        centres: list[tuple[float, float]] = []
        for _ in range(400):
            if len(centres) == count:
                break
            cy = rng.uniform(y0 + margin, y0 + h - margin)
            cx = rng.uniform(x0 + margin, x0 + w - margin)
            if all(math.hypot(cy - py, cx - px) > 2 * radius + 3 * scale for py, px in centres):
                centres.append((cy, cx))
        if len(centres) == count:
            break
        radius *= 0.85  # too crowded for this card: shrink the dots and lay them out again
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32) + 0.5
    sdf = np.full(yy.shape, np.inf, dtype=np.float32)
    for cy, cx in centres:
        sdf = np.minimum(sdf, np.hypot(yy - cy, xx - cx) - radius)
    _blend(canvas, _coverage(sdf, 1.0), ink, slice(y0, y0 + h), slice(x0, x0 + w))


def _texture_alpha(name: str, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Coverage in [0, 1] of texture ``name`` at rotated card coordinates ``(u, v)`` in pixels."""
    k = 2 * math.pi / period
    pu, pv = rng.uniform(0, 2 * math.pi, 2)
    if name == "checker":
        return np.clip(0.5 + 1.5 * np.sin(k * u + pu) * np.sin(k * v + pv), 0, 1)
    if name == "stripes":
        return np.clip(0.5 + 2.0 * np.sin(k * u + pu), 0, 1)
    if name == "dots":
        return np.clip(2.0 * (np.cos(k * u + pu) + np.cos(k * v + pv)) - 1.5, 0, 1)
    if name == "grid":
        return np.clip(1.0 - 3.0 * np.minimum(np.abs(np.sin(0.5 * (k * u + pu))), np.abs(np.sin(0.5 * (k * v + pv)))), 0, 1)
    if name == "rings":
        cu, cv = rng.uniform(-0.5, 0.5, 2) * period
        return np.clip(0.5 + 2.0 * np.sin(k * np.hypot(u - cu, v - cv) + pu), 0, 1)
    if name == "blotches":
        cells = rng.standard_normal((int(u.shape[0] / period) + 2, int(u.shape[1] / period) + 2))
        field = np.asarray(Image.fromarray(cells.astype(np.float32), mode="F").resize(u.shape[::-1], Image.BICUBIC))
        return np.clip(0.5 + 2.0 * field, 0, 1)
    raise AssertionError(name)


def _draw_texture(rng: np.random.Generator, canvas: Canvas, box: tuple[int, int, int, int], label: int, scale: float) -> None:
    y0, x0, h, w = box
    m = max(2, int(round(3 * scale)))
    y0, x0, h, w = y0 + m, x0 + m, h - 2 * m, w - 2 * m
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    a = rng.uniform(0, math.pi)
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    period = rng.uniform(4.5, 7.0) * scale
    alpha = rng.uniform(0.5, 0.9) * _texture_alpha(TEXTURES[label], rng, u, v, period)
    _blend(canvas, alpha.astype(np.float32), _ink(rng), slice(y0, y0 + h), slice(x0, x0 + w))


def _ink(rng: np.random.Generator) -> np.ndarray:
    """A dark, slightly tinted drawing colour that contrasts with the pastel cards."""
    return np.clip(rng.uniform(0.0, 0.25) + rng.uniform(-0.06, 0.06, 3), 0, 1).astype(np.float32)


Renderer = Callable[[np.random.Generator, Canvas, tuple[int, int, int, int], int, float], None]

# task name -> (label names, card hue (RGB), renderer)
TASKS: dict[str, tuple[tuple[str, ...], tuple[float, float, float], Renderer]] = {
    "shape": (SHAPES, (0.25, 0.45, 0.95), _draw_shape),
    "orientation": (ORIENTATIONS, (0.2, 0.8, 0.3), _draw_grating),
    "count": (COUNTS, (0.95, 0.55, 0.15), _draw_dots),
    "texture": (TEXTURES, (0.85, 0.2, 0.8), _draw_texture),
}
# tasks rendered from their own random stream (see the module docstring)
ADDED_TASKS = frozenset({"texture"})


class SyntheticMultiTask:
    """Raw source of the procedural multi-task images (see the module docstring).

    ``raw(i)`` returns ``(uint8 HxWx3 image, labels int64[T] with -1 for absent tasks, multi-hot float32[T])``.
    """

    def __init__(
        self,
        length: int,
        image_size: int = 64,
        seed: int = 0,
        split: str = "train",
        tasks: Sequence[str] = ("shape", "orientation", "count"),
        two_task_fraction: float = 0.5,
    ) -> None:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise DatasetError(f"synthetic tasks must be distinct names from {sorted(TASKS)}, got {list(tasks)}")
        if image_size < 32:
            raise DatasetError(f"synthetic image_size must be at least 32, got {image_size}")
        if not 0.0 <= two_task_fraction <= 1.0:
            raise DatasetError(f"two_task_fraction must be in [0, 1], got {two_task_fraction}")
        self.length = int(length)
        self.size = int(image_size)
        self.seed = int(seed)
        self.split = split
        self.task_names = list(tasks)
        self.tasks = [TaskSpec(name, TASKS[name][0]) for name in self.task_names]
        self.two_task_fraction = float(two_task_fraction)
        self._base = [i for i, name in enumerate(self.task_names) if name not in ADDED_TASKS]
        self._added = [i for i, name in enumerate(self.task_names) if name in ADDED_TASKS]

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int, stream: int | None = None) -> np.random.Generator:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a {self.split} split of {self.length} images")
        entropy = [self.seed, SPLITS[self.split], index]
        if stream is None:
            return np.random.default_rng(np.random.SeedSequence(entropy))
        return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(stream,)))

    def _background(self, rng: np.random.Generator) -> Canvas:
        s = self.size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
        a = rng.uniform(0, 2 * math.pi)
        t = np.clip(xx * math.cos(a) + yy * math.sin(a) + 0.5, 0, 1)[..., None]
        c1 = np.clip(rng.uniform(0.3, 0.7) + rng.uniform(-0.07, 0.07, 3), 0, 1)
        c2 = np.clip(rng.uniform(0.3, 0.7) + rng.uniform(-0.07, 0.07, 3), 0, 1)
        canvas = (c1 * (1 - t) + c2 * t).astype(np.float32)
        # gray clutter: a few thin random lines
        for _ in range(rng.integers(2, 6)):
            p0, p1 = rng.uniform(0, s, 2), rng.uniform(0, s, 2)
            d = p1 - p0
            n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-6)
            dist = np.abs((xx + 0.5) * s * n[0] + (yy + 0.5) * s * n[1] - (p0[0] * n[0] + p0[1] * n[1]))
            alpha = _coverage(dist - 0.6, 1.0) * rng.uniform(0.3, 0.7)
            _blend(canvas, alpha, np.full(3, rng.uniform(0.1, 0.9), np.float32), slice(None), slice(None))
        return canvas

    def _layout(self, rng: np.random.Generator, k: int) -> list[tuple[int, int, int, int]]:
        """Card boxes (y0, x0, h, w): one card anywhere, or two cards in opposite halves."""
        s = self.size
        if k == 1:
            h, w = (int(rng.uniform(0.5, 0.72) * s) for _ in range(2))
            return [(int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1)), h, w)]
        boxes = []
        vertical_split = rng.random() < 0.5
        for half in range(2):
            across = int(rng.uniform(0.4, 0.48) * s)  # size across the split
            along = int(rng.uniform(0.45, 0.75) * s)
            a0 = half * (s // 2) + int(rng.integers(0, s // 2 - across + 1))
            b0 = int(rng.integers(0, s - along + 1))
            boxes.append((b0, a0, along, across) if vertical_split else (a0, b0, across, along))
        return boxes

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._added:
            rng = self._rng(index, ADDED_STREAM)
            if not self._base or rng.random() < len(self._added) / len(self.task_names):
                cards = [self._added[int(rng.integers(len(self._added)))]]
                if self._base and rng.random() < self.two_task_fraction:
                    partner = self._base[int(rng.integers(len(self._base)))]
                    cards = cards + [partner] if rng.random() < 0.5 else [partner] + cards
                return self._render(rng, cards)
        rng = self._rng(index)
        t = len(self._base)
        k = 2 if t > 1 and rng.random() < self.two_task_fraction else 1
        active = sorted(rng.choice(t, size=k, replace=False).tolist())
        return self._render(rng, [self._base[j] for j in active])

    def _render(self, rng: np.random.Generator, cards: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The image showing one card per task index in ``cards`` (in layout order), and its targets."""
        t = len(self.tasks)
        labels = np.full(t, -1, dtype=np.int64)
        vector = np.zeros(t, dtype=np.float32)
        canvas = self._background(rng)
        scale = self.size / 64.0
        for task, box in zip(cards, self._layout(rng, len(cards))):
            names, hue, render = TASKS[self.task_names[task]]
            label = int(rng.integers(len(names)))
            labels[task], vector[task] = label, 1.0
            y0, x0, h, w = box
            fill = np.clip(0.45 * np.asarray(hue) + 0.5 + rng.uniform(-0.06, 0.06, 3), 0, 1).astype(np.float32)
            edge = np.clip(np.asarray(hue) * 0.7, 0, 1).astype(np.float32)
            canvas[y0 : y0 + h, x0 : x0 + w] = edge
            b = max(1, int(round(1.5 * scale)))
            canvas[y0 + b : y0 + h - b, x0 + b : x0 + w - b] = fill
            render(rng, canvas, box, label, scale)
        canvas *= rng.uniform(0.85, 1.15)
        canvas += np.float32(rng.uniform(0.02, 0.06)) * rng.standard_normal(canvas.shape, dtype=np.float32)
        image = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
        return image, labels, vector

    def pil(self, index: int) -> Image.Image:
        return Image.fromarray(self.raw(index)[0], mode="RGB")
