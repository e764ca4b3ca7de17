"""The server half: decoded latent ``y_hat`` -> per-task logits, as ONNX (dynamic batch) and ``.pt2``.

Outputs are named ``logits_<task>`` in task order. ``server.pt2`` is ``torch.export.save`` of the same
module with a dynamic batch dimension, so the server's PyTorch backend loads it with ``torch.export.load``
and needs no model code.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

MAX_BATCH = 1024


class ServerHalf(nn.Module):
    """``(B, C, h, w)`` float latent -> tuple of ``(B, n_labels_t)`` logits, one per task."""

    def __init__(self, server: nn.Module) -> None:
        super().__init__()
        self.server = server

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.server(latent))


class Fp16ServerHalf(nn.Module):
    """The server half computing in float16 with float32 inputs and outputs (the source of an fp16
    TensorRT engine built as a strongly typed network)."""

    def __init__(self, server: nn.Module) -> None:
        super().__init__()
        self.server = copy.deepcopy(server).half()

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(o.float() for o in self.server(latent.half()))


def output_names(task_names: Sequence[str]) -> list[str]:
    return [f"logits_{t}" for t in task_names]


def _batch_dim() -> dict:
    return {"latent": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


def export_onnx(module: nn.Module, latent_shape: Sequence[int], task_names: Sequence[str], path: Path) -> None:
    """``torch.onnx.export`` (dynamo) with input ``latent`` of shape ``(batch, C, h, w)``."""
    example = torch.zeros(2, *latent_shape)
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        dynamo=True,
        input_names=["latent"],
        output_names=output_names(task_names),
        dynamic_shapes=_batch_dim(),
        verbose=False,
        external_data=False,
    )


def export_pt2(module: nn.Module, latent_shape: Sequence[int], path: Path) -> None:
    """``torch.export.save`` of the server half with a dynamic batch dimension."""
    example = torch.zeros(2, *latent_shape)
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))
