"""YAML configs: composed through ``base:``, overridden with ``--set key=value``, validated against a schema.

A config file may name another file (relative to itself) under ``base``; its keys are deep-merged over
that file's. Every key is checked against ``SCHEMA`` as each file is read, so an unknown key or a value
of the wrong type is reported with the file (or ``--set`` override) it came from. After merging, every
schema key must have a value: configs chain to ``default.yaml``, which defines them all.
"""

from __future__ import annotations

import abc
import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import yaml


class ConfigError(ValueError):
    """A config file or override is unreadable, has an unknown key, or a value of the wrong type."""


class Spec(abc.ABC):
    """Type of one config value."""

    @abc.abstractmethod
    def check(self, value: Any) -> str | None:
        """Return a description of what is wrong with ``value``, or None."""


class Scalar(Spec):
    def __init__(
        self,
        kind: type,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        choices: Sequence[str] | None = None,
        nullable: bool = False,
    ) -> None:
        self.kind, self.minimum, self.maximum, self.choices, self.nullable = kind, minimum, maximum, choices, nullable

    def describe(self) -> str:
        name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[self.kind]
        if self.choices:
            name = "one of " + ", ".join(repr(c) for c in self.choices)
        return name + (" or null" if self.nullable else "")

    def check(self, value: Any) -> str | None:
        if value is None:
            return None if self.nullable else f"must be {self.describe()}, got null"
        ok = isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            return f"must be {self.describe()}, got {type(value).__name__} {value!r}"
        if self.choices and value not in self.choices:
            return f"must be {self.describe()}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum}, got {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum}, got {value!r}"
        return None


class ListOf(Spec):
    def __init__(self, item: Scalar, *, length: int | None = None, min_length: int = 1) -> None:
        self.item, self.length, self.min_length = item, length, min_length

    def check(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a list of {self.item.describe()} values, got {type(value).__name__} {value!r}"
        if self.length is not None and len(value) != self.length:
            return f"must have exactly {self.length} entries, got {len(value)}"
        if len(value) < self.min_length:
            return f"must have at least {self.min_length} entries, got {len(value)}"
        for i, v in enumerate(value):
            problem = self.item.check(v)
            if problem:
                return f"entry {i} {problem}"
        return None


INT = Scalar(int, minimum=0)
POS_INT = Scalar(int, minimum=1)
NUM = Scalar(float, minimum=0)
BOOL = Scalar(bool)
PATH = Scalar(str, nullable=True)
EWC_MODULES = ("encoder", "task_detector", "film_generator", "decoders", "tails")
"""The modules whose deployed weights an EWC penalty can anchor (``add_task.ewc_modules``)."""
QUANTIZATION = Scalar(str, choices=("noise", "ste"))
FRACTION = Scalar(float, minimum=0, maximum=1)


def _optim() -> dict[str, Spec]:
    return {"epochs": INT, "lr": NUM, "weight_decay": NUM, "warmup": NUM}


SCHEMA: dict[str, Any] = {
    "seed": INT,
    "threads": INT,
    "device": Scalar(str, choices=("auto", "cpu", "cuda")),
    "amp": BOOL,
    "save_every": POS_INT,
    "data": {
        "kind": Scalar(str, choices=("synthetic", "folder", "webdataset", "photos")),
        "image_size": POS_INT,
        "mean": ListOf(Scalar(float), length=3),
        "std": ListOf(Scalar(float, minimum=1e-6), length=3),
        "batch_size": POS_INT,
        "eval_batch_size": POS_INT,
        "num_workers": INT,
        "cache": BOOL,
        "synthetic": {
            "tasks": ListOf(Scalar(str)),
            "train_size": POS_INT,
            "val_size": POS_INT,
            "test_size": POS_INT,
            "two_task_fraction": NUM,
        },
        "folder": {"root": PATH, "task_map": PATH},
        "webdataset": {"train": PATH, "val": PATH, "test": PATH, "task_map": PATH},
        "photos": {
            "test": ListOf(Scalar(str), min_length=1),
            "train_crops": POS_INT,
            "crop_scale": ListOf(Scalar(float, minimum=1e-3, maximum=1), length=2),
            "crop_ratio": ListOf(Scalar(float, minimum=1e-3), length=2),
        },
    },
    "teacher": {
        "kind": Scalar(str, choices=("cnn", "torchvision", "timm", "efficientnet_lite")),
        "channels": ListOf(POS_INT, length=4),
        "arch": PATH,
        "weights": PATH,
        "distill_layer": PATH,
        **_optim(),
    },
    "model": {
        "stem_channels": POS_INT,
        "stem_layer": PATH,
        "encoder_channels": ListOf(POS_INT),
        "latent_channels": POS_INT,
        "detector_hidden": POS_INT,
        "film_hidden": POS_INT,
        "decoder_hidden": POS_INT,
    },
    "stage1": {
        **_optim(),
        "aux_lr": NUM,
        "beta": NUM,
        "beta_warmup": FRACTION,
        "detection_weight": NUM,
        "quantization": QUANTIZATION,
        "saliency": FRACTION,
    },
    "stage2": {
        **_optim(),
        "aux_lr": NUM,
        "beta": NUM,
        "quantization": QUANTIZATION,
        "detection_weight": NUM,
        "encoder_lr_scale": NUM,
        "kd_weight": NUM,
        "kd_temperature": Scalar(float, minimum=1e-3),
        "beta_warmup": FRACTION,
        "label_smoothing": FRACTION,
        "freeze_tails": BOOL,
        "balancing": Scalar(str, choices=("fixed", "famo")),
        "balancing_lr": NUM,
        "balancing_decay": NUM,
        "seed": Scalar(int, minimum=0, nullable=True),
    },
    "ablations": {"no_film": BOOL, "oracle": BOOL},
    "add_task": {
        "base_checkpoint": PATH,
        "mode": Scalar(str, choices=("server", "full")),
        "method": Scalar(str, choices=("replay_ewc", "naive")),
        "compare_naive": BOOL,
        **_optim(),
        "aux_lr": NUM,
        "beta": Scalar(float, minimum=0, nullable=True),
        "init_from": Scalar(str, nullable=True),
        "detector_hidden": POS_INT,
        "head_epochs": INT,
        "head_lr": NUM,
        "replay_size": POS_INT,
        "replay_fraction": NUM,
        "ewc_weight": NUM,
        "ewc_modules": ListOf(Scalar(str, choices=EWC_MODULES)),
        "fisher_samples": POS_INT,
        "export_target": Scalar(str, choices=("executorch", "coreml", "onnx", "tensorrt"), nullable=True),
    },
}


def _check_tree(tree: Any, schema: dict[str, Any], source: str, prefix: str = "") -> None:
    if not isinstance(tree, dict):
        where = f"section {prefix.rstrip('.')!r}" if prefix else "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(tree).__name__}")
    for key, value in tree.items():
        dotted = prefix + str(key)
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{source}: unknown key {dotted!r} (known keys here: {known})")
        spec = schema[key]
        if isinstance(spec, dict):
            _check_tree(value, spec, source, dotted + ".")
        else:
            problem = spec.check(value)
            if problem:
                raise ConfigError(f"{source}: {dotted} {problem}")


def _missing(tree: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, spec in schema.items():
        if key not in tree:
            out.append(prefix + key)
        elif isinstance(spec, dict):
            out += _missing(tree[key], spec, prefix + key + ".")
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_file(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: 'base' chain loops back to this file")
    if not path.is_file():
        raise ConfigError(f"{chain[-1] if chain else 'config'}: config file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(doc).__name__}")
    base = doc.pop("base", None)
    _check_tree(doc, SCHEMA, str(path))
    if base is None:
        return doc
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a file name, got {base!r}")
    return _merge(_load_file(path.parent / base, chain + (path,)), doc)


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` (value in YAML syntax) -> ``{"a": {"b": {"c": value}}}``."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. stage1.beta=0.05")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text}: value is not valid YAML ({exc})") from None
    tree: dict[str, Any] = {}
    node = tree
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {text}: empty key component")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Load, compose, override and validate a config; raise ``ConfigError`` naming the file and key."""
    path = Path(path)
    cfg = _load_file(path, ())
    for text in overrides:
        tree = parse_override(text)
        _check_tree(tree, SCHEMA, f"--set {text}")
        cfg = _merge(cfg, tree)
    missing = _missing(cfg, SCHEMA)
    if missing:
        raise ConfigError(f"{path.resolve()}: missing keys {missing} (does the file chain to default.yaml through 'base'?)")
    _check_consistency(cfg, str(path.resolve()))
    return cfg


def _check_consistency(cfg: dict[str, Any], source: str) -> None:
    data, teacher = cfg["data"], cfg["teacher"]
    stride = 2 ** (1 + len(cfg["model"]["encoder_channels"]))  # the own stem's; a teacher stem's is checked when it is built
    if cfg["model"]["stem_layer"] is None and data["image_size"] % max(stride, 16):
        raise ConfigError(f"{source}: data.image_size {data['image_size']} must be a multiple of {max(stride, 16)}")
    if data["kind"] == "folder" and not (data["folder"]["root"] and data["folder"]["task_map"]):
        raise ConfigError(f"{source}: data.kind 'folder' needs data.folder.root and data.folder.task_map")
    if data["kind"] == "webdataset":
        for key in ("train", "val", "task_map"):
            if not data["webdataset"][key]:
                raise ConfigError(f"{source}: data.kind 'webdataset' needs data.webdataset.{key}")
    if data["kind"] == "synthetic" and not 0 <= data["synthetic"]["two_task_fraction"] <= 1:
        raise ConfigError(f"{source}: data.synthetic.two_task_fraction must be in [0, 1]")
    if not 0 <= cfg["add_task"]["replay_fraction"] < 1:
        raise ConfigError(f"{source}: add_task.replay_fraction must be in [0, 1)")
    if data["kind"] == "photos":
        photos = data["photos"]
        for key in ("crop_scale", "crop_ratio"):
            if photos[key][0] > photos[key][1]:
                raise ConfigError(f"{source}: data.photos.{key} must be [low, high], got {photos[key]}")
        if teacher["kind"] == "cnn":
            raise ConfigError(f"{source}: data.kind 'photos' is labelled by a pretrained teacher; teacher.kind 'cnn' has none")
    if cfg["model"]["stem_layer"] is not None and teacher["kind"] == "cnn":
        raise ConfigError(f"{source}: model.stem_layer names a layer of a pretrained teacher to cut; teacher.kind 'cnn' is not cut by name")
    if teacher["kind"] != "cnn":
        kind = teacher["kind"]
        for key in ("arch", "weights", "distill_layer"):
            if not teacher[key]:
                raise ConfigError(f"{source}: teacher.kind {kind!r} needs teacher.{key}")
        if data["kind"] == "synthetic":
            raise ConfigError(
                f"{source}: a {kind} teacher needs data.kind 'photos', or 'folder' or 'webdataset' with a teacher_index task map"
            )


# Options added after checkpoints were first made: while one holds this value (its default, which keeps
# the earlier behaviour) it is left out of the fingerprint, so finished stages stay reusable.
FINGERPRINT_NEUTRAL: dict[str, Any] = {
    "data.webdataset": {"train": None, "val": None, "test": None, "task_map": None},
    "data.photos": {
        "test": ["chelsea", "coffee", "rocket", "clock", "flower", "camera"],
        "train_crops": 48,
        "crop_scale": [0.25, 1.0],
        "crop_ratio": [0.75, 1.3333333],
    },
    "model.stem_layer": None,
    "stage1.beta_warmup": 0.0,
    "stage1.saliency": 0.0,
    "stage2.beta_warmup": 0.0,
    "stage2.label_smoothing": 0.0,
    "stage2.freeze_tails": False,
    "stage2.balancing": "fixed",
    "stage2.balancing_lr": 0.025,
    "stage2.balancing_decay": 0.001,
    "stage2.seed": None,
}


def fingerprint(cfg: dict[str, Any], sections: Sequence[str]) -> str:
    """Hash of the config sections that determine a stage's result (for caching and resume)."""
    picked = {}
    for s in sections:
        value = cfg[s]
        if s == "data":
            value = {k: v for k, v in value.items() if k not in ("num_workers", "eval_batch_size", "cache")}
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if FINGERPRINT_NEUTRAL.get(f"{s}.{k}", ...) != v}
        picked[s] = value
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]
