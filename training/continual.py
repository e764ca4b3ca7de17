"""Learning a new task without forgetting the old ones: replay, EWC, and the two addition objectives.

* :class:`ReplayBuffer` keeps a fixed, seeded sample of old-task training images (images none of the added
  tasks applies to); :class:`ReplayMix` puts them beside the new task's data so that a given share of every
  epoch (and, shuffled, of every batch on average) replays old tasks.
* :func:`fisher_diagonal` estimates the diagonal of the (empirical) Fisher information of the deployed model
  on old-task data: the mean over images of the squared gradient of that image's old-task loss
  (masked per-task cross-entropy + task-detection BCE). :class:`EWCPenalty` is
  ``weight / 2 * sum_i F_i (theta_i - theta*_i)^2`` over the anchored parameters, with ``F`` scaled to mean
  1 so that ``weight`` means the same whatever the model's size; a parameter that grew (the detector's
  output layer, FiLM's input layer) is penalised on its old slice only.
* :class:`AddedTasksObjective` trains only the added decoders and tails (and, server-only, the latent
  detector) on decoded latents; :class:`FullAdditionObjective` is Stage 2's objective over all tasks (stem
  frozen) plus the EWC penalty.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.ops import quantize_ste
from torch.utils.data import DataLoader, Dataset

from training.config import EWC_MODULES
from training.losses import detection_bce, masked_task_ce, rate_bpp
from training.models.added_tasks import AddedTaskServer
from training.models.mantis import SplitModel
from training.stages import param_groups, stage2_groups


class Subset(Dataset):
    """Items ``indices`` of ``dataset``, optionally with only the label/task columns ``tasks``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], tasks: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.tasks = None if tasks is None else torch.tensor(list(tasks), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        x, labels, vector = self.dataset[self.indices[index]]
        if self.tasks is not None:
            labels, vector = labels[self.tasks], vector[self.tasks]
        return x, labels, vector


def targets(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(N, T)`` labels and task vectors of a multi-task dataset (from its cache when it has one)."""
    labels, vectors = getattr(dataset, "_labels", None), getattr(dataset, "_vectors", None)
    if labels is not None and vectors is not None:
        return labels, vectors
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it[1] for it in items]), torch.stack([it[2] for it in items])


def split_by_tasks(dataset: Dataset, added: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(new, old)``: indices of the items an added task applies to, and of the others."""
    _, vectors = targets(dataset)
    hit = vectors[:, list(added)].bool().any(dim=1)
    return torch.nonzero(hit).flatten().tolist(), torch.nonzero(~hit).flatten().tolist()


class ReplayBuffer:
    """A fixed, seeded sample of ``size`` old-task items (``old_indices`` into ``dataset``)."""

    def __init__(self, dataset: Dataset, old_indices: Sequence[int], size: int, seed: int) -> None:
        if size < 1:
            raise ValueError(f"replay buffer size must be at least 1, got {size}")
        if len(old_indices) < size:
            raise ValueError(f"replay buffer of {size} images asked for, but only {len(old_indices)} old-task images exist")
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(old_indices), generator=g)[:size]
        self.dataset = dataset
        self.indices = sorted(int(old_indices[i]) for i in pick)

    def __len__(self) -> int:
        return len(self.indices)


class ReplayMix(Dataset):
    """The new task's items followed by replayed old-task items, ``fraction`` of the total.

    The replay part cycles through the buffer (so every buffered image is replayed about equally often);
    the training loop shuffles the whole, so each batch replays ``fraction`` of its items on average.
    """

    def __init__(self, dataset: Dataset, new_indices: Sequence[int], buffer: ReplayBuffer, fraction: float) -> None:
        if not 0 <= fraction < 1:
            raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
        self.dataset = dataset
        self.new = [int(i) for i in new_indices]
        self.buffer = buffer
        self.replayed = int(round(len(self.new) * fraction / (1 - fraction)))

    def __len__(self) -> int:
        return len(self.new) + self.replayed

    def source_index(self, index: int) -> int:
        if index < len(self.new):
            return self.new[index]
        return self.buffer.indices[(index - len(self.new)) % len(self.buffer)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return self.dataset[self.source_index(index)]


def _ste_forward(model: SplitModel, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Per-task logits and task logits on the rounded latent, gradients passed straight through."""
    y, task_logits = model.client(x)
    medians = model.entropy_bottleneck._get_medians().detach()
    y_hat = quantize_ste(y.float() - medians) + medians
    return model.server(y_hat), task_logits


def old_task_loss(model: SplitModel, x: torch.Tensor, labels: torch.Tensor, task_vector: torch.Tensor) -> torch.Tensor:
    """The deployed model's loss on old-task data: masked per-task CE + detection BCE."""
    out, task_logits = _ste_forward(model, x)
    return masked_task_ce(out, labels) + detection_bce(task_logits, task_vector)


def fisher_diagonal(
    model: SplitModel, dataset: Dataset, names: Iterable[str], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal of ``model`` (in eval mode) for the parameters ``names``: the mean over
    ``dataset``'s images of the squared gradient of each image's :func:`old_task_loss`."""
    names = list(names)
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"no parameters {missing} in the model")
    if len(dataset) == 0:
        raise ValueError("the Fisher diagonal needs at least one old-task image")
    was_training = model.training
    model.eval()
    flags = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in names)
    fisher = {n: torch.zeros_like(params[n]) for n in names}
    for x, labels, vector in DataLoader(dataset, batch_size=1, shuffle=False):
        model.zero_grad(set_to_none=True)
        old_task_loss(model, x.to(device), labels.to(device), vector.to(device)).backward()
        for n in names:
            if params[n].grad is not None:
                fisher[n] += params[n].grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    for n, p in params.items():
        p.requires_grad_(flags[n])
    model.train(was_training)
    return {n: f / len(dataset) for n, f in fisher.items()}


def ewc_parameter_names(model: SplitModel, modules: Sequence[str]) -> list[str]:
    """The names of the parameters of ``model``'s ``modules`` (of :data:`training.config.EWC_MODULES`, each a
    module of the edge client or of the server half), the ones an EWC penalty anchors."""
    unknown = [m for m in modules if m not in EWC_MODULES]
    if unknown:
        raise ValueError(f"EWC cannot anchor {unknown}: modules are {list(EWC_MODULES)}")
    prefixes = tuple(f"{'client' if hasattr(model.client, m) else 'server'}.{m}." for m in modules)
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


class EWCPenalty(nn.Module):
    """``weight / 2 * sum_i F_i (theta_i - theta*_i)^2``, ``F`` scaled to mean 1 over all anchored entries."""

    def __init__(self, anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], weight: float) -> None:
        super().__init__()
        if set(anchor) != set(fisher):
            raise ValueError("EWC needs one Fisher diagonal per anchored parameter")
        for name in anchor:
            if anchor[name].shape != fisher[name].shape:
                raise ValueError(f"EWC: {name}: anchor {tuple(anchor[name].shape)} and Fisher {tuple(fisher[name].shape)} differ in shape")
        total = sum(float(f.sum()) for f in fisher.values())
        count = sum(f.numel() for f in fisher.values())
        scale = count / total if total > 0 else 0.0
        self.names = sorted(anchor)
        self.weight = float(weight)
        for i, name in enumerate(self.names):
            self.register_buffer(f"anchor_{i}", anchor[name].detach().clone())
            self.register_buffer(f"fisher_{i}", fisher[name].detach() * scale)

    def forward(self, named_params: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for i, name in enumerate(self.names):
            anchor, fisher = getattr(self, f"anchor_{i}"), getattr(self, f"fisher_{i}")
            param = named_params[name]
            if param.shape != anchor.shape:  # a grown layer: its old entries come first
                param = param[tuple(slice(0, s) for s in anchor.shape)]
            term = (fisher * (param - anchor) ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            raise ValueError("EWC penalty over no parameters")
        return 0.5 * self.weight * total


class AddedTasksObjective(nn.Module):
    """CE of each added task where it applies (+ BCE of a latent task detector, when given) on decoded
    latents, training only the modules it holds: server-only addition (decoders, tails, detector), and the
    head warm-up of a full addition (decoders and tails on the latents of the still-deployed edge)."""

    def __init__(
        self, decoders: nn.ModuleList, tails: nn.ModuleList, detector: nn.Module | None = None, detection_weight: float = 0.0
    ) -> None:
        super().__init__()
        self.added = nn.ModuleDict({"decoders": decoders, "tails": tails, **({"detector": detector} if detector is not None else {})})
        self.added.requires_grad_(True)
        self.detection_weight = detection_weight

    @classmethod
    def server_only(cls, server: AddedTaskServer, detection_weight: float) -> "AddedTasksObjective":
        added = server.added_modules()
        return cls(added["decoders"], added["tails"], added["detector"], detection_weight)

    def forward(self, y_hat: torch.Tensor, labels: torch.Tensor, task_vector: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = [tail(dec(y_hat)) for dec, tail in zip(self.added["decoders"], self.added["tails"])]
        ce = masked_task_ce(logits, labels)
        if "detector" not in self.added:
            return ce, {"ce": ce.detach()}
        bce = F.binary_cross_entropy_with_logits(self.added["detector"](y_hat), task_vector)
        return ce + self.detection_weight * bce, {"ce": ce.detach(), "bce": bce.detach()}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return param_groups(self.added.named_parameters(), lr, weight_decay)


class FullAdditionObjective(nn.Module):
    """Full addition: detection BCE + masked per-task CE over all tasks + beta' * rate (+ EWC); stem frozen."""

    def __init__(self, model: SplitModel, beta: float, detection_weight: float, quantization: str, ewc: EWCPenalty | None) -> None:
        super().__init__()
        self.model = model
        model.decoder_quantization = quantization
        self.beta = beta
        self.detection_weight = detection_weight
        self.ewc = ewc
        model.requires_grad_(True)
        model.client.stem.requires_grad_(False)

    def train(self, mode: bool = True) -> "FullAdditionObjective":
        super().train(mode)
        self.model.client.stem.eval()
        return self

    def forward(self, x: torch.Tensor, labels: torch.Tensor, task_vector: torch.Tensor) -> tuple[torch.Tensor, dict]:
        out = self.model(x)
        ce = masked_task_ce(out["out"], labels)
        bce = detection_bce(out["task_logits"], task_vector)
        bpp = rate_bpp(out["likelihoods"]["y"], x.shape[0] * x.shape[2] * x.shape[3])
        loss = ce + self.detection_weight * bce + self.beta * bpp + self.model.aux_loss()
        logs = {"ce": ce.detach(), "bce": bce.detach(), "bpp": bpp.detach()}
        if self.ewc is not None:
            penalty = self.ewc(dict(self.model.named_parameters()))
            loss = loss + penalty
            logs["ewc"] = penalty.detach()
        return loss, logs

    def param_groups(self, lr: float, aux_lr: float, weight_decay: float, encoder_lr_scale: float) -> list[dict]:
        return stage2_groups(self.model, lr, aux_lr, weight_decay, encoder_lr_scale)
