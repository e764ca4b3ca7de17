"""Learned weights for the terms of a loss (FAMO-style adaptive balancing).

FAMO (Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023) keeps one log-weight
``xi_i`` per loss term and, after every step, moves the weights towards the terms whose log-loss fell the
least: with ``z = softmax(xi)`` and ``delta_i = log l_i(before) - log l_i(after)``, the update direction is
``J^T delta`` (``J`` the softmax Jacobian, i.e. ``z_i (delta_i - sum_j z_j delta_j)``), applied with Adam
and a weight decay that pulls ``xi`` back towards equal weights.

Here ``delta`` is the change of the terms' log-losses between consecutive steps (FAMO proper evaluates
the same batch again after the step; that costs a second forward pass per step), and the weights scale
the fixed weights of the terms rather than replace them: term ``i`` enters the loss as
``K * z_i * fixed_i * l_i`` (``K`` terms), so equal log-weights give back the fixed-weight loss and the
rate's fixed weight beta' still sets the operating point. ``decay`` shrinks ``xi`` by that fraction every
step. All state lives in buffers, so it is part of the objective's resume state (under DDP each rank
updates from its own batch's losses).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class FamoBalancer(nn.Module):
    """Weights ``K * softmax(xi)`` (mean 1) for ``K`` named loss terms, updated from their log-losses."""

    def __init__(self, names: Sequence[str], lr: float = 0.025, decay: float = 0.001, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        super().__init__()
        if len(names) < 2:
            raise ValueError(f"balancing needs at least two loss terms, got {list(names)}")
        self.names = list(names)
        self.lr, self.decay, self.betas = lr, decay, betas
        k = len(self.names)
        self.register_buffer("xi", torch.zeros(k))
        self.register_buffer("prev_log", torch.zeros(k))
        self.register_buffer("adam_m", torch.zeros(k))
        self.register_buffer("adam_v", torch.zeros(k))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def weights(self) -> torch.Tensor:
        """The current weights, detached, mean 1."""
        return len(self.names) * torch.softmax(self.xi, 0)

    def named_weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.names, self.weights())}

    @torch.no_grad()
    def update(self, losses: torch.Tensor) -> None:
        """Record this step's loss terms (``K`` values, positive) and move the log-weights."""
        log_now = losses.detach().float().clamp_min(1e-8).log().to(self.xi.device)
        if int(self.steps) > 0:
            delta = self.prev_log - log_now
            z = torch.softmax(self.xi, 0)
            grad = z * (delta - (z * delta).sum())
            b1, b2 = self.betas
            t = int(self.steps)
            self.adam_m.mul_(b1).add_(grad, alpha=1 - b1)
            self.adam_v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            m_hat = self.adam_m / (1 - b1**t)
            v_hat = self.adam_v / (1 - b2**t)
            self.xi.mul_(1 - self.decay).sub_(self.lr * m_hat / (v_hat.sqrt() + 1e-8))
        self.prev_log.copy_(log_now)
        self.steps += 1
