"""Per-task accuracy: the one definition behind training's evaluation, the int8 check (``calibration``) and
the demo's report. Pure numpy.

A task's accuracy is measured over the images that show the task (label >= 0): an answer is right when the
task is active for the image (in its task mask: the server answers only the tasks the bitstream names) and
the top-1 label is the true one.

**A task no image shows has no accuracy**: it is left out of the result, never reported as 0 or NaN. The
result's keys are the tasks that were measured; :func:`mean_task_accuracy` averages those and refuses a
result with none.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def task_accuracy(predictions: np.ndarray, labels: np.ndarray, active: np.ndarray, task_names: Sequence[str]) -> dict[str, float]:
    """``{task: right / shown}`` for every task at least one image shows (see the module docstring).

    ``predictions`` and ``labels`` are ``(N, T)`` label indices (a label below 0: the image does not show the
    task; a prediction is ignored where the task is not active), ``active`` is ``(N, T)`` booleans.
    """
    predictions, labels, active = np.asarray(predictions), np.asarray(labels), np.asarray(active, dtype=bool)
    shape = (labels.shape[0] if labels.ndim == 2 else -1, len(task_names))
    if labels.shape != shape or predictions.shape != shape or active.shape != shape:
        raise ValueError(
            f"predictions {predictions.shape}, labels {labels.shape} and active {active.shape} must all be "
            f"(images, {len(task_names)}) for tasks {list(task_names)}"
        )
    out = {}
    for t, name in enumerate(task_names):
        shown = labels[:, t] >= 0
        if shown.any():
            right = shown & active[:, t] & (predictions[:, t] == labels[:, t])
            out[name] = float(np.count_nonzero(right) / np.count_nonzero(shown))
    return out


def mean_task_accuracy(accuracy: Mapping[str, float]) -> float:
    """The mean over the measured tasks of a :func:`task_accuracy` result; ``ValueError`` when none was measured."""
    if not accuracy:
        raise ValueError("no image shows any of the tasks: there is no accuracy to average")
    return float(sum(accuracy.values()) / len(accuracy))
