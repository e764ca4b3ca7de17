"""Checkpoints: safetensors weights with a JSON description of how to rebuild and feed the model.

A checkpoint is one ``.safetensors`` file. Its metadata entry ``"mantis"`` holds a JSON object with at
least ``format`` (``CHECKPOINT_FORMAT``), ``stage`` (``teacher``, ``stage1`` or ``stage2``), ``model``
(constructor name and keyword arguments), ``tasks`` (names and label names) and ``preprocessing``
(:class:`codec.manifest.Preprocessing`, the schema bundles carry too). Files are written atomically, so an interrupted
write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from codec.files import atomic_write
from codec.manifest import ManifestError, Preprocessing

log = logging.getLogger("mantis.training")

CHECKPOINT_FORMAT = "mantis-checkpoint/1"
STAGES = ("teacher", "stage1", "stage2")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not describe a model this code can build."""


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write weights and metadata atomically. ``meta['stage']`` must be one of ``STAGES``."""
    if meta.get("stage") not in STAGES:
        raise CheckpointError(f"checkpoint stage must be one of {STAGES}, got {meta.get('stage')!r}")
    meta = {"format": CHECKPOINT_FORMAT, **meta}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"mantis": json.dumps(meta)}))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's metadata alone (no tensors are read); ``CheckpointError`` when it has none."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("mantis")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from None
    if raw is None:
        raise CheckpointError(f"checkpoint {path}: no MANTiS metadata (was it written by this project?)")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path}: metadata is not valid JSON ({exc})") from None


def read_checkpoint(path: str | os.PathLike, stage: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load weights and metadata; raise ``CheckpointError`` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    for key in ("stage", "model", "tasks", "preprocessing"):
        if key not in meta:
            raise CheckpointError(f"checkpoint {path}: metadata lacks {key!r}")
    if stage is not None and meta["stage"] != stage:
        raise CheckpointError(f"checkpoint {path}: holds a {meta['stage']} model, a {stage} checkpoint is needed")
    meta["preprocessing"] = _preprocessing(meta["preprocessing"], path)
    return tensors, meta


def _preprocessing(doc: Any, path: Path) -> dict[str, Any]:
    """The checkpoint's preprocessing in the bundle schema (:class:`codec.manifest.Preprocessing`).

    Checkpoints written before the schema existed call the resize method ``interpolation`` and store no
    ``layout``; they are read with those two keys renamed/added (NCHW, the only layout training ever
    wrote), and the upgrade is logged."""
    if isinstance(doc, dict) and "interpolation" in doc and "resize" not in doc:
        log.info("checkpoint %s: preprocessing metadata in the pre-schema form (interpolation -> resize, layout NCHW)", path)
        doc = {
            **{k: v for k, v in doc.items() if k != "interpolation"},
            "resize": doc["interpolation"],
            "layout": doc.get("layout", "NCHW"),
        }
    try:
        return Preprocessing.from_dict(doc, f"checkpoint {path}: preprocessing").to_dict()
    except ManifestError as exc:
        raise CheckpointError(str(exc)) from None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as exc:
        raise CheckpointError(f"teacher weights {path}: unreadable ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"teacher weights {path}: expected a state dict of tensors")
    return state
