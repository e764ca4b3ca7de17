"""The full training run: teacher -> Stage 1 -> Stage 2 -> ablations -> ``metrics.json``.

Each stage writes its checkpoint atomically into the output directory and records the fingerprint of
the config sections it depends on; a rerun reuses every finished stage whose fingerprint still matches
(so the teacher is trained once per data/teacher config), resumes an interrupted stage from its resume
state, and retrains the rest. Only rank 0 writes files under ``torchrun``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from codec import FORMAT_VERSION
from codec.files import atomic_write_json, directory_kept_on_success
from training.balancing import FamoBalancer
from training.build import load_model
from training.checkpoint import CheckpointError, save_checkpoint
from training.config import ConfigError, fingerprint
from training.data import MultiTaskDataset, TaskSpec, build_datasets, teacher_class_indices
from training.engine import FitSpec, Runtime, StepCallback, fit, setup_runtime, shutdown_runtime
from training.evaluate import evaluate, evaluate_teacher
from training.models import create_model
from training.models.mantis import SplitModel, mantis_stage2_from_stage1
from training.saliency import saliency_weight, teacher_grad_cam
from training.stages import Stage1Objective, Stage2Objective, TeacherObjective, param_groups

log = logging.getLogger("mantis.training")

CHECKPOINTS = {
    "teacher": "teacher.safetensors",
    "stage1": "stage1.safetensors",
    "stage2": "stage2.safetensors",
    "no_film": "ablation_no_film.safetensors",
}
METRICS_FILE = "metrics.json"

# config sections each stage depends on (its fingerprint)
_DEPENDS = {
    "teacher": ["seed", "data", "teacher", "amp"],
    "stage1": ["seed", "data", "teacher", "amp", "model", "stage1"],
    "stage2": ["seed", "data", "teacher", "amp", "model", "stage1", "stage2"],
}
# the No-FiLM ablation shares Stage 2's seed: same data order and noise, so only FiLM differs
_SEED_OFFSET = {"teacher": 1, "stage1": 2, "stage2": 3, "no_film": 3}


@dataclass
class Context:
    cfg: dict[str, Any]
    out: Path
    rt: Runtime
    train: MultiTaskDataset
    test: MultiTaskDataset
    tasks: list[TaskSpec]
    preprocessing: dict[str, Any]
    callbacks: Sequence[StepCallback] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)

    def test_loader(self) -> DataLoader:
        return DataLoader(
            self.test, batch_size=self.cfg["data"]["eval_batch_size"], shuffle=False, num_workers=self.cfg["data"]["num_workers"]
        )

    def meta(self, stage: str, model_spec: dict[str, Any], fp: str, **extra: Any) -> dict[str, Any]:
        return {
            "stage": stage,
            "model": model_spec,
            "tasks": [t.to_meta() for t in self.tasks],
            "preprocessing": self.preprocessing,
            "fingerprint": fp,
            "config": self.cfg,
            **extra,
        }

    def seed(self, name: str) -> int:
        """The seed of a stage: the global one, or ``stage2.seed`` for Stage 2 and its No-FiLM ablation."""
        own = self.cfg["stage2"]["seed"] if name in ("stage2", "no_film") else None
        return self.cfg["seed"] if own is None else own

    def fit_spec(self, name: str, section: dict[str, Any], fp: str) -> FitSpec:
        return FitSpec(
            name=name,
            epochs=section["epochs"],
            batch_size=self.cfg["data"]["batch_size"],
            seed=self.seed(name) + _SEED_OFFSET[name],
            warmup=section["warmup"],
            fingerprint=fp,
            resume_path=self.out / f"{name}.resume.pt",
            save_every=self.cfg["save_every"],
            num_workers=self.cfg["data"]["num_workers"],
            callbacks=list(self.callbacks),
        )

    def finish(self, name: str, model: nn.Module, meta: dict[str, Any]) -> Path:
        """Write the stage's checkpoint (rank 0), drop its resume state, wait for every rank."""
        path = self.out / CHECKPOINTS[name]
        if self.rt.is_main:
            save_checkpoint(path, model.state_dict(), meta)
            (self.out / f"{name}.resume.pt").unlink(missing_ok=True)
        self.rt.barrier()
        return path


def stage_fingerprints(cfg: dict[str, Any]) -> dict[str, str]:
    """The fingerprint each checkpoint of ``CHECKPOINTS`` must carry to be reused under ``cfg``."""
    return {name: fingerprint(cfg, _DEPENDS["stage2" if name == "no_film" else name]) for name in CHECKPOINTS}


def _cached(ctx: Context, name: str, stage: str, fp: str) -> tuple[nn.Module, dict[str, Any]] | None:
    path = ctx.out / CHECKPOINTS[name]
    if not path.exists():
        return None
    try:
        model, meta = load_model(path, stage)
    except CheckpointError as exc:
        log.warning("%s; training %s again", exc, name)
        return None
    if meta.get("fingerprint") != fp:
        log.info("%s was made with another config; training %s again", path, name)
        return None
    log.info("%s: reusing finished checkpoint %s", name, path)
    ctx.cached.append(name)
    return model.to(ctx.rt.device), meta


def _on_current_format(
    ctx: Context, name: str, model: nn.Module, meta: dict[str, Any], measure: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """A reused checkpoint's metadata, its metrics measured again by ``measure`` (and the checkpoint rewritten
    with them) when their bytes were counted on another bitstream format than this codec's."""
    if meta["metrics"].get("bitstream_version") == FORMAT_VERSION:  # the same file on every rank: all take one branch
        return meta
    log.info("%s: its metrics were not measured on bitstream format %s: measuring them again", name, FORMAT_VERSION)
    if ctx.rt.is_main:
        meta = {**meta, "metrics": {**meta["metrics"], **measure()}}
    ctx.finish(name, model, meta)
    return meta


def _seed(ctx: Context, name: str) -> None:
    torch.manual_seed(ctx.seed(name) * 1000 + _SEED_OFFSET[name])


def teacher_stage(ctx: Context) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Train (or load) the teacher; returns ``(teacher, spec, metrics)`` with ``spec`` = {name, kwargs}."""
    fp = fingerprint(ctx.cfg, _DEPENDS["teacher"])
    cached = _cached(ctx, "teacher", "teacher", fp)
    if cached:
        teacher, meta = cached
        return teacher, meta["model"], meta["metrics"]
    tcfg = ctx.cfg["teacher"]
    _seed(ctx, "teacher")
    if tcfg["kind"] == "cnn":
        spec = {"name": "teacher_cnn", "kwargs": {"num_classes": [len(t.labels) for t in ctx.tasks], "channels": tcfg["channels"]}}
        teacher = create_model(spec["name"], **spec["kwargs"]).to(ctx.rt.device)
        fit(
            TeacherObjective(teacher),
            teacher,
            param_groups(teacher.named_parameters(), tcfg["lr"], tcfg["weight_decay"]),
            ctx.train,
            ctx.fit_spec("teacher", tcfg, fp),
            ctx.rt,
        )
    else:
        indices = teacher_class_indices(ctx.cfg, ctx.tasks)
        kwargs = {
            "arch": tcfg["arch"],
            "distill_layer": tcfg["distill_layer"],
            "task_class_indices": indices,
            "input_size": ctx.preprocessing["input_size"],
        }
        spec = {"name": f"teacher_{tcfg['kind']}", "kwargs": kwargs}
        teacher = create_model(spec["name"], **kwargs, weights=tcfg["weights"]).to(ctx.rt.device)
        if tcfg["kind"] in ("timm", "efficientnet_lite"):  # rebuilt from the checkpoint without the weights file
            kwargs["num_classes"] = teacher.num_classes
    teacher.eval()
    metrics = evaluate_teacher(teacher, ctx.test_loader(), ctx.tasks, ctx.rt.device) if ctx.rt.is_main else {}
    ctx.finish("teacher", teacher, ctx.meta("teacher", spec, fp, metrics=metrics))
    return teacher, spec, metrics


NEAR_CHANCE = 0.2
"""A task's accuracy is near chance when it covers less than this share of the way from chance (1 / its
number of classes) to 1."""


def near_chance(accuracy: dict[str, float], tasks: Sequence[TaskSpec]) -> list[str]:
    """The tasks whose ``accuracy`` is near chance (:data:`NEAR_CHANCE`)."""
    chance = {t.name: 1 / len(t.labels) for t in tasks}
    return [t for t, acc in accuracy.items() if acc < chance[t] + NEAR_CHANCE * (1 - chance[t])]


def check_teacher(ctx: Context, teacher: nn.Module) -> dict[str, Any]:
    """The teacher's per-task accuracy on the ``val`` split, logged before Stage 1, with a warning for the
    tasks where it is near chance: a teacher that does not know the classes trains every later stage to
    chance without another sign."""
    _, val, _, _, _ = build_datasets(ctx.cfg, splits=("val",))
    loader = DataLoader(val, batch_size=ctx.cfg["data"]["eval_batch_size"], shuffle=False, num_workers=ctx.cfg["data"]["num_workers"])
    accuracy = evaluate_teacher(teacher, loader, ctx.tasks, ctx.rt.device)["task_accuracy"]
    chance = {t.name: 1 / len(t.labels) for t in ctx.tasks}
    log.info(
        "teacher accuracy on the val split (%d images): %s",
        len(val),
        ", ".join(f"{t} {a:.3f} (chance {chance[t]:.3f})" for t, a in accuracy.items()),
    )
    low = near_chance(accuracy, ctx.tasks)
    if low:
        kind = ctx.cfg["teacher"]["kind"]
        hint = (
            "train it longer (teacher.epochs) or on more images"
            if kind == "cnn"
            else "check that teacher.weights hold trained weights for teacher.arch and that the task map's teacher_index "
            "gives each class's index in the teacher's logits"
        )
        log.warning(
            "the teacher is near chance on the val split for %s; every later stage learns from it, so the model "
            "will be near chance too: %s",
            low,
            hint,
        )
    return {"split": "val", "images": len(val), "task_accuracy": accuracy, "chance": chance, "near_chance": low}


def stage1_kwargs(ctx: Context, teacher: nn.Module, teacher_spec: dict[str, Any]) -> dict[str, Any]:
    m = ctx.cfg["model"]
    kwargs: dict[str, Any] = {}
    if m["stem_layer"] is not None:  # the teacher cut where the stem ends: its architecture, rebuilt without weights
        kwargs["stem_teacher"] = {"name": teacher_spec["name"], "kwargs": {**teacher_spec["kwargs"], "distill_layer": m["stem_layer"]}}
    return kwargs | {
        "num_tasks": len(ctx.tasks),
        "teacher_channels": int(teacher.distill_channels),
        "teacher_stride": int(teacher.distill_stride),
        "stem_channels": m["stem_channels"],
        "encoder_channels": list(m["encoder_channels"]),
        "latent_channels": m["latent_channels"],
        "decoder_hidden": m["decoder_hidden"],
        "detector_hidden": m["detector_hidden"],
        "film_hidden": m["film_hidden"],
    }


def stage1(ctx: Context, teacher: nn.Module, teacher_spec: dict[str, Any]) -> tuple[SplitModel, dict[str, Any], dict[str, Any]]:
    """Head distillation; returns ``(model, mantis_stage1 kwargs, metrics)``."""
    fp = fingerprint(ctx.cfg, _DEPENDS["stage1"])
    cached = _cached(ctx, "stage1", "stage1", fp)
    if cached:
        model, meta = cached
        meta = _on_current_format(
            ctx,
            "stage1",
            model,
            meta,
            lambda: evaluate(model, ctx.test_loader(), ctx.tasks, teacher=teacher, device=ctx.rt.device, desc="stage1 eval"),
        )
        return model, meta["model"]["kwargs"], meta["metrics"]
    s = ctx.cfg["stage1"]
    kwargs = stage1_kwargs(ctx, teacher, teacher_spec)
    _seed(ctx, "stage1")
    model = create_model("mantis_stage1", **kwargs).to(ctx.rt.device)
    if model.client.stem.pretrained:
        try:
            model.client.stem.load_from_teacher_head(teacher.head_layers)
        except ValueError as exc:
            raise ConfigError(f"model.stem_layer {ctx.cfg['model']['stem_layer']!r} vs teacher.distill_layer: {exc}") from None
    objective = Stage1Objective(model, s["beta"], s["detection_weight"], s["quantization"], s["beta_warmup"])
    teacher.requires_grad_(False).eval()

    def with_teacher_features(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, labels, task_vector = batch
        if s["saliency"] > 0:
            features, cam = teacher_grad_cam(teacher, x, labels)
            return x, features, task_vector, saliency_weight(cam, s["saliency"])
        with torch.no_grad(), ctx.rt.autocast():
            return x, teacher.head(x), task_vector

    fit(
        objective,
        model,
        objective.param_groups(s["lr"], s["aux_lr"], s["weight_decay"]),
        ctx.train,
        ctx.fit_spec("stage1", s, fp),
        ctx.rt,
        with_teacher_features,
    )
    model.update(force=True)
    model.eval()
    metrics = (
        evaluate(model, ctx.test_loader(), ctx.tasks, teacher=teacher, device=ctx.rt.device, desc="stage1 eval") if ctx.rt.is_main else {}
    )
    ctx.finish(
        "stage1",
        model,
        ctx.meta("stage1", {"name": "mantis_stage1", "kwargs": kwargs}, fp, teacher=teacher_spec, film_mode="identity", metrics=metrics),
    )
    return model, kwargs, metrics


def stage2(
    ctx: Context,
    name: str,
    film_mode: str,
    stage1_model: SplitModel,
    s1_kwargs: dict[str, Any],
    teacher: nn.Module,
    teacher_spec: dict[str, Any],
) -> tuple[Path, dict[str, Any]]:
    """Task-aware fine-tuning with FiLM (``stage2``) or without (``no_film``); returns (checkpoint, metrics).

    The metrics of the FiLM model hold its Oracle evaluation (true task vector into FiLM) under ``oracle``.
    """
    fp = fingerprint(ctx.cfg, _DEPENDS["stage2"])
    path = ctx.out / CHECKPOINTS[name]
    cached = _cached(ctx, name, "stage2", fp)
    if cached:
        model, meta = cached
        return path, _on_current_format(ctx, name, model, meta, lambda: _measure_stage2(ctx, name, model, film_mode))["metrics"]
    s = ctx.cfg["stage2"]
    _seed(ctx, name)
    model = mantis_stage2_from_stage1(stage1_model, teacher.task_tails(), film_mode).to(ctx.rt.device)
    balancer = None
    if s["balancing"] == "famo":
        balancer = FamoBalancer([t.name for t in ctx.tasks] + ["rate"], s["balancing_lr"], s["balancing_decay"]).to(ctx.rt.device)
    objective = Stage2Objective(
        model,
        s["beta"],
        s["detection_weight"],
        s["kd_weight"],
        s["kd_temperature"],
        s["quantization"],
        beta_warmup=s["beta_warmup"],
        label_smoothing=s["label_smoothing"],
        balancer=balancer,
        freeze_tails=s["freeze_tails"],
    )
    teacher.requires_grad_(False).eval()
    batch_fn = None
    if s["kd_weight"] > 0:

        def batch_fn(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            with torch.no_grad(), ctx.rt.autocast():
                return (*batch, *teacher(batch[0]))

    last_epoch = fit(
        objective,
        model,
        objective.param_groups(s["lr"], s["aux_lr"], s["weight_decay"], s["encoder_lr_scale"]),
        ctx.train,
        ctx.fit_spec(name, s, fp),
        ctx.rt,
        batch_fn,
    )
    model.update(force=True)
    model.eval()
    metrics: dict[str, Any] = {}
    if ctx.rt.is_main:
        metrics = {**_measure_stage2(ctx, name, model, film_mode), "train_last_epoch": last_epoch}
        if balancer is not None:
            metrics["loss_weights"] = balancer.named_weights()
    kwargs = {"stage1": s1_kwargs, "teacher": teacher_spec, "film_mode": film_mode}
    ctx.finish(
        name,
        model,
        ctx.meta("stage2", {"name": "mantis_stage2", "kwargs": kwargs}, fp, teacher=teacher_spec, film_mode=film_mode, metrics=metrics),
    )
    return path, metrics


def _measure_stage2(ctx: Context, name: str, model: SplitModel, film_mode: str) -> dict[str, Any]:
    """Held-out metrics of a Stage 2 model through the real codec, with its Oracle evaluation when configured."""
    metrics = evaluate(model, ctx.test_loader(), ctx.tasks, device=ctx.rt.device, desc=f"{name} eval")
    if film_mode == "film" and ctx.cfg["ablations"]["oracle"]:
        metrics["oracle"] = evaluate(model, ctx.test_loader(), ctx.tasks, oracle=True, device=ctx.rt.device, desc="oracle eval")
    return metrics


def _timed(ctx: Context, name: str, fn: Any, *args: Any) -> Any:
    start = time.perf_counter()
    result = fn(*args)
    ctx.seconds[name] = round(time.perf_counter() - start, 2)
    return result


Datasets = tuple[MultiTaskDataset, MultiTaskDataset, list[TaskSpec], dict[str, Any]]


def load_datasets(cfg: dict[str, Any]) -> Datasets:
    """``(train, test, tasks, preprocessing)`` as ``run`` uses them (build once to run several configs
    that share the ``data`` section)."""
    train, _, test, tasks, preprocessing = build_datasets(cfg, splits=("train", "test"))
    return train, test, tasks, preprocessing


def run(
    cfg: dict[str, Any], out_dir: str | Path, callbacks: Sequence[StepCallback] = (), datasets: Datasets | None = None
) -> dict[str, Any]:
    """Run every stage of a validated config into ``out_dir`` and return (and write) the metrics.

    ``datasets`` (from ``load_datasets`` with the same ``data`` section) saves building them again.
    """
    with directory_kept_on_success(out_dir) as out:  # a run that fails before writing anything leaves no empty folder
        return _run(cfg, out, callbacks, datasets)


def _run(cfg: dict[str, Any], out: Path, callbacks: Sequence[StepCallback], datasets: Datasets | None) -> dict[str, Any]:
    rt = setup_runtime(cfg["device"], cfg["amp"], cfg["threads"])
    try:
        start = time.perf_counter()
        train, test, tasks, preprocessing = datasets if datasets is not None else load_datasets(cfg)
        ctx = Context(cfg, out, rt, train, test, tasks, preprocessing, callbacks)
        ctx.seconds["data"] = round(time.perf_counter() - start, 2)
        teacher, teacher_spec, teacher_metrics = _timed(ctx, "teacher", teacher_stage, ctx)
        teacher_val = check_teacher(ctx, teacher) if rt.is_main else {}
        s1_model, s1_kwargs, s1_metrics = _timed(ctx, "stage1", stage1, ctx, teacher, teacher_spec)
        s2_path, s2_metrics = _timed(ctx, "stage2", stage2, ctx, "stage2", "film", s1_model, s1_kwargs, teacher, teacher_spec)
        s2_metrics = dict(s2_metrics)
        ablations: dict[str, Any] = {}
        if "oracle" in s2_metrics:
            ablations["oracle"] = s2_metrics.pop("oracle")
        checkpoints = {k: str(out / v) for k, v in CHECKPOINTS.items() if k != "no_film"}
        if cfg["ablations"]["no_film"]:
            nf_path, ablations["no_film"] = _timed(
                ctx, "no_film", stage2, ctx, "no_film", "identity", s1_model, s1_kwargs, teacher, teacher_spec
            )
            checkpoints["no_film"] = str(nf_path)
        ctx.seconds["total"] = round(time.perf_counter() - start, 2)
        metrics = {
            "teacher": teacher_metrics,
            "teacher_val": teacher_val,
            "stage1": s1_metrics,
            "stage2": s2_metrics,
            "ablations": ablations,
            "checkpoint": str(s2_path),
            "checkpoints": checkpoints,
            "tasks": [t.to_meta() for t in tasks],
            "seconds": ctx.seconds,
            "cached_stages": ctx.cached,
        }
        if rt.is_main:
            atomic_write_json(out / METRICS_FILE, metrics)
        rt.barrier()
        return metrics
    finally:
        shutdown_runtime(rt)
