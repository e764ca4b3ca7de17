"""Adding tasks to a trained Stage 2 model, in two ways (``training/add_task.py`` trains them).

* **Server-only** (``mode="server"``): the edge client and the entropy bottleneck stay as deployed; the
  server half becomes an :class:`AddedTaskServer`: the deployed :class:`TaskServer`, untouched, plus one
  new decoder and tail per added task and a :class:`LatentTaskDetector` that decides from the decoded
  latent whether each added task applies (the deployed task detector does not know it, and the task mask
  a deployed device sends has no bit for it). Output order: the deployed tasks, then the added ones.
* **Full** (``mode="full"``): the edge client's task detector gets one output and the FiLM generator one
  input per added task (the old rows and columns keep their weights, a new FiLM input starts at zero so
  the expanded client computes what the old one did until it trains); the server is a plain
  :class:`TaskServer` with the new decoders and tails appended. The result is an ordinary Stage 2 model.

New decoders start as copies of a deployed task's decoder, new tails as a copy of that task's tail trunk
with a fresh linear head (a teacher that knows only the original tasks has no head to offer).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn as nn

from training.models.mantis import EdgeClient, SplitModel, TaskServer, conv_bn_relu
from training.models.registry import create_model, register_model
from training.models.teacher import TaskTail

ADD_MODES = ("server", "full")


class LatentTaskDetector(nn.Module):
    """Server-side multi-label detector of the added tasks, on the decoded latent: one logit per task."""

    def __init__(self, latent_channels: int, num_tasks: int, hidden: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(latent_channels, hidden, 3, 1), conv_bn_relu(hidden, hidden, 3, 2))
        self.classifier = nn.Linear(hidden, num_tasks)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(y_hat).mean(dim=(2, 3)))


class AddedTaskServer(nn.Module):
    """The deployed server half (``base``) plus decoders, tails and a latent detector for added tasks.

    ``forward`` returns the logits of every task, deployed tasks first; ``detect`` the added tasks'
    detection logits. ``edge_tasks`` is how many tasks the edge client's task mask covers.
    """

    def __init__(self, base: TaskServer, decoders: Sequence[nn.Module], tails: Sequence[nn.Module], detector: LatentTaskDetector) -> None:
        super().__init__()
        if len(decoders) != len(tails) or not decoders:
            raise ValueError("one decoder and one tail per added task, at least one")
        self.base = base
        self.decoders = nn.ModuleList(decoders)
        self.tails = nn.ModuleList(tails)
        self.detector = detector
        self.edge_tasks = len(base.decoders)

    def forward(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.base(y_hat)) + tuple(tail(dec(y_hat)) for dec, tail in zip(self.decoders, self.tails))

    def detect(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.detector(y_hat)

    def added_modules(self) -> nn.ModuleDict:
        """Everything that trains in a server-only addition (the deployed ``base`` never does)."""
        return nn.ModuleDict({"decoders": self.decoders, "tails": self.tails, "detector": self.detector})


def new_decoder_and_tail(server: TaskServer, init_from: int, num_labels: int) -> tuple[nn.Module, nn.Module]:
    """Copies of task ``init_from``'s decoder and tail trunk, with a fresh ``num_labels``-way linear head."""
    tail = server.tails[init_from]
    if not isinstance(tail, TaskTail) or not isinstance(tail.head, nn.Linear):
        raise ValueError(
            f"adding a task needs tails that end in a linear head (a teacher_cnn teacher); task {init_from}'s tail is "
            f"{type(tail).__name__} with head {type(getattr(tail, 'head', None)).__name__}"
        )
    head = nn.Linear(tail.head.in_features, num_labels)
    return copy.deepcopy(server.decoders[init_from]), TaskTail(copy.deepcopy(tail.trunk), head)


def _grown_linear(old: nn.Linear, out_features: int, in_features: int, zero_new_inputs: bool) -> nn.Linear:
    """A larger linear layer holding ``old``'s weights in its first rows and columns."""
    new = nn.Linear(in_features, out_features, bias=old.bias is not None)
    with torch.no_grad():
        if zero_new_inputs:
            new.weight[:, old.in_features :].zero_()
        new.weight[: old.out_features, : old.in_features].copy_(old.weight)
        if old.bias is not None:
            new.bias[: old.out_features].copy_(old.bias)
    return new


def expand_client(client: EdgeClient, added: int) -> EdgeClient:
    """A copy of ``client`` whose detector and FiLM generator also cover ``added`` new tasks."""
    out = copy.deepcopy(client)
    n = client.num_tasks + added
    det = out.task_detector.classifier
    out.task_detector.classifier = _grown_linear(det, n, det.in_features, zero_new_inputs=False)
    first = out.film_generator.net[0]
    out.film_generator.net[0] = _grown_linear(first, first.out_features, n, zero_new_inputs=True)
    out.num_tasks = n
    return out


def extend_model(base: SplitModel, num_labels: Sequence[int], mode: str, init_from: int = 0, detector_hidden: int = 32) -> SplitModel:
    """A new model holding copies of ``base``'s weights, extended by tasks with ``num_labels`` labels each."""
    if mode not in ADD_MODES:
        raise ValueError(f"mode must be one of {ADD_MODES}, got {mode!r}")
    if not isinstance(base.server, TaskServer):
        raise ValueError(f"tasks are added to a Stage 2 model (a TaskServer), got {type(base.server).__name__}")
    if not 0 <= init_from < len(base.server.decoders):
        raise ValueError(f"init_from {init_from} is not a task of the base model (it has {len(base.server.decoders)})")
    if not num_labels or min(num_labels) < 2:
        raise ValueError(f"every added task needs at least 2 labels, got {list(num_labels)}")
    parts = [new_decoder_and_tail(base.server, init_from, n) for n in num_labels]
    decoders, tails = [p[0] for p in parts], [p[1] for p in parts]
    if mode == "server":
        client = copy.deepcopy(base.client)
        detector = LatentTaskDetector(base.client.latent_channels, len(num_labels), detector_hidden)
        server: nn.Module = AddedTaskServer(copy.deepcopy(base.server), decoders, tails, detector)
    else:
        client = expand_client(base.client, len(num_labels))
        old = copy.deepcopy(base.server)
        server = TaskServer(list(old.decoders) + decoders, list(old.tails) + tails)
    model = SplitModel(client, server, base.decoder_quantization)
    model.entropy_bottleneck = copy.deepcopy(base.entropy_bottleneck)
    return model


@register_model
def mantis_added_tasks(
    base: dict[str, Any], num_labels: Sequence[int], mode: str, init_from: int = 0, detector_hidden: int = 32
) -> SplitModel:
    """The architecture of :func:`extend_model` rebuilt from its description: ``base`` is the deployed
    model's ``{"name", "kwargs"}``. Weights come from a checkpoint."""
    return extend_model(create_model(base["name"], **base["kwargs"]), num_labels, mode, init_from, detector_hidden)


def server_detected_tasks(model: SplitModel) -> int:
    """How many of the model's tasks are detected on the server (0 for an ordinary Stage 2 model)."""
    server = model.server
    return len(server.decoders) if isinstance(server, AddedTaskServer) else 0
