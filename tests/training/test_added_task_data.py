"""The built-in fourth task (``texture``): old configs render the same bytes as before it existed, and a
config that lists it gets it from its own random stream."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from training.data import SyntheticMultiTask
from training.data.synthetic import TASKS, TEXTURES

OLD = ("shape", "orientation", "count")
ALL = OLD + ("texture",)

# SHA-256 over (image, labels, task vector) of the first 16 items, recorded before the texture task was added
BEFORE = {
    (OLD, 64, "train", 0): "ed9653d239489bad3de2bf5d2f2e0a4bd17fbd606e75b436ba5f77941722b75f",
    (OLD, 64, "test", 0): "3d424176c6781ebf62d596b6aa3e07c8028ea2ea7d1da68f761815e8ee69e22d",
    (OLD, 32, "val", 0): "478f6edcc7ea799a4d1b6334cde19b1a93358fe4bafdc3edc7cdf7f2595a11ff",
    (("count", "shape"), 48, "train", 3): "5c6988b9f812dd3062548aa220de76c2e191beeab954e7598757a0905faef083",
}


def _digest(source: SyntheticMultiTask, n: int) -> str:
    h = hashlib.sha256()
    for i in range(n):
        for array in source.raw(i):
            h.update(array.tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("key", sorted(BEFORE, key=str))
def test_configs_without_the_added_task_render_the_same_bytes(key) -> None:
    tasks, size, split, seed = key
    assert _digest(SyntheticMultiTask(16, size, seed, split, tasks), 16) == BEFORE[key]


def test_items_without_the_added_task_are_the_old_items() -> None:
    old, new = SyntheticMultiTask(300, 64, 0, "train", OLD), SyntheticMultiTask(300, 64, 0, "train", ALL)
    shown = 0
    for i in range(len(new)):
        image, labels, vector = new.raw(i)
        if vector[3]:
            shown += 1
            assert 0 <= labels[3] < len(TEXTURES) and 1 <= vector.sum() <= 2
            continue
        old_image, old_labels, old_vector = old.raw(i)
        np.testing.assert_array_equal(image, old_image)
        np.testing.assert_array_equal(labels[:3], old_labels)
        np.testing.assert_array_equal(vector[:3], old_vector)
        assert labels[3] == -1
    assert 0.15 < shown / len(new) < 0.35  # one task in four


def test_texture_card_is_visible_and_every_texture_occurs() -> None:
    src = SyntheticMultiTask(400, 64, 5, "test", ALL)
    hue = np.asarray(TASKS["texture"][1])
    fill = 0.45 * hue + 0.5
    seen_labels, right = set(), 0
    for i in range(len(src)):
        image, labels, vector = src.raw(i)
        rgb = (image.astype(np.float32) / 255.0).reshape(16, 4, 16, 4, 3).mean((1, 3))
        chroma, target = rgb - rgb.mean(-1, keepdims=True), fill - fill.mean()
        visible = int((np.abs(chroma - target).max(-1) < 0.12).sum()) >= 4
        right += visible == bool(vector[3])
        if vector[3]:
            seen_labels.add(int(labels[3]))
    assert right / len(src) > 0.95
    assert seen_labels == set(range(len(TEXTURES)))


def test_the_added_task_alone() -> None:
    src = SyntheticMultiTask(20, 32, 0, "train", ["texture"])
    for i in range(len(src)):
        image, labels, vector = src.raw(i)
        assert image.shape == (32, 32, 3) and vector.tolist() == [1.0] and 0 <= labels[0] < len(TEXTURES)
