"""The server half: decoded latent ``y_hat`` -> per-task logits, as ONNX (dynamic batch) and ``.pt2``.

Outputs are named ``logits_<task>`` in task order, followed, for a server half that detects tasks added on
the server only (``training.models.added_tasks.AddedTaskServer``), by ``detect_logits`` (one logit per
such task; see :class:`DetectingServerHalf`). ``server.pt2`` is ``torch.export.save`` of the same
module with a dynamic batch dimension, so the server's PyTorch backend loads it with ``torch.export.load``
and needs no model code.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from codec.manifest import SERVER_INPUT

MAX_BATCH = 1024


class DetectingServerHalf(nn.Module):
    """A server half that detects its added tasks itself: the task logits, then ``detect(latent)``."""

    def __init__(self, server: nn.Module) -> None:
        super().__init__()
        self.server = server

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.server(latent)) + (self.server.detect(latent),)


def server_half(server: nn.Module) -> nn.Module:
    """The module to export: ``server`` itself, or :class:`DetectingServerHalf` when it detects tasks."""
    return DetectingServerHalf(server) if hasattr(server, "detect") else server


class Fp16ServerHalf(nn.Module):
    """The server half computing in float16 with float32 inputs and outputs (the source of an fp16
    TensorRT engine built as a strongly typed network)."""

    def __init__(self, server: nn.Module) -> None:
        super().__init__()
        self.server = copy.deepcopy(server).half()

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(o.float() for o in self.server(latent.half()))


def _batch_dim() -> tuple[dict, ...]:
    """Dynamic batch on the one input (positional, whatever the module calls its argument)."""
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def export_onnx(module: nn.Module, latent_shape: Sequence[int], output_names: Sequence[str], path: Path) -> None:
    """``torch.onnx.export`` (dynamo) with input ``latent`` of shape ``(batch, C, h, w)`` and outputs
    ``output_names`` (``Manifest.server_outputs``)."""
    example = torch.zeros(2, *latent_shape)
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        dynamo=True,
        input_names=[SERVER_INPUT],
        output_names=list(output_names),
        dynamic_shapes=_batch_dim(),
        verbose=False,
        external_data=False,
    )


def export_pt2(module: nn.Module, latent_shape: Sequence[int], path: Path) -> None:
    """``torch.export.save`` of the server half with a dynamic batch dimension."""
    example = torch.zeros(2, *latent_shape)
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))
