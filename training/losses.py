"""Loss terms of the training stages (composed as weighted sums in ``training.stages``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def rate_bpp(likelihoods: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """Estimated rate in bits per input pixel: ``sum(-log2 p) / (batch * H * W)``."""
    return likelihoods.clamp_min(1e-9).log2().sum().neg() / num_pixels


def masked_task_ce(logits: Sequence[torch.Tensor], labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy averaged over the (image, task) pairs where the task applies (label >= 0)."""
    total = logits[0].new_zeros(())
    count = 0
    for t, task_logits in enumerate(logits):
        keep = labels[:, t] >= 0
        n = int(keep.sum())
        if n:
            total = total + F.cross_entropy(task_logits[keep].float(), labels[keep, t], reduction="sum", label_smoothing=label_smoothing)
            count += n
        else:  # keep every head in the graph (DDP expects a gradient for every parameter)
            total = total + 0.0 * task_logits.sum()
    return total / max(count, 1)


def per_task_ce(logits: Sequence[torch.Tensor], labels: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per task, the cross-entropy averaged over the images it applies to, and whether any did.

    Returns ``(losses, present)``, both of length ``len(logits)``; a task absent from the batch has loss
    ``0 * sum(logits)`` (in the graph, no gradient) and ``present`` False.
    """
    losses, present = [], []
    for t, task_logits in enumerate(logits):
        keep = labels[:, t] >= 0
        if bool(keep.any()):
            losses.append(F.cross_entropy(task_logits[keep].float(), labels[keep, t], label_smoothing=label_smoothing))
            present.append(True)
        else:
            losses.append(0.0 * task_logits.float().sum())
            present.append(False)
    return torch.stack(losses), torch.tensor(present, device=losses[0].device)


def saliency_weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mean(weight * (prediction - target)^2)`` with a per-position ``weight`` (B, H, W) shared by the channels."""
    return (weight[:, None] * (prediction.float() - target.float()).square()).mean()


def masked_task_kd(
    logits: Sequence[torch.Tensor], teacher_logits: Sequence[torch.Tensor], labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton KD (T^2-scaled KL to the teacher's softened outputs) over the pairs where the task applies."""
    total = logits[0].new_zeros(())
    count = 0
    for t, (s, te) in enumerate(zip(logits, teacher_logits)):
        keep = labels[:, t] >= 0
        n = int(keep.sum())
        if n:
            log_p = F.log_softmax(s[keep].float() / temperature, dim=1)
            q = F.softmax(te[keep].float() / temperature, dim=1)
            total = total + F.kl_div(log_p, q, reduction="sum") * temperature**2
            count += n
        else:
            total = total + 0.0 * s.sum()
    return total / max(count, 1)


def detection_bce(task_logits: torch.Tensor, task_vector: torch.Tensor) -> torch.Tensor:
    """Multi-label task-detection loss."""
    return F.binary_cross_entropy_with_logits(task_logits.float(), task_vector.float())
