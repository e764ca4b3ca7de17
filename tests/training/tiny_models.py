"""The smallest MANTiS the training tests build: ``mantis_stage1`` keyword arguments against a stride-8,
16-channel teacher layer (``teacher_cnn`` with channels 8, 8, 16, 16)."""

from __future__ import annotations

from typing import Any


def tiny_stage1(num_tasks: int = 3) -> dict[str, Any]:
    """``mantis_stage1`` keyword arguments of a tiny model with ``num_tasks`` tasks."""
    return {
        "num_tasks": num_tasks,
        "teacher_channels": 16,
        "teacher_stride": 8,
        "stem_channels": 8,
        "encoder_channels": [8, 8],
        "latent_channels": 4,
        "decoder_hidden": 8,
        "detector_hidden": 8,
        "film_hidden": 8,
    }
