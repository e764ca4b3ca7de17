"""Rebuild a model from a checkpoint: architecture from its metadata, weights loaded strictly."""

from __future__ import annotations

import os
from typing import Any

import torch.nn as nn
from compressai.models import CompressionModel

from training.checkpoint import CheckpointError, read_checkpoint
from training.models import create_model


def load_model(path: str | os.PathLike, stage: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Return ``(model, meta)`` in eval mode; raise ``CheckpointError`` naming the file on any mismatch.

    For ``stage1`` / ``stage2`` checkpoints the entropy bottleneck's integer tables are the ones stored
    in the checkpoint (``update()`` only fills them when a checkpoint lacks them), so ``compress`` works.
    """
    tensors, meta = read_checkpoint(path, stage)
    spec = meta["model"]
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs"), dict):
        raise CheckpointError(f"checkpoint {path}: metadata 'model' must be {{'name': str, 'kwargs': dict}}")
    try:
        model = create_model(spec["name"], **spec["kwargs"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path}: cannot build model {spec['name']!r} from its metadata ({exc})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not match model {spec['name']!r} ({exc})") from None
    if isinstance(model, CompressionModel):
        model.update(force=False)
    model.eval()
    return model, meta
