"""Reading serve.py's answers: per image, the active tasks and each active task's top-k labels.

serve.py answers with ``logits_<task>`` (FP32 ``[N, n_labels]``), ``labels_<task>`` (BYTES ``[N, k]``, empty
strings where the task is inactive) and ``active_tasks`` (BOOL ``[N, T]``, the mask each bitstream carried).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from codec.wire import ACTIVE_TASKS_OUTPUT, TOP_K_PARAMETER, labels_output, logits_output
from runtime_edge.transport import InferResult, KServeClient, MalformedResponseError


@dataclass
class TaskPrediction:
    """One active task's answer: labels best first and their softmax probabilities."""

    task: str
    labels: list[str]
    probabilities: list[float]

    @property
    def label(self) -> str:
        return self.labels[0]


@dataclass
class ImagePrediction:
    """What the server answered for one image."""

    active_tasks: list[str]
    tasks: dict[str, TaskPrediction]
    logits: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def predictions_from_outputs(
    outputs: dict[str, np.ndarray], task_names: Sequence[str], labels: dict[str, list[str]]
) -> list[ImagePrediction]:
    """Turn decoded response outputs into one :class:`ImagePrediction` per image (``MalformedResponseError`` when
    an output is missing or has the wrong shape)."""
    missing = [n for n in [ACTIVE_TASKS_OUTPUT, *(logits_output(t) for t in task_names), *(labels_output(t) for t in task_names)] if n not in outputs]
    if missing:
        raise MalformedResponseError(f"server answer lacks outputs {missing} (has {sorted(outputs)})")
    active = np.asarray(outputs[ACTIVE_TASKS_OUTPUT]).astype(bool)
    n = active.shape[0]
    if active.shape != (n, len(task_names)):
        raise MalformedResponseError(f"output {ACTIVE_TASKS_OUTPUT!r} has shape {active.shape}, expected ({n}, {len(task_names)})")
    results = []
    for i in range(n):
        tasks: dict[str, TaskPrediction] = {}
        logits: dict[str, np.ndarray] = {}
        for t, task in enumerate(task_names):
            task_logits = np.asarray(outputs[logits_output(task)], dtype=np.float32)
            if task_logits.shape != (n, len(labels[task])):
                raise MalformedResponseError(f"output {logits_output(task)!r} has shape {task_logits.shape}, expected ({n}, {len(labels[task])})")
            logits[task] = task_logits[i]
            if not active[i, t]:
                continue
            names = [_text(v) for v in np.asarray(outputs[labels_output(task)])[i].reshape(-1)]
            probs = _softmax(task_logits[i].astype(np.float64))
            index = {name: j for j, name in enumerate(labels[task])}
            unknown = [x for x in names if x not in index]
            if unknown:
                raise MalformedResponseError(f"server labels {unknown} are not labels of task {task!r}")
            tasks[task] = TaskPrediction(task, names, [float(probs[index[x]]) for x in names])
        results.append(ImagePrediction([t for j, t in enumerate(task_names) if active[i, j]], tasks, logits))
    return results


def request_predictions(
    client: KServeClient,
    model_name: str,
    bitstreams: Sequence[bytes],
    task_names: Sequence[str],
    labels: dict[str, list[str]],
    top_k: int = 1,
) -> tuple[list[ImagePrediction], InferResult]:
    """Send ``bitstreams`` in one request and read the answers."""
    result = client.infer(model_name, list(bitstreams), {TOP_K_PARAMETER: int(top_k)})
    preds = predictions_from_outputs(result.outputs, task_names, labels)
    if len(preds) != len(bitstreams):
        raise MalformedResponseError(f"sent {len(bitstreams)} bitstreams, the server answered for {len(preds)} images")
    return preds, result
