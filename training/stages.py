"""The three training objectives, each a module returning ``(loss, logs)``, and their parameter groups.

* teacher: masked per-task cross-entropy;
* Stage 1 (head distillation): ``MSE(decoder(y_hat), teacher.head(x)) + beta * bpp`` (+ task-detection BCE
  so the shared stem, frozen later, already serves the detector); optionally the MSE weighted by the
  teacher's Grad-CAM (``training.saliency``); a pretrained stem (``model.stem_layer``: the teacher's first
  layers) is frozen here already;
* Stage 2: ``BCE(detection) + masked per-task CE (+ KD to the teacher) + beta' * bpp`` with the stem frozen
  and the encoder at a lower learning rate; optionally label smoothing in the CE, and learned weights of
  the per-task CEs and the rate (``training.balancing``).

Both bottleneck stages can ramp beta linearly from 0 over the first ``beta_warmup`` fraction of their
steps (the information-bottleneck warm-up): the training loop calls ``schedule(step, total)`` before
every step.

The entropy bottleneck's auxiliary loss (fitting its quantiles, which only it touches) is added to every
bottleneck stage's loss, with the quantiles in their own parameter group.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.balancing import FamoBalancer
from training.losses import detection_bce, masked_task_ce, masked_task_kd, per_task_ce, rate_bpp, saliency_weighted_mse
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


def warmup_factor(step: int, total: int, warmup: float) -> float:
    """Linear ramp from 0 to 1 over the first ``warmup`` fraction of ``total`` steps (1 when ``warmup`` is 0)."""
    ramp = warmup * total
    return 1.0 if ramp <= 0 else min(1.0, step / ramp)


def stage2_groups(model: nn.Module, lr: float, aux_lr: float, weight_decay: float, encoder_lr_scale: float) -> list[dict]:
    """Stage 2's optimiser groups: the encoder at ``lr * encoder_lr_scale``, detector, FiLM generator and
    server half at ``lr``, and the bottleneck (its auxiliary quantiles at ``aux_lr``); the stem is frozen."""
    c = model.client
    rest = list(c.task_detector.named_parameters()) + list(c.film_generator.named_parameters())
    rest += list(model.server.named_parameters())
    return (
        param_groups(c.encoder.named_parameters(), lr * encoder_lr_scale, weight_decay)
        + param_groups(rest, lr, weight_decay)
        + bottleneck_groups(model, lr, aux_lr)
    )


class TeacherObjective(nn.Module):
    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, x: torch.Tensor, labels: torch.Tensor, task_vector: torch.Tensor) -> tuple[torch.Tensor, dict]:
        ce = masked_task_ce(self.teacher(x), labels)
        return ce, _logs(ce=ce)


class Stage1Objective(nn.Module):
    """Head distillation through the bottleneck; FiLM is the identity."""

    def __init__(
        self, model: SplitModel, beta: float, detection_weight: float, quantization: str = "noise", beta_warmup: float = 0.0
    ) -> None:
        super().__init__()
        self.model = model
        model.decoder_quantization = quantization
        self.beta = beta
        self.beta_warmup = beta_warmup
        self.beta_scale = 1.0
        self.detection_weight = detection_weight
        model.requires_grad_(True)
        model.client.film_generator.requires_grad_(False)  # identity FiLM: unused
        if detection_weight == 0:
            model.client.task_detector.requires_grad_(False)
        if model.client.stem.pretrained:
            model.client.stem.requires_grad_(False)

    def train(self, mode: bool = True) -> "Stage1Objective":
        super().train(mode)
        if self.model.client.stem.pretrained:
            self.model.client.stem.eval()  # a teacher's layers: its batch-norm statistics stay the teacher's
        return self

    def schedule(self, step: int, total: int) -> None:
        self.beta_scale = warmup_factor(step, total, self.beta_warmup)

    def forward(
        self, x: torch.Tensor, target: torch.Tensor, task_vector: torch.Tensor, weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """``weight`` (B, h, w), when given, weights the squared error at each position (saliency)."""
        out = self.model(x)
        if weight is None:
            mse = F.mse_loss(out["out"].float(), target.float())
        else:
            mse = saliency_weighted_mse(out["out"], target, weight)
        bpp = rate_bpp(out["likelihoods"]["y"], x.shape[0] * x.shape[2] * x.shape[3])
        aux = self.model.aux_loss()
        loss = mse + self.beta * self.beta_scale * bpp + aux
        logs = _logs(mse=mse, bpp=bpp)
        if self.detection_weight:
            bce = detection_bce(out["task_logits"], task_vector)
            loss = loss + self.detection_weight * bce
            logs["bce"] = bce.detach()
        return loss, logs

    def param_groups(self, lr: float, aux_lr: float, weight_decay: float) -> list[dict]:
        m = self.model
        return param_groups(list(m.client.named_parameters()) + list(m.server.named_parameters()), lr, weight_decay) + bottleneck_groups(
            m, lr, aux_lr
        )


class Stage2Objective(nn.Module):
    """Task-aware fine-tuning: detection BCE + masked per-task CE (+ KD) + beta' * rate; stem frozen.

    ``freeze_tails`` keeps the per-task tails (the teacher's layers after the cut) as the teacher has them,
    batch-norm statistics included: with a pretrained teacher and few images, fine-tuning them on the
    teacher's top-1 labels teaches them the training images' few classes and loses the rest.

    ``balancer`` (names: the task names, then ``rate``) replaces the pooled CE + beta' * rate by
    ``mean_t(w_t * CE_t) + w_rate * beta' * rate`` with its learned weights (mean 1).
    """

    def __init__(
        self,
        model: SplitModel,
        beta: float,
        detection_weight: float,
        kd_weight: float,
        kd_temperature: float,
        quantization: str = "noise",
        *,
        beta_warmup: float = 0.0,
        label_smoothing: float = 0.0,
        balancer: FamoBalancer | None = None,
        freeze_tails: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.freeze_tails = freeze_tails
        model.decoder_quantization = quantization
        self.beta = beta
        self.beta_warmup = beta_warmup
        self.beta_scale = 1.0
        self.label_smoothing = label_smoothing
        self.balancer = balancer
        self.detection_weight = detection_weight
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        model.requires_grad_(True)  # whatever an earlier stage froze in the modules this model copied
        model.client.stem.requires_grad_(False)
        if model.client.film_mode != "film":
            model.client.film_generator.requires_grad_(False)
        if freeze_tails:
            model.server.tails.requires_grad_(False)

    def train(self, mode: bool = True) -> "Stage2Objective":
        super().train(mode)
        self.model.client.stem.eval()  # frozen: its batch-norm statistics stay as Stage 1 left them
        if self.freeze_tails:
            self.model.server.tails.eval()  # the teacher's own layers, batch-norm statistics included
        return self

    def schedule(self, step: int, total: int) -> None:
        self.beta_scale = warmup_factor(step, total, self.beta_warmup)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, task_vector: torch.Tensor, *teacher_logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        out = self.model(x)
        bce = detection_bce(out["task_logits"], task_vector)
        bpp = rate_bpp(out["likelihoods"]["y"], x.shape[0] * x.shape[2] * x.shape[3])
        aux = self.model.aux_loss()
        beta = self.beta * self.beta_scale
        if self.balancer is None:
            ce = masked_task_ce(out["out"], labels, self.label_smoothing)
            loss = ce + self.detection_weight * bce + beta * bpp + aux
            logs = _logs(ce=ce, bce=bce, bpp=bpp)
        else:
            task_ce, present = per_task_ce(out["out"], labels, self.label_smoothing)
            w = self.balancer.weights().to(bpp.device)
            ce = (w[:-1] * task_ce).mean()
            loss = ce + self.detection_weight * bce + w[-1] * beta * bpp + aux
            logs = _logs(ce=ce, bce=bce, bpp=bpp, **{f"w_{n}": v for n, v in zip(self.balancer.names, w)})
            if self.training:
                terms = torch.cat([task_ce.detach(), bpp.detach()[None]])  # log(beta' * bpp) changes as log(bpp)
                # a task absent from this batch keeps its previous log-loss (no change)
                keep = torch.cat([present, present.new_ones(1)])
                terms = torch.where(keep, terms, self.balancer.prev_log.exp().to(terms.device))
                self.balancer.update(terms)
        if teacher_logits:
            kd = masked_task_kd(out["out"], teacher_logits, labels, self.kd_temperature)
            loss = loss + self.kd_weight * kd
            logs["kd"] = kd.detach()
        return loss, logs

    def param_groups(self, lr: float, aux_lr: float, weight_decay: float, encoder_lr_scale: float) -> list[dict]:
        return stage2_groups(self.model, lr, aux_lr, weight_decay, encoder_lr_scale)
