"""Reading serve.py's answers: per image, the active tasks and each active task's top-k labels.

The edge runtime asks for the smallest answer that holds what it prints: ``top`` (INT32
``[N, T, k]``, the k best label indices per task, -1 where the task is inactive), names the labels from its
own bundle, and asks for ``logits_<task>`` too only when it prints probabilities (``scores=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from codec.wire import LABEL_INDEX_INACTIVE, LABEL_INDEX_OUTPUT, TOP_K_DEFAULT, TOP_K_PARAMETER, logits_output
from runtime_edge.transport import InferResult, MalformedResponseError, Transport


@dataclass
class TaskPrediction:
    """One active task's answer: labels best first and, when asked for, their softmax probabilities."""

    task: str
    labels: list[str]
    probabilities: list[float] | None = None

    @property
    def label(self) -> str:
        return self.labels[0]


@dataclass
class ImagePrediction:
    """What the server answered for one image (``logits`` only when they were asked for)."""

    active_tasks: list[str]
    tasks: dict[str, TaskPrediction]
    logits: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def predictions_from_outputs(
    outputs: dict[str, np.ndarray], task_names: Sequence[str], labels: dict[str, list[str]]
) -> list[ImagePrediction]:
    """Turn decoded response outputs (``top``, and ``logits_<task>`` where present) into one
    :class:`ImagePrediction` per image (``MalformedResponseError`` for a missing or ill-shaped output)."""
    if LABEL_INDEX_OUTPUT not in outputs:
        raise MalformedResponseError(f"server answer lacks output {LABEL_INDEX_OUTPUT!r} (has {sorted(outputs)})")
    index = np.asarray(outputs[LABEL_INDEX_OUTPUT])
    if index.ndim != 3 or index.shape[1] != len(task_names) or index.shape[2] < 1:
        raise MalformedResponseError(f"output {LABEL_INDEX_OUTPUT!r} has shape {index.shape}, expected (N, {len(task_names)}, k >= 1)")
    n = index.shape[0]
    logits: dict[str, np.ndarray] = {}
    for task in task_names:
        if logits_output(task) in outputs:
            logits[task] = np.asarray(outputs[logits_output(task)], dtype=np.float32)
            if logits[task].shape != (n, len(labels[task])):
                raise MalformedResponseError(
                    f"output {logits_output(task)!r} has shape {logits[task].shape}, expected ({n}, {len(labels[task])})"
                )
    results = []
    for i in range(n):
        tasks: dict[str, TaskPrediction] = {}
        for t, task in enumerate(task_names):
            ids = [int(j) for j in index[i, t] if j != LABEL_INDEX_INACTIVE]
            if not ids:
                continue
            if any(not 0 <= j < len(labels[task]) for j in ids):
                raise MalformedResponseError(f"server label indices {ids} are not labels of task {task!r} ({len(labels[task])} labels)")
            probs = None
            if task in logits:
                p = _softmax(logits[task][i].astype(np.float64))
                probs = [float(p[j]) for j in ids]
            tasks[task] = TaskPrediction(task, [labels[task][j] for j in ids], probs)
        results.append(ImagePrediction(list(tasks), tasks, {t: v[i] for t, v in logits.items()}))
    return results


def request_predictions(
    client: Transport,
    model_name: str,
    bitstreams: Sequence[bytes],
    task_names: Sequence[str],
    labels: dict[str, list[str]],
    top_k: int = 1,
    scores: bool = False,
) -> tuple[list[ImagePrediction], InferResult]:
    """Send ``bitstreams`` in one request, asking for ``top`` (and the logits with ``scores``);
    ``top_k`` travels only when it is not the contract's default."""
    outputs = [LABEL_INDEX_OUTPUT] + ([logits_output(t) for t in task_names] if scores else [])
    parameters = {TOP_K_PARAMETER: int(top_k)} if top_k != TOP_K_DEFAULT else None
    result = client.infer(model_name, list(bitstreams), parameters, outputs)
    preds = predictions_from_outputs(result.outputs, task_names, labels)
    if len(preds) != len(bitstreams):
        raise MalformedResponseError(f"sent {len(bitstreams)} bitstreams, the server answered for {len(preds)} images")
    return preds, result
