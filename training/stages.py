"""The three training objectives, each a module returning ``(loss, logs)``, and their parameter groups.

* teacher: masked per-task cross-entropy;
* Stage 1 (head distillation): ``MSE(decoder(y_hat), teacher.head(x)) + beta * bpp`` (+ task-detection BCE
  so the shared stem, frozen later, already serves the detector);
* Stage 2: ``BCE(detection) + masked per-task CE (+ KD to the teacher) + beta' * bpp`` with the stem frozen
  and the encoder at a lower learning rate.

The entropy bottleneck's auxiliary loss (fitting its quantiles, which only it touches) is added to every
bottleneck stage's loss, with the quantiles in their own parameter group.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.losses import detection_bce, masked_task_ce, masked_task_kd, rate_bpp
from training.models.mantis import SplitModel


def param_groups(named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on conv/linear weights only, none on biases and norm parameters."""
    decay, no_decay = [], []
    for _, p in named:
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    return groups


def bottleneck_groups(model: SplitModel, lr: float, aux_lr: float) -> list[dict]:
    """The entropy model's density parameters at ``lr``, its quantiles (auxiliary loss only) at ``aux_lr``."""
    eb = model.entropy_bottleneck
    main = [p for n, p in eb.named_parameters() if not n.endswith("quantiles")]
    return [{"params": main, "lr": lr, "weight_decay": 0.0}, {"params": [eb.quantiles], "lr": aux_lr, "weight_decay": 0.0}]


def _logs(**terms: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in terms.items()}


class TeacherObjective(nn.Module):
    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, x: torch.Tensor, labels: torch.Tensor, task_vector: torch.Tensor) -> tuple[torch.Tensor, dict]:
        ce = masked_task_ce(self.teacher(x), labels)
        return ce, _logs(ce=ce)


class Stage1Objective(nn.Module):
    """Head distillation through the bottleneck; FiLM is the identity."""

    def __init__(self, model: SplitModel, beta: float, detection_weight: float, quantization: str = "noise") -> None:
        super().__init__()
        self.model = model
        model.decoder_quantization = quantization
        self.beta = beta
        self.detection_weight = detection_weight
        model.requires_grad_(True)
        model.client.film_generator.requires_grad_(False)  # identity FiLM: unused
        if detection_weight == 0:
            model.client.task_detector.requires_grad_(False)

    def forward(self, x: torch.Tensor, target: torch.Tensor, task_vector: torch.Tensor) -> tuple[torch.Tensor, dict]:
        out = self.model(x)
        mse = F.mse_loss(out["out"].float(), target.float())
        bpp = rate_bpp(out["likelihoods"]["y"], x.shape[0] * x.shape[2] * x.shape[3])
        aux = self.model.aux_loss()
        loss = mse + self.beta * bpp + aux
        logs = _logs(mse=mse, bpp=bpp)
        if self.detection_weight:
            bce = detection_bce(out["task_logits"], task_vector)
            loss = loss + self.detection_weight * bce
            logs["bce"] = bce.detach()
        return loss, logs

    def param_groups(self, lr: float, aux_lr: float, weight_decay: float) -> list[dict]:
        m = self.model
        return param_groups(list(m.client.named_parameters()) + list(m.server.named_parameters()), lr, weight_decay) + bottleneck_groups(m, lr, aux_lr)


class Stage2Objective(nn.Module):
    """Task-aware fine-tuning: detection BCE + masked per-task CE (+ KD) + beta' * rate; stem frozen."""

    def __init__(
        self, model: SplitModel, beta: float, detection_weight: float, kd_weight: float, kd_temperature: float, quantization: str = "noise"
    ) -> None:
        super().__init__()
        self.model = model
        model.decoder_quantization = quantization
        self.beta = beta
        self.detection_weight = detection_weight
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        model.requires_grad_(True)  # whatever an earlier stage froze in the modules this model copied
        model.client.stem.requires_grad_(False)
        if model.client.film_mode != "film":
            model.client.film_generator.requires_grad_(False)

    def train(self, mode: bool = True) -> "Stage2Objective":
        super().train(mode)
        self.model.client.stem.eval()  # frozen: its batch-norm statistics stay as Stage 1 left them
        return self

    def forward(self, x: torch.Tensor, labels: torch.Tensor, task_vector: torch.Tensor, *teacher_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        out = self.model(x)
        ce = masked_task_ce(out["out"], labels)
        bce = detection_bce(out["task_logits"], task_vector)
        bpp = rate_bpp(out["likelihoods"]["y"], x.shape[0] * x.shape[2] * x.shape[3])
        aux = self.model.aux_loss()
        loss = ce + self.detection_weight * bce + self.beta * bpp + aux
        logs = _logs(ce=ce, bce=bce, bpp=bpp)
        if teacher_logits:
            kd = masked_task_kd(out["out"], teacher_logits, labels, self.kd_temperature)
            loss = loss + self.kd_weight * kd
            logs["kd"] = kd.detach()
        return loss, logs

    def param_groups(self, lr: float, aux_lr: float, weight_decay: float, encoder_lr_scale: float) -> list[dict]:
        c = self.model.client
        rest = list(c.task_detector.named_parameters()) + list(c.film_generator.named_parameters())
        rest += list(self.model.server.named_parameters())
        return (
            param_groups(c.encoder.named_parameters(), lr * encoder_lr_scale, weight_decay)
            + param_groups(rest, lr, weight_decay)
            + bottleneck_groups(self.model, lr, aux_lr)
        )
