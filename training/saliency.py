"""Saliency-guided distortion for Stage 1: a Grad-CAM of the teacher weights the distillation MSE.

Grad-CAM (Selvaraju et al., 2017) at the distilled layer: with ``A`` the teacher's head features
(B, C, h, w) and ``s`` the sum, over the tasks that apply to an image, of the teacher's logit for the true
label, the map is ``relu(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of ``ds/dA_c``. It marks
the positions of the distilled features that the teacher's task heads rely on. Stage 1 then weights the
squared error at each position by ``(1 - strength) + strength * cam / mean(cam)`` (mean 1 per image, so
the MSE keeps its scale against beta * rate); an image whose map is zero everywhere is weighted uniformly.
This follows the saliency-guided distortion of the MANTiS paper, computed on the fly from the frozen
teacher instead of from CAM files prepared beforehand.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def teacher_grad_cam(teacher: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, cam)``: the teacher's head features (detached) and their Grad-CAM (B, h, w), >= 0."""
    with torch.enable_grad():
        features = teacher.head(x).detach().float().requires_grad_(True)
        logits = teacher.tail(features)
        score = features.new_zeros(())
        for t, task_logits in enumerate(logits):
            applies = labels[:, t] >= 0
            picked = task_logits.float().gather(1, labels[:, t].clamp_min(0)[:, None]).squeeze(1)
            score = score + (picked * applies).sum()
        (grads,) = torch.autograd.grad(score, features)
    alpha = grads.mean((2, 3), keepdim=True)
    cam = F.relu((alpha * features).sum(1))
    return features.detach(), cam.detach()


def saliency_weight(cam: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-position weights ``(1 - strength) + strength * cam / mean(cam)``, mean 1 per image."""
    mean = cam.mean((1, 2), keepdim=True)
    normalised = torch.where(mean > 0, cam / mean.clamp_min(1e-12), torch.ones_like(cam))
    return (1 - strength) + strength * normalised
