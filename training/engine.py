"""The training loop shared by every stage: schedule, AMP, DDP, progress bars, resumable state.

A stage is an ``nn.Module`` whose ``forward(*batch)`` returns ``(loss, logs)``; ``fit`` runs it for a number
of epochs, calling its ``schedule(step, total)`` (if it has one) before every step. Every ``save_every``
steps (and at each epoch end) the loop writes a resume state (weights, optimizer, AMP scaler, RNG, step,
the stage's own buffers) atomically; a rerun with the same fingerprint continues from it and
reproduces the uninterrupted run. Data order is a pure function of (seed, epoch), so resuming mid-epoch
skips exactly the batches already seen.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from codec.files import atomic_write
from training.checkpoint import CheckpointError

log = logging.getLogger("mantis.training")

StepCallback = Callable[[str, int], None]


@dataclass
class Runtime:
    """Where and how training runs: device, AMP, and the DDP process group (if any)."""

    device: torch.device
    amp: bool = False
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)


def setup_runtime(device: str = "auto", amp: bool = False, threads: int = 0) -> Runtime:
    """Pick the device, start the process group under ``torchrun``, set CPU threads.

    AMP needs CUDA; on a CPU it is switched off with a log line. Under ``torchrun`` (``WORLD_SIZE`` > 1)
    the group uses NCCL on GPUs and gloo on CPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads or max(1, cores // world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if amp and not use_cuda:
        log.info("AMP needs a CUDA device; training in float32 on %s", dev)
        amp = False
    return Runtime(dev, amp, rank, world)


def shutdown_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


class EpochSampler(Sampler[int]):
    """Shuffled indices for one epoch, a pure function of ``(seed, epoch)``, sharded across DDP ranks,
    starting after ``skip_batches`` batches (to resume mid-epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, skip_batches: int = 0) -> None:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)[rank::world]
        usable = (len(order) // batch_size) * batch_size
        self.indices = order[skip_batches * batch_size : usable].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def steps_per_epoch(n: int, batch_size: int, world: int) -> int:
    per_rank = len(range(0, n, world))
    return per_rank // batch_size


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction of the steps, then cosine decay to 1 %."""
    w = int(total * warmup)
    if step < w:
        return (step + 1) / w
    t = (step - w) / max(1, total - w)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


@dataclass
class FitSpec:
    """What ``fit`` needs to know about one stage."""

    name: str
    epochs: int
    batch_size: int
    seed: int
    warmup: float
    fingerprint: str
    resume_path: Path
    save_every: int
    num_workers: int = 0
    callbacks: list[StepCallback] = field(default_factory=list)


def _stage_buffers(stage: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    """The stage's buffers outside the model (e.g. learned loss weights): they belong in the resume state."""
    owned = {id(b) for b in model.buffers()}
    return {name: b for name, b in stage.named_buffers() if id(b) not in owned}


def _save_resume(
    path: Path,
    stage: nn.Module,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    step: int,
    fingerprint: str,
    rt: Runtime,
) -> None:
    state: dict[str, Any] = {
        "fingerprint": fingerprint,
        "step": step,
        "model": model.state_dict(),
        "stage_buffers": _stage_buffers(stage, model),
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
    }
    if rt.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(rt.device)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_resume(path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: the stage restarts instead of crashing
        log.warning("resume state %s is unreadable (%s); starting the stage over", path, exc)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log.info("resume state %s belongs to another config; starting the stage over", path)
        return None
    return state


def fit(
    stage: nn.Module,
    model: nn.Module,
    param_groups: list[dict[str, Any]],
    dataset: Dataset,
    spec: FitSpec,
    rt: Runtime,
    batch_fn: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] | None = None,
) -> dict[str, float]:
    """Train ``stage`` (which owns ``model``) and return the last epoch's mean logs.

    ``param_groups`` are AdamW groups with an ``lr`` each (scaled by the schedule); ``batch_fn`` turns a
    loader batch on the device into ``stage``'s inputs (e.g. to add teacher features).
    """
    opt = torch.optim.AdamW(param_groups)
    base_lrs = [g["lr"] for g in opt.param_groups]
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp)
    per_epoch = steps_per_epoch(len(dataset), spec.batch_size, rt.world_size)
    total = per_epoch * spec.epochs
    if per_epoch == 0 and spec.epochs > 0:
        raise ValueError(f"{spec.name}: {len(dataset)} training images are fewer than one batch of {spec.batch_size} per process")
    step = 0
    state = _load_resume(spec.resume_path, spec.fingerprint)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            buffers = _stage_buffers(stage, model)
            saved = state.get("stage_buffers", {})
            if set(buffers) != set(saved):
                raise KeyError(f"stage buffers {sorted(saved)}, expected {sorted(buffers)}")
            for name, b in buffers.items():
                b.copy_(saved[name])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"resume state {spec.resume_path}: does not fit this model ({exc}); delete it to start over") from None
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and rt.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], rt.device)
        step = int(state["step"])
        log.info("%s: resuming at step %d of %d from %s", spec.name, step, total, spec.resume_path)
    runner: nn.Module = stage
    if rt.distributed:
        runner = DistributedDataParallel(stage, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    stage.train()
    schedule = getattr(stage, "schedule", None)
    means: dict[str, float] = {}
    bar = tqdm(total=total, initial=step, desc=spec.name, disable=None if rt.is_main else True, dynamic_ncols=True)
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        sampler = EpochSampler(len(dataset), spec.batch_size, spec.seed, epoch, rt.rank, rt.world_size, skip)
        # the loader gets its own generator: drawing worker seeds from the global one would shift the
        # random stream (bottleneck noise) of a resumed run against the uninterrupted one
        loader = DataLoader(
            dataset,
            batch_size=spec.batch_size,
            sampler=sampler,
            num_workers=spec.num_workers,
            pin_memory=rt.device.type == "cuda",
            drop_last=True,
            generator=torch.Generator().manual_seed(spec.seed * 100_003 + epoch),
        )
        sums: dict[str, float] = {}
        count = 0
        for batch in loader:
            factor = lr_factor(step, total, spec.warmup)
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * factor
            if schedule is not None:
                schedule(step, total)
            batch = tuple(t.to(rt.device, non_blocking=True) for t in batch)
            inputs = batch_fn(batch) if batch_fn is not None else batch
            with rt.autocast():
                loss, logs = runner(*inputs)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            count += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            bar.update(1)
            if rt.is_main and (step % spec.save_every == 0 or step % per_epoch == 0):
                _save_resume(spec.resume_path, stage, model, opt, scaler, step, spec.fingerprint, rt)
            for cb in spec.callbacks:
                cb(spec.name, step)
        means = {k: v / max(count, 1) for k, v in sums.items()}
        if rt.is_main:
            log.info("%s epoch %d/%d: %s", spec.name, epoch + 1, spec.epochs, ", ".join(f"{k}={v:.4g}" for k, v in means.items()))
    bar.close()
    stage.eval()
    return means
