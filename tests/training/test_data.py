"""The built-in procedural dataset: determinism, item format, visible tasks, preprocessing contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import functional as TF

from training.config import load_config
from training.data import DatasetError, MultiTaskDataset, Normalizer, SyntheticMultiTask, build_datasets, preprocessing_meta
from training.data.synthetic import TASKS

PRE = preprocessing_meta((64, 64), [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])


def test_same_seed_same_images_other_seed_or_split_differs() -> None:
    a = SyntheticMultiTask(20, 64, seed=3, split="train")
    b = SyntheticMultiTask(20, 64, seed=3, split="train")
    for i in (0, 7, 19):
        for x, y in zip(a.raw(i), b.raw(i)):
            np.testing.assert_array_equal(x, y)
    other_seed = SyntheticMultiTask(20, 64, seed=4, split="train")
    other_split = SyntheticMultiTask(20, 64, seed=3, split="test")
    assert not np.array_equal(a.raw(0)[0], other_seed.raw(0)[0])
    assert not np.array_equal(a.raw(0)[0], other_split.raw(0)[0])
    # an item does not depend on which items were rendered before it
    fresh = SyntheticMultiTask(20, 64, seed=3, split="train")
    np.testing.assert_array_equal(fresh.raw(19)[0], a.raw(19)[0])


def test_items_have_the_documented_format() -> None:
    ds = MultiTaskDataset(SyntheticMultiTask(200, 64, seed=0), PRE)
    assert len(ds.tasks) >= 3
    assert all(len(set(t.labels)) == len(t.labels) >= 2 for t in ds.tasks)
    counts = []
    for i in range(len(ds)):
        x, labels, vector = ds[i]
        assert x.dtype == torch.float32 and x.shape == (3, 64, 64)
        assert labels.dtype == torch.long and vector.dtype == torch.float32
        assert torch.equal(labels >= 0, vector.bool())
        for t, task in enumerate(ds.tasks):
            assert -1 <= int(labels[t]) < len(task.labels)
        counts.append(int(vector.sum()))
    assert set(counts) == {1, 2}
    assert 0.35 < counts.count(2) / len(counts) < 0.65


def test_cached_and_on_the_fly_items_are_identical() -> None:
    src = SyntheticMultiTask(16, 64, seed=1, split="val")
    lazy, cached = MultiTaskDataset(src, PRE), MultiTaskDataset(src, PRE, cache=True)
    for i in range(16):
        for a, b in zip(lazy[i], cached[i]):
            assert torch.equal(a, b)


def test_pil_image_through_the_stored_preprocessing_equals_the_item() -> None:
    ds = MultiTaskDataset(SyntheticMultiTask(8, 64, seed=2), PRE)
    for i in range(8):
        pil = ds.pil(i)
        assert pil.mode == "RGB" and pil.size == (64, 64)
        expected = TF.normalize(TF.to_tensor(pil), PRE["mean"], PRE["std"])
        assert torch.equal(ds[i][0], expected)
        assert torch.equal(Normalizer(PRE)(pil), expected)


def _card_blocks(image: np.ndarray, hue: tuple[float, float, float]) -> int:
    """4x4 blocks whose colour (minus its grey level) matches a task's card fill, the pastel of its hue."""
    h, w, _ = image.shape
    rgb = (image.astype(np.float32) / 255.0).reshape(h // 4, 4, w // 4, 4, 3).mean((1, 3))
    fill = 0.45 * np.asarray(hue) + 0.5
    chroma, target = rgb - rgb.mean(-1, keepdims=True), fill - fill.mean()
    return int((np.abs(chroma - target).max(-1) < 0.08).sum())


def test_which_tasks_apply_is_visible_in_the_image() -> None:
    """A fixed colour rule, no learning, recovers the task vector: the cards show which tasks apply."""
    src = SyntheticMultiTask(300, 64, seed=5, split="test")
    hues = [TASKS[name][1] for name in src.task_names]
    right = 0
    for i in range(len(src)):
        image, _, vector = src.raw(i)
        seen = np.array([_card_blocks(image, h) >= 8 for h in hues])
        right += bool((seen == vector.astype(bool)).all())
    assert right / len(src) > 0.98


@pytest.mark.parametrize("size", [32, 96])
def test_image_size_is_configurable(size: int) -> None:
    image, labels, vector = SyntheticMultiTask(4, size, seed=0).raw(3)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8


def test_bad_dataset_arguments_are_rejected() -> None:
    with pytest.raises(DatasetError, match="synthetic tasks"):
        SyntheticMultiTask(4, 64, tasks=["shape", "colour"])
    with pytest.raises(DatasetError, match="split"):
        SyntheticMultiTask(4, 64, split="dev")
    with pytest.raises(IndexError):
        SyntheticMultiTask(4, 64).raw(4)


def test_build_datasets_from_the_tiny_config() -> None:
    cfg = load_config("training/configs/tiny.yaml")
    train, val, test, tasks, pre = build_datasets(cfg)
    assert [len(train), len(val), len(test)] == [cfg["data"]["synthetic"][f"{s}_size"] for s in ("train", "val", "test")]
    assert [t.name for t in tasks] == cfg["data"]["synthetic"]["tasks"]
    assert pre["input_size"] == [32, 32] and pre["color"] == "RGB" and pre["value_range"] == [0, 1]
    assert train[0][0].shape == (3, 32, 32)
