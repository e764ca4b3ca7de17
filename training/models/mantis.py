"""MANTiS: a FiLM-conditioned split model with a factorized-prior bottleneck.

Data flow (the split is at the bottleneck; each half is its own module)::

            EdgeClient (runs on the device)                        |      server half (runs remotely)
  x ─► SharedStem ─► f ─┬─────────────► FiLMedEncoder ─► y ─► Q ─► rANS ─► bytes ─► y_hat ─┬► TaskDecoder_1 ─► TaskTail_1 ─► logits_1
                        │                     ▲ (gamma, beta)                              ├► TaskDecoder_2 ─► TaskTail_2 ─► logits_2
                        └► TaskDetector ─► p ─► FiLMGenerator                              └► ...
                             │
                             └──── task mask (p > 0.5) travels in the bitstream header

The stem is either the client's own (trained in Stage 1) or a pretrained teacher's first layers, frozen
(``TeacherStem``). Stage 1 uses the same client with FiLM switched to identity and a single ``DistillDecoder`` server that
regresses a shallow teacher layer (head distillation). Stage 2 replaces the server by per-task decoders
and tails. The entropy model is CompressAI's ``EntropyBottleneck``: while training, the rate comes from the
likelihoods of the latent plus uniform noise, and the server half sees either that noisy latent (Stage 1's
default) or (Stage 2's default) the latent rounded around the learned medians with straight-through
gradients, i.e. exactly the values it gets at inference; at inference both are the rounded latent.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
from compressai.ops import quantize_ste

from training.models.registry import create_model, register_model

FILM_MODES = ("film", "identity")
DECODER_QUANTIZATIONS = ("noise", "ste")


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SharedStem(nn.Module):
    """Stride-2 stem shared by the task detector and the encoder, trained in Stage 1; frozen in Stage 2."""

    pretrained = False

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(conv_bn_relu(3, channels, 5, 2), conv_bn_relu(channels, channels, 3, 1))
        self.out_channels = channels
        self.stride = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TeacherStem(nn.Module):
    """The stem as a pretrained teacher's own first layers, up to a named layer (``model.stem_layer``).

    The device runs the teacher's first layers unchanged and the bottleneck encoder starts from their
    output: bottleneck injection into a pretrained network (Eshratifar et al., "BottleNet", 2019; Matsubara
    et al., "Supervised Compression for Resource-Constrained Edge Computing Systems", WACV 2022). The
    layers are frozen in both stages, batch-norm statistics included: they are the teacher's weights.
    """

    pretrained = True

    def __init__(self, layers: nn.Sequential, channels: int, stride: int) -> None:
        super().__init__()
        self.layers = layers
        self.out_channels = channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    @torch.no_grad()
    def load_from_teacher_head(self, head: nn.Sequential) -> None:
        """Copies the weights of the trained teacher's ``head`` (cut at this stem's layer or a deeper one):
        this stem's layers must be its first layers, weight for weight, and give the same output."""
        prefix = nn.Sequential(*list(head.children())[: len(self.layers)])
        own, theirs = self.layers.state_dict(), prefix.state_dict()
        differ = sorted(k for k in own.keys() | theirs.keys() if k not in own or k not in theirs or own[k].shape != theirs[k].shape)
        if differ:
            raise ValueError(f"the teacher's head does not begin with this stem's layers (parameters that differ: {differ[:5]})")
        self.layers.load_state_dict(theirs)
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        was = (self.training, prefix.training)
        self.eval(), prefix.eval()
        same = torch.allclose(self.layers(x), prefix(x), atol=1e-5)
        self.train(was[0]), prefix.train(was[1])
        if not same:
            raise ValueError("the stem's layers do not reproduce the teacher's first layers")


class TaskDetector(nn.Module):
    """Multi-label task detector on stem features; returns one logit per task."""

    def __init__(self, in_channels: int, num_tasks: int, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(in_channels, hidden, 3, 2), conv_bn_relu(hidden, hidden, 3, 2))
        self.classifier = nn.Linear(hidden, num_tasks)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = self.features(f).mean(dim=(2, 3))
        return self.classifier(h)


class FiLMGenerator(nn.Module):
    """Maps a task vector to per-channel (gamma, beta) for every FiLMed block.

    The last layer starts at zero, so a fresh generator is the identity modulation (gamma=1, beta=0).
    """

    def __init__(self, num_tasks: int, channels: Sequence[int], hidden: int = 64) -> None:
        super().__init__()
        self.channels = list(channels)
        self.net = nn.Sequential(nn.Linear(num_tasks, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * sum(channels)))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, task_vector: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        params = self.net(task_vector)
        out = []
        start = 0
        for c in self.channels:
            d_gamma = params[:, start : start + c]
            beta = params[:, start + c : start + 2 * c]
            start += 2 * c
            out.append(((1.0 + d_gamma)[:, :, None, None], beta[:, :, None, None]))
        return out


class FiLMResidualBlock(nn.Module):
    """Strided residual block whose second conv output is modulated by FiLM before the skip sum."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, 3, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.conv2(self.conv1(x))
        if film is not None:
            gamma, beta = film
            h = gamma * h + beta
        return F.relu(h + self.skip(x))


class FiLMedEncoder(nn.Module):
    """Residual FiLM blocks followed by a linear projection to the latent ``y``."""

    def __init__(self, in_channels: int, channels: Sequence[int], latent_channels: int) -> None:
        super().__init__()
        blocks = []
        c = in_channels
        for c_out in channels:
            blocks.append(FiLMResidualBlock(c, c_out, 2))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.project = nn.Conv2d(c, latent_channels, 3, 1, 1)
        self.channels = list(channels)

    def forward(self, f: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        h = f
        for i, block in enumerate(self.blocks):
            h = block(h, None if film is None else film[i])
        return self.project(h)


class EdgeClient(nn.Module):
    """Everything that runs on the device: image -> (latent ``y``, task logits).

    ``film_mode="film"`` conditions the encoder on the detector's probabilities, or on ``task_vector`` when
    one is given (the oracle ablation); ``"identity"`` leaves the encoder unmodulated (Stage 1, No-FiLM).
    """

    def __init__(
        self,
        num_tasks: int,
        stem_channels: int = 32,
        encoder_channels: Sequence[int] = (64, 64),
        latent_channels: int = 32,
        detector_hidden: int = 64,
        film_hidden: int = 64,
        film_mode: str = "film",
        stem: SharedStem | TeacherStem | None = None,
    ) -> None:
        super().__init__()
        if film_mode not in FILM_MODES:
            raise ValueError(f"film_mode must be one of {FILM_MODES}, got {film_mode!r}")
        self.num_tasks = num_tasks
        self.film_mode = film_mode
        self.stem = SharedStem(stem_channels) if stem is None else stem
        self.task_detector = TaskDetector(self.stem.out_channels, num_tasks, detector_hidden)
        self.film_generator = FiLMGenerator(num_tasks, encoder_channels, film_hidden)
        self.encoder = FiLMedEncoder(self.stem.out_channels, encoder_channels, latent_channels)
        self.latent_channels = latent_channels
        self.stride = self.stem.stride * 2 ** len(encoder_channels)

    def forward(self, x: torch.Tensor, task_vector: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.stem(x)
        task_logits = self.task_detector(f)
        film = None
        if self.film_mode == "film":
            condition = torch.sigmoid(task_logits) if task_vector is None else task_vector.to(f.dtype)
            film = self.film_generator(condition)
        return self.encoder(f, film), task_logits


def upsampler(c_in: int, c_out: int, factor: int, hidden: int) -> nn.Sequential:
    """Conv + PixelShuffle stages that grow the latent back to the teacher layer's resolution."""
    layers: list[nn.Module] = [conv_bn_relu(c_in, hidden, 3, 1)]
    while factor > 1:
        layers += [nn.Conv2d(hidden, hidden * 4, 3, 1, 1), nn.PixelShuffle(2), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        factor //= 2
    layers.append(nn.Conv2d(hidden, c_out, 3, 1, 1))
    return nn.Sequential(*layers)


class DistillDecoder(nn.Module):
    """Stage 1 server half: ``y_hat`` -> an estimate of the teacher's shallow features."""

    def __init__(self, latent_channels: int, out_channels: int, upsample: int, hidden: int = 96) -> None:
        super().__init__()
        self.net = upsampler(latent_channels, out_channels, upsample, hidden)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.net(y_hat)


class TaskServer(nn.Module):
    """Stage 2 server half: one decoder and one tail per task; returns one logits tensor per task."""

    def __init__(self, decoders: Sequence[nn.Module], tails: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(decoders) != len(tails):
            raise ValueError("one decoder and one tail per task")
        self.decoders = nn.ModuleList(decoders)
        self.tails = nn.ModuleList(tails)

    def forward(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(tail(dec(y_hat)) for dec, tail in zip(self.decoders, self.tails))


class SplitModel(CompressionModel):
    """Client, bottleneck and server half, following CompressAI's forward/compress/decompress contract.

    ``forward`` is the training path (likelihoods of the noisy latent, server outputs); ``compress`` returns
    the rANS payload of every image plus the tasks its detector found active (``active_tasks``);
    ``decompress`` runs the server half on decoded latents.

    ``decoder_quantization`` says what the server half sees in training mode: ``"noise"`` (the noisy latent,
    CompressAI's default) or ``"ste"`` (the latent rounded around the medians, gradients passed straight
    through). Noise is a poor stand-in for rounding once most latent values are within a step of their
    median, which is where a low rate puts them; ``"ste"`` trains the server on what it will decode.
    """

    def __init__(self, client: EdgeClient, server: nn.Module, decoder_quantization: str = "noise") -> None:
        super().__init__()
        self.client = client
        self.entropy_bottleneck = EntropyBottleneck(client.latent_channels)
        self.server = server
        self.decoder_quantization = decoder_quantization

    @property
    def decoder_quantization(self) -> str:
        return self._decoder_quantization

    @decoder_quantization.setter
    def decoder_quantization(self, mode: str) -> None:
        if mode not in DECODER_QUANTIZATIONS:
            raise ValueError(f"decoder_quantization must be one of {DECODER_QUANTIZATIONS}, got {mode!r}")
        self._decoder_quantization = mode

    def forward(self, x: torch.Tensor, task_vector: torch.Tensor | None = None) -> dict:
        y, task_logits = self.client(x, task_vector)
        with torch.autocast(device_type=y.device.type, enabled=False):  # the entropy model stays in float32
            y = y.float()
            y_hat, y_likelihoods = self.entropy_bottleneck(y)
            if self.training and self.decoder_quantization == "ste":
                medians = self.entropy_bottleneck._get_medians().detach()
                y_hat = quantize_ste(y - medians) + medians
        return {"y_hat": y_hat, "likelihoods": {"y": y_likelihoods}, "task_logits": task_logits, "out": self.server(y_hat)}

    @torch.no_grad()
    def compress(self, x: torch.Tensor, task_vector: torch.Tensor | None = None) -> dict:
        y, task_logits = self.client(x, task_vector)
        strings = self.entropy_bottleneck.compress(y)
        return {"strings": [strings], "shape": tuple(y.shape[-2:]), "active_tasks": active_tasks_from_logits(task_logits), "y": y}

    @torch.no_grad()
    def decompress(self, strings: list, shape: tuple[int, int]) -> dict:
        y_hat = self.entropy_bottleneck.decompress(strings[0], shape)
        return {"y_hat": y_hat, "out": self.server(y_hat)}


def active_tasks_from_logits(task_logits: torch.Tensor) -> torch.Tensor:
    """``(batch, tasks)`` booleans, task ``t`` of image ``i`` active by the manifest's ``positive-else-argmax``
    rule: logit above 0 (probability above 0.5); an image with none gets its most likely task. The bitstream's
    integer task mask of one image is :func:`codec.manifest.task_mask_from_logits` (the same rule)."""
    mask = task_logits > 0
    top = F.one_hot(task_logits.argmax(dim=1), task_logits.shape[1]).bool()
    return torch.where(mask.any(dim=1, keepdim=True), mask, top)


@register_model
def mantis_stage1(
    num_tasks: int,
    teacher_channels: int,
    teacher_stride: int,
    stem_channels: int = 32,
    encoder_channels: Sequence[int] = (64, 64),
    latent_channels: int = 32,
    decoder_hidden: int = 96,
    stem_teacher: dict | None = None,
    **client_kwargs,
) -> SplitModel:
    """Stage 1: identity-FiLM client + head-distillation decoder.

    ``stem_teacher`` (``{"name", "kwargs"}`` of a cut teacher, cut where the stem ends) makes the stem that
    teacher's first layers (:class:`TeacherStem`, ``stem_channels`` unused); its weights come from the
    trained teacher (:meth:`TeacherStem.load_from_teacher_head`) or from a checkpoint.
    """
    stem = None
    if stem_teacher is not None:
        cut = create_model(stem_teacher["name"], **stem_teacher["kwargs"])
        stem = TeacherStem(cut.head_layers, int(cut.distill_channels), int(cut.distill_stride))
    client = EdgeClient(num_tasks, stem_channels, encoder_channels, latent_channels, film_mode="identity", stem=stem, **client_kwargs)
    upsample = client.stride // teacher_stride
    if upsample < 1 or client.stride % teacher_stride:
        raise ValueError(f"teacher layer stride {teacher_stride} does not divide the latent stride {client.stride}")
    if stem_teacher is not None and any(n % client.stride for n in stem_teacher["kwargs"]["input_size"]):
        raise ValueError(f"input size {stem_teacher['kwargs']['input_size']} is not a multiple of the latent stride {client.stride}")
    return SplitModel(client, DistillDecoder(latent_channels, teacher_channels, upsample, decoder_hidden))


def mantis_stage2_from_stage1(stage1: SplitModel, teacher_tails: Sequence[nn.Module], film_mode: str = "film") -> SplitModel:
    """Stage 2: the Stage 1 client and bottleneck, FiLM switched on, per-task decoders copied from the
    distillation decoder and per-task tails copied from the teacher."""
    client = copy.deepcopy(stage1.client)
    if film_mode not in FILM_MODES:
        raise ValueError(f"film_mode must be one of {FILM_MODES}, got {film_mode!r}")
    client.film_mode = film_mode
    decoders = [copy.deepcopy(stage1.server) for _ in teacher_tails]
    tails = [copy.deepcopy(t) for t in teacher_tails]
    model = SplitModel(client, TaskServer(decoders, tails))
    model.entropy_bottleneck = copy.deepcopy(stage1.entropy_bottleneck)
    return model


@register_model
def mantis_stage2(stage1: dict, teacher: dict, film_mode: str = "film") -> SplitModel:
    """The Stage 2 architecture rebuilt from its description: ``stage1`` holds ``mantis_stage1``'s keyword
    arguments, ``teacher`` the teacher's ``{"name", "kwargs"}``. Weights come from a checkpoint."""
    stage1_model = create_model("mantis_stage1", **stage1)
    teacher_model = create_model(teacher["name"], **teacher["kwargs"])
    return mantis_stage2_from_stage1(stage1_model, teacher_model.task_tails(), film_mode)
