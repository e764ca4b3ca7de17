"""Adding a task to a deployed model: the two paths behind ``training/add_task.py``.

The deployed model is a Stage 2 checkpoint (``add_task.base_checkpoint``) whose tasks are the first ones
of the config's task list; the tasks after them are added. The new tasks learn from their labels alone
(cross-entropy): the teacher the deployed model was distilled from knows only the original tasks.

* ``add_task.mode: server`` — the edge client and the bottleneck stay frozen, so devices keep their bundle
  and the entropy tables stay the same. A new decoder and tail per added task, and a small detector on the
  decoded latent that says whether an added task applies (the edge's task detector and the bitstream's task
  mask know only the deployed tasks), train on the rounded latents of the training images, decoded through
  ``codec``. Nothing deployed changes, and this is checked: every deployed tensor (weights and batch-norm
  statistics) is compared bit for bit after training, and the tables' hash before and after.
* ``add_task.mode: full`` — the edge client (detector, FiLM, encoder; the stem stays frozen), the
  bottleneck and every decoder train again on the new task's images plus a replay buffer of old-task
  images, with an EWC penalty anchored at the deployed weights (Fisher diagonal from old-task images).
  ``add_task.compare_naive`` also fine-tunes the same start on the new task's images alone (no replay, no
  EWC), for comparison. This makes a new edge client and new entropy tables: old devices' bitstreams no
  longer fit, which the table id in every bitstream lets the server refuse (409).

Each run writes its checkpoints and ``metrics.json`` (per-task accuracy before and after, bytes per image
over all test images and over the test images of old tasks only); ``training/add_task.py`` then exports the
bundle with ``export/split.py``.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import codec
from codec.bundle import file_sha256
from codec.files import atomic_write_json, directory_kept_on_success
from training.build import load_model
from training.checkpoint import save_checkpoint
from training.config import ConfigError, fingerprint
from training.continual import (
    EWCPenalty,
    FullAdditionObjective,
    ReplayBuffer,
    ReplayMix,
    AddedTasksObjective,
    Subset,
    fisher_diagonal,
    ewc_parameter_names,
    split_by_tasks,
    targets,
)
from training.data import MultiTaskDataset, TaskSpec, build_datasets
from training.engine import FitSpec, Runtime, fit, setup_runtime, shutdown_runtime
from training.evaluate import evaluate
from training.tables import tables_from_bottleneck
from training.models.added_tasks import AddedTaskServer, extend_model
from training.models.mantis import SplitModel

log = logging.getLogger("mantis.training")

METRICS_FILE = "metrics.json"
CHECKPOINTS = {"server": "added_server.safetensors", "replay_ewc": "added_full.safetensors", "naive": "added_naive.safetensors"}
_SEED_OFFSET = {"server": 11, "heads": 13, "replay_ewc": 12, "naive": 12}  # both full-path runs start from the same new weights


def _check_base(base_meta: dict[str, Any], tasks: list[TaskSpec], preprocessing: dict[str, Any], source: str) -> int:
    """Number of deployed tasks; ``ConfigError`` unless they lead the config's task list, unchanged."""
    base_tasks = base_meta["tasks"]
    k = len(base_tasks)
    given = [t.to_meta() for t in tasks[:k]]
    if [{"name": t["name"], "labels": list(t["labels"])} for t in base_tasks] != given:
        raise ConfigError(
            f"{source}: the deployed model's tasks {[t['name'] for t in base_tasks]} must be the first tasks of the "
            f"config's task list, with the same labels (config: {[t.name for t in tasks]})"
        )
    if len(tasks) == k:
        raise ConfigError(f"{source}: the config's task list {[t.name for t in tasks]} adds no task to the deployed model's")
    if base_meta["preprocessing"] != preprocessing:
        raise ConfigError(
            f"{source}: the config's preprocessing {preprocessing} differs from the deployed model's {base_meta['preprocessing']}"
        )
    return k


def _spec(cfg: dict[str, Any], out: Path, name: str, epochs: int, fp: str) -> FitSpec:
    a = cfg["add_task"]
    return FitSpec(
        name=name,
        epochs=epochs,
        batch_size=cfg["data"]["batch_size"],
        seed=cfg["seed"] + _SEED_OFFSET[name],
        warmup=a["warmup"],
        fingerprint=fp,
        resume_path=out / f"{name}.resume.pt",
        save_every=cfg["save_every"],
        num_workers=cfg["data"]["num_workers"],
    )


def _loader(cfg: dict[str, Any], dataset: Dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg["data"]["eval_batch_size"], shuffle=False, num_workers=cfg["data"]["num_workers"])


def _accuracy(metrics: dict[str, Any], names: list[str]) -> dict[str, float]:
    return {n: metrics["task_accuracy"][n] for n in names}


def _bytes(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: metrics[k] for k in ("bytes_per_image", "estimated_bytes_per_image", "payload_bytes_per_image")}


def _result(metrics: dict[str, Any], names: list[str], old: list[str]) -> dict[str, Any]:
    acc = _accuracy(metrics, names)
    return {
        "task_accuracy": acc,
        "mean_old_task_accuracy": sum(acc[n] for n in old) / len(old),
        "task_detection_accuracy": metrics["task_detection_accuracy"],
        **_bytes(metrics),
    }


def _changes(before: dict[str, Any], after: dict[str, Any], old: list[str]) -> dict[str, Any]:
    """Old-task accuracy change in points (after - before), per task and on average."""
    per_task = {n: 100.0 * (after["task_accuracy"][n] - before["task_accuracy"][n]) for n in old}
    return {"old_task_points": per_task, "mean_old_task_points": sum(per_task.values()) / len(per_task)}


def _tables_hash(model: SplitModel) -> str:
    return tables_from_bottleneck(model.entropy_bottleneck).sha256


def deployed_tensors_identical(base: SplitModel, model: SplitModel) -> tuple[bool, int, list[str]]:
    """``(identical, tensors compared, names that differ)``: every tensor of ``base`` (weights and buffers)
    against the extended model's copy (``server.base.*`` for the server half of a server-only addition)."""
    extended = model.state_dict()
    differ = []
    for name, tensor in base.state_dict().items():
        key = "server.base." + name[len("server.") :] if isinstance(model.server, AddedTaskServer) and name.startswith("server.") else name
        other = extended.get(key)
        if other is None or other.shape != tensor.shape or other.dtype != tensor.dtype or not torch.equal(other, tensor):
            differ.append(name)
    return not differ, len(base.state_dict()), differ


@torch.no_grad()
def decoded_latents(model: SplitModel, dataset: MultiTaskDataset, batch_size: int, device: torch.device) -> torch.Tensor:
    """The latents the server decodes for every item: client -> ``codec`` quantize -> dequantize."""
    tables = tables_from_bottleneck(model.entropy_bottleneck)
    out = []
    for x, _, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        y, _ = model.client(x.to(device))
        out.append(torch.from_numpy(codec.dequantize(codec.quantize(y.float().cpu().numpy(), tables), tables).astype(np.float32)))
    return torch.cat(out)


class _Run:
    """What both paths share: config, data, the deployed model, output directory, metadata."""

    def __init__(self, cfg: dict[str, Any], out: Path, rt: Runtime, source: str) -> None:
        a = cfg["add_task"]
        if not a["base_checkpoint"]:
            raise ConfigError(f"{source}: add_task.base_checkpoint must name the deployed Stage 2 checkpoint")
        self.cfg, self.out, self.rt = cfg, out, rt
        self.base_path = Path(a["base_checkpoint"])
        self.base, self.base_meta = load_model(self.base_path, stage="stage2")
        self.base.to(rt.device).eval()
        self.train, _, self.test, self.tasks, self.preprocessing = build_datasets(cfg, splits=("train", "test"))
        self.k = _check_base(self.base_meta, self.tasks, self.preprocessing, source)
        self.names = [t.name for t in self.tasks]
        self.old, self.new = self.names[: self.k], self.names[self.k :]
        self.added = list(range(self.k, len(self.tasks)))
        init = a["init_from"] or self.old[0]
        if init not in self.old:
            raise ConfigError(f"{source}: add_task.init_from {init!r} is not one of the deployed tasks {self.old}")
        self.init_from = self.old.index(init)
        self.base_sha = file_sha256(self.base_path)
        self.fp = fingerprint({**cfg, "base": self.base_sha}, ["seed", "data", "model", "stage2", "add_task", "base"])
        self.new_test, self.old_test = split_by_tasks(self.test, self.added)

    def spec(self, mode: str) -> dict[str, Any]:
        kwargs = {
            "base": self.base_meta["model"],
            "num_labels": [len(self.tasks[i].labels) for i in self.added],
            "mode": mode,
            "init_from": self.init_from,
            "detector_hidden": self.cfg["add_task"]["detector_hidden"],
        }
        return {"name": "mantis_added_tasks", "kwargs": kwargs}

    def versions(self, mode: str) -> dict[str, int]:
        """Edge and server versions of the result: a server-only addition changes the server half only."""
        base = self.base_meta.get("versions", {"edge": 1, "server": 1})
        return {"edge": base["edge"] + (mode == "full"), "server": base["server"] + 1}

    def lineage(self) -> list[dict[str, Any]]:
        """The versions this model replaces, oldest first: versions, checkpoint hash and entropy tables of each."""
        tables = tables_from_bottleneck(self.base.entropy_bottleneck)
        entry = {
            "versions": self.base_meta.get("versions", {"edge": 1, "server": 1}),
            "checkpoint_sha256": self.base_sha,
            "table_id": tables.table_id.hex(),
            "tables_sha256": tables.sha256,
        }
        return list(self.base_meta.get("lineage", [])) + [entry]

    def save(self, name: str, model: SplitModel, mode: str, metrics: dict[str, Any]) -> Path:
        path = self.out / CHECKPOINTS[name]
        meta = {
            "stage": "stage2",
            "model": self.spec(mode),
            "tasks": [t.to_meta() for t in self.tasks],
            "preprocessing": self.preprocessing,
            "fingerprint": self.fp,
            "config": self.cfg,
            "teacher": self.base_meta.get("teacher"),
            "film_mode": "film",
            "versions": self.versions(mode),
            "edge_tasks": self.k if mode == "server" else len(self.tasks),
            "added_tasks": self.new,
            "lineage": self.lineage(),
            "base_checkpoint": {"path": str(self.base_path.resolve()), "sha256": self.base_sha},
            "method": name,
            "metrics": metrics,
        }
        save_checkpoint(path, model.state_dict(), meta)
        (self.out / f"{name}.resume.pt").unlink(missing_ok=True)
        return path

    def evaluate(self, model: SplitModel, names: list[str], rows: list[int] | None = None, desc: str = "eval") -> dict[str, Any]:
        """Real encode/decode evaluation on the test items ``rows`` (all by default), tasks ``names``."""
        cols = [self.names.index(n) for n in names]
        rows = list(range(len(self.test))) if rows is None else rows
        tasks = [self.tasks[c] for c in cols]
        return evaluate(model, _loader(self.cfg, Subset(self.test, rows, cols)), tasks, device=self.rt.device, desc=desc)

    def before(self) -> dict[str, Any]:
        """The deployed model on the same test images: old-task accuracy, bytes (all images, old-task images)."""
        on_all = self.evaluate(self.base, self.old, desc="deployed eval")
        on_old = self.evaluate(self.base, self.old, self.old_test, desc="deployed eval, old-task images")
        return {**_result(on_all, self.old, self.old), "old_task_images": _bytes(on_old)}

    def after(self, model: SplitModel, desc: str) -> dict[str, Any]:
        on_all = self.evaluate(model, self.names, desc=desc)
        on_old = self.evaluate(model, self.names, self.old_test, desc=desc + ", old-task images")
        return {**_result(on_all, self.names, self.old), "old_task_images": _bytes(on_old)}


def _server_only(run: _Run) -> dict[str, Any]:
    cfg, a, rt = run.cfg, run.cfg["add_task"], run.rt
    torch.manual_seed(cfg["seed"] * 1000 + _SEED_OFFSET["server"])
    model = extend_model(run.base, [len(run.tasks[i].labels) for i in run.added], "server", run.init_from, a["detector_hidden"]).to(
        rt.device
    )
    model.eval()
    start = time.perf_counter()
    latents = decoded_latents(model, run.train, cfg["data"]["eval_batch_size"], rt.device)
    labels, vectors = targets(run.train)
    labels, vectors = labels[:, run.added], vectors[:, run.added]
    objective = AddedTasksObjective.server_only(model.server, cfg["stage2"]["detection_weight"])
    fit(
        objective,
        objective,
        objective.param_groups(a["lr"], a["weight_decay"]),
        TensorDataset(latents, labels, vectors),
        _spec(cfg, run.out, "server", a["epochs"], run.fp),
        rt,
    )
    model.eval()
    seconds = time.perf_counter() - start
    identical, compared, differ = deployed_tensors_identical(run.base, model)
    tables_before, tables_after = _tables_hash(run.base), _tables_hash(model)
    before = run.before()
    after = run.after(model, "server-only eval")
    result = {
        "before": before,
        "after": after,
        "change": _changes(before, after, run.old),
        "deployed_tensors_identical": identical,
        "deployed_tensors_compared": compared,
        "deployed_tensors_differing": differ,
        "tables_sha256": {"before": tables_before, "after": tables_after, "identical": tables_before == tables_after},
        "train_seconds": round(seconds, 2),
    }
    if not identical or tables_before != tables_after:
        raise RuntimeError(f"server-only addition changed deployed tensors {differ} or the entropy tables; this is a bug")
    path = run.save("server", model, "server", result)
    return {"server": result, "checkpoint": str(path)}


def _check_table_id(run: _Run, model: SplitModel) -> None:
    """New tables must not share the 2-byte table id of any earlier version's: an old device's bitstream would
    then fail the checksum (400) instead of being refused as coded with other tables (409)."""
    new_id = tables_from_bottleneck(model.entropy_bottleneck).table_id.hex()
    clash = [e for e in run.lineage() if e["table_id"] == new_id]
    if clash:
        raise RuntimeError(
            f"the new entropy tables share table id {new_id} with version {clash[0]['versions']}; "
            "train again with another seed so that old bitstreams are refused as coded with other tables"
        )


def _warm_heads(run: _Run, model: SplitModel) -> dict[str, Any]:
    """Train the added tasks' decoders and tails alone on the latents of the unchanged edge (what server-only
    addition learns), so that the whole model then starts from heads that already solve the new tasks
    instead of pulling the edge towards random ones."""
    cfg, a, rt = run.cfg, run.cfg["add_task"], run.rt
    start = time.perf_counter()
    model.eval()
    latents = decoded_latents(model, run.train, cfg["data"]["eval_batch_size"], rt.device)
    labels, vectors = targets(run.train)
    objective = AddedTasksObjective(model.server.decoders[run.k :], model.server.tails[run.k :])
    logs = fit(
        objective,
        objective,
        objective.param_groups(a["head_lr"], a["weight_decay"]),
        TensorDataset(latents, labels[:, run.added], vectors[:, run.added]),
        _spec(cfg, run.out, "heads", a["head_epochs"], run.fp),
        rt,
    )
    return {
        "epochs": a["head_epochs"],
        "lr": a["head_lr"],
        "last_epoch": {k: round(float(v), 4) for k, v in logs.items()},
        "train_seconds": round(time.perf_counter() - start, 2),
    }


def _full(run: _Run) -> dict[str, Any]:
    cfg, a, s2, rt = run.cfg, run.cfg["add_task"], run.cfg["stage2"], run.rt
    new_train, old_train = split_by_tasks(run.train, run.added)
    buffer = ReplayBuffer(run.train, old_train, a["replay_size"], cfg["seed"] + 17)
    anchored = ewc_parameter_names(run.base, a["ewc_modules"]) if a["ewc_weight"] > 0 else []
    start = time.perf_counter()
    fisher = (
        fisher_diagonal(run.base, Subset(run.train, buffer.indices[: a["fisher_samples"]], list(range(run.k))), anchored, rt.device)
        if anchored
        else {}
    )
    anchor = {n: p.detach().clone() for n, p in run.base.named_parameters() if n in fisher}
    fisher_seconds = time.perf_counter() - start
    before = run.before()
    tables_before = _tables_hash(run.base)
    methods = [a["method"]] + (["naive"] if a["compare_naive"] and a["method"] != "naive" else [])
    results: dict[str, Any] = {
        "before": before,
        "fisher_seconds": round(fisher_seconds, 2),
        "replay": {"buffer_images": len(buffer), "fraction": a["replay_fraction"], "new_task_images": len(new_train)},
        "ewc": {"weight": a["ewc_weight"], "modules": list(a["ewc_modules"]), "anchored_parameters": len(anchored)},
    }
    paths = {}
    torch.manual_seed(cfg["seed"] * 1000 + _SEED_OFFSET["replay_ewc"])
    start_model = extend_model(run.base, [len(run.tasks[i].labels) for i in run.added], "full", run.init_from, a["detector_hidden"]).to(
        rt.device
    )
    if a["head_epochs"]:
        results["heads"] = _warm_heads(run, start_model)
    for method in methods:
        model = copy.deepcopy(start_model)
        ewc = EWCPenalty(anchor, fisher, a["ewc_weight"]).to(rt.device) if method == "replay_ewc" and anchored else None
        data: Dataset = (
            ReplayMix(run.train, new_train, buffer, a["replay_fraction"]) if method == "replay_ewc" else Subset(run.train, new_train)
        )
        beta = s2["beta"] if a["beta"] is None else a["beta"]
        objective = FullAdditionObjective(model, beta, s2["detection_weight"], s2["quantization"], ewc)
        start = time.perf_counter()
        fit(
            objective,
            model,
            objective.param_groups(a["lr"], a["aux_lr"], a["weight_decay"], s2["encoder_lr_scale"]),
            data,
            _spec(cfg, run.out, method, a["epochs"], run.fp),
            rt,
        )
        model.entropy_bottleneck.update(force=True)
        model.eval()
        seconds = time.perf_counter() - start
        _check_table_id(run, model)
        after = run.after(model, f"{method} eval")
        tables_after = _tables_hash(model)
        results[method] = {
            "after": after,
            "change": _changes(before, after, run.old),
            "tables_sha256": {"before": tables_before, "after": tables_after, "identical": tables_before == tables_after},
            "training_images_per_epoch": len(data),
            "train_seconds": round(seconds, 2),
        }
        paths[method] = str(run.save(method, model, "full", results[method]))
    return {"full": results, "checkpoint": paths[a["method"]], "checkpoints": paths}


def run_addition(cfg: dict[str, Any], out_dir: str | Path, source: str = "config") -> dict[str, Any]:
    """Run the addition a validated config describes into ``out_dir``; return (and write) the metrics."""
    with directory_kept_on_success(out_dir) as out:  # a run that fails before writing anything leaves no empty folder
        return _run_addition(cfg, out, source)


def _run_addition(cfg: dict[str, Any], out: Path, source: str) -> dict[str, Any]:
    rt = setup_runtime(cfg["device"], cfg["amp"], cfg["threads"])
    try:
        start = time.perf_counter()
        run = _Run(cfg, out, rt, source)
        mode = cfg["add_task"]["mode"]
        body = _server_only(run) if mode == "server" else _full(run)
        metrics = {
            "mode": mode,
            "base_checkpoint": {"path": str(run.base_path.resolve()), "sha256": run.base_sha},
            "tasks": [t.to_meta() for t in run.tasks],
            "old_tasks": run.old,
            "added_tasks": run.new,
            "test_images": {"all": len(run.test), "old_tasks_only": len(run.old_test), "with_added_task": len(run.new_test)},
            **body,
            "seconds": round(time.perf_counter() - start, 2),
        }
        atomic_write_json(out / METRICS_FILE, metrics)
        return metrics
    finally:
        shutdown_runtime(rt)
