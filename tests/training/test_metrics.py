"""training/metrics.py: the one per-task accuracy that training, the int8 check and the demo report use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibration.int8_accuracy import PathOutputs
from training.data.common import TaskSpec
from training.evaluate import _Tally
from training.metrics import mean_task_accuracy, task_accuracy

LABELS = np.array([[0, -1, -1], [1, 2, -1], [2, 2, -1], [-1, 0, -1]])  # task "c": no image shows it
PREDICTIONS = np.array([[0, 1, 0], [1, 2, 0], [0, 2, 0], [0, 0, 0]])
ACTIVE = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=bool)


def test_accuracy_counts_shown_images_and_inactive_tasks_as_wrong() -> None:
    acc = task_accuracy(PREDICTIONS, LABELS, ACTIVE, ["a", "b", "c"])
    # a: shown by images 0-2, right on 0 and 1; b: shown by 1-3, right on 2 and 3 (image 1 right but inactive)
    assert acc == {"a": pytest.approx(2 / 3), "b": pytest.approx(2 / 3)}


def test_a_task_no_image_shows_is_left_out_and_the_mean_covers_the_measured_ones() -> None:
    acc = task_accuracy(PREDICTIONS, LABELS, ACTIVE, ["a", "b", "c"])
    assert "c" not in acc and mean_task_accuracy(acc) == pytest.approx(2 / 3)
    assert task_accuracy(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"]) == {}
    with pytest.raises(ValueError, match="no image shows any of the tasks"):
        mean_task_accuracy({})


def test_shapes_must_match_the_tasks() -> None:
    with pytest.raises(ValueError, match=r"must all be \(images, 2\)"):
        task_accuracy(PREDICTIONS, LABELS, ACTIVE, ["a", "b"])
    with pytest.raises(ValueError, match="must all be"):
        task_accuracy(PREDICTIONS[:3], LABELS, ACTIVE, ["a", "b", "c"])


def test_training_and_the_int8_check_use_the_same_rule() -> None:
    """Training's tally (batches of logits and boolean masks) and the int8 check's outputs (integer task
    masks) give the one function's answer on the same images."""
    names = ["a", "b", "c"]
    expected = task_accuracy(PREDICTIONS, LABELS, ACTIVE, names)
    logits = [np.eye(3, dtype=np.float32)[PREDICTIONS[:, t]] for t in range(3)]
    tally = _Tally([TaskSpec(n, tuple("xyz")) for n in names])
    for rows in (slice(0, 3), slice(3, 4)):
        tally.classify([torch.from_numpy(lg[rows]) for lg in logits], torch.from_numpy(LABELS[rows]), torch.from_numpy(ACTIVE[rows]))
    assert tally.accuracy() == expected
    masks = (ACTIVE * (1 << np.arange(3))).sum(axis=1)
    out = PathOutputs(np.zeros((4, 1, 1, 1), np.int32), masks, np.full(4, 20), logits)
    assert out.task_accuracy(LABELS, names) == expected
