"""The bundle manifest: one typed schema, written by the export and read by both runtimes (``codec/MANIFEST.md``).

This module is what ``manifest.json`` holds: its dataclasses, their strict JSON reading (``from_dict``),
writing (``to_dict``) and cross-field checks, and the task-mask rule it names. Reading a bundle directory
(the manifest file, file hashes, entropy tables) is :mod:`codec.bundle`::

    export/split.py ── Manifest.to_dict() ──► manifest.json ──► Manifest.from_dict() ──► codec.bundle.load_bundle() ──► Bundle
                                                                 (every key and value     (file hashes,                   (runtimes)
                                                                  checked, unknown ones    entropy tables)
                                                                  refused)

Every value the runtimes act on is validated here: an unsupported value (a colour order, a resize
method, a layout, a task-mask rule, an edge runtime this code does not implement) is a
:class:`ManifestError` naming the key and the supported values, never a silent default. Pure Python +
numpy: a device reading a bundle needs neither torch nor the training code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from codec.format import MAX_MASK_TASKS
from codec.wire import logits_output

BUNDLE_FORMAT = "mantis-bundle/1"
MANIFEST_NAME = "manifest.json"
"""The manifest's file name in a bundle directory."""

COLORS = ("RGB",)
VALUE_RANGES = ((0.0, 1.0),)
RESIZE_METHODS = ("bilinear",)
LAYOUTS = ("NCHW",)
TASK_MASK_RULES = {"positive-else-argmax": "task t is active when its logit is > 0; when none is, the argmax task"}
EDGE_RUNTIMES = {"executorch": ".pte", "onnxruntime": ".onnx", "coreml": ".mlpackage"}
"""Edge runtime name -> the file suffix of its program."""
EDGE_INPUT = "image"
EDGE_OUTPUTS = ("latent", "task_logits")
SERVER_INPUT = "latent"
DETECT_OUTPUT = "detect_logits"
"""The server half's extra output when it detects tasks itself: ``(batch, n)``, one logit per server-detected task."""
MAX_MODEL_TASKS = 32
"""Tasks one model may have: the edge-detected ones (at most :data:`codec.format.MAX_MASK_TASKS`, what a
bitstream's task mask can name) plus the ones its server half detects itself (``server_detected_tasks``)."""
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
"""A model name: what KServe URLs (``/v2/models/NAME``) and Triton model repositories (a directory per
model) take without escaping: letters, digits, ``_``, ``-``, ``.``, starting with a letter or digit, at
most 64 characters."""

T = TypeVar("T")


class ManifestError(ValueError):
    """A manifest value is missing, of the wrong type, or unsupported; the message names the key."""


def model_name_problem(name: str) -> str | None:
    """What makes ``name`` unusable as a model name (:data:`MODEL_NAME_PATTERN`), or None."""
    if re.fullmatch(MODEL_NAME_PATTERN, name):
        return None
    return f"{name!r} is not a safe model name (letters, digits, '_', '-', '.', starting with a letter or digit, at most 64 characters)"


class _Fields:
    """Strict reader of one JSON object: typed required/optional keys, then :meth:`done` refuses the rest."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise ManifestError(f"{where}: must be a JSON object, got {type(doc).__name__}")
        self.doc, self.where, self.seen = doc, where, set()

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., check: Callable[[Any], bool] | None = None) -> Any:
        self.seen.add(key)
        if key not in self.doc:
            if default is ...:
                raise ManifestError(f"{self.where}.{key}: missing")
            return default
        value = self.doc[key]
        if isinstance(value, bool) and kind not in (bool, (bool,)) or not isinstance(value, kind):
            raise ManifestError(f"{self.where}.{key}: expected {_kind_name(kind)}, got {value!r}")
        if check is not None and not check(value):
            raise ManifestError(f"{self.where}.{key}: invalid value {value!r}")
        return value

    def choice(self, key: str, supported: Sequence[str]) -> str:
        value = self.get(key, str)
        if value not in supported:
            raise ManifestError(f"{self.where}.{key}: unsupported value {value!r}; this code supports {list(supported)}")
        return value

    def sub(self, key: str, parse: Callable[[Any, str], T], default: Any = ...) -> T:
        self.seen.add(key)
        if key not in self.doc:
            if default is ...:
                raise ManifestError(f"{self.where}.{key}: missing")
            return default
        return parse(self.doc[key], f"{self.where}.{key}")

    def done(self) -> None:
        unknown = sorted(set(self.doc) - self.seen)
        if unknown:
            raise ManifestError(f"{self.where}: unknown keys {unknown}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {"str": "a string", "int": "an integer", "float": "a number", "list": "a list", "dict": "an object", "bool": "a boolean"}.get(
            k.__name__, k.__name__
        )
        for k in kinds
    )


def _numbers(value: Any, where: str, n: int | None = None, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(value, list) or (n is not None and len(value) != n):
        raise ManifestError(f"{where}: expected a list of {n or 'some'} numbers, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or (positive and v <= 0):
            raise ManifestError(f"{where}: expected {'positive ' if positive else ''}finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ManifestError(f"{where}: expected an object of strings, got {value!r}")
    return dict(value)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object, got {value!r}")
    return dict(value)


def _positive_int(v: Any) -> bool:
    return v > 0


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the edge client's input: decode -> ``color`` -> resize to ``input_size``
    (H, W) with ``resize`` -> scale to ``value_range`` -> ``(x - mean) / std`` -> ``layout``.

    The same schema is stored in every training checkpoint and in every bundle manifest; the Python
    and Java edge runtimes read it and refuse values they do not implement."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    resize: str = "bilinear"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        where = "preprocessing"
        if len(self.input_size) != 2 or any(int(v) < 1 for v in self.input_size):
            raise ManifestError(f"{where}.input_size: expected [H, W] of positive integers, got {list(self.input_size)}")
        _numbers(list(self.mean), f"{where}.mean", 3)
        _numbers(list(self.std), f"{where}.std", 3, positive=True)
        for key, value, supported in (
            ("color", self.color, COLORS),
            ("resize", self.resize, RESIZE_METHODS),
            ("layout", self.layout, LAYOUTS),
        ):
            if value not in supported:
                raise ManifestError(f"{where}.{key}: unsupported value {value!r}; this code supports {list(supported)}")
        if tuple(float(v) for v in self.value_range) not in VALUE_RANGES:
            raise ManifestError(
                f"{where}.value_range: unsupported value {list(self.value_range)}; this code supports {[list(r) for r in VALUE_RANGES]}"
            )

    @classmethod
    def from_dict(cls, doc: Any, where: str = "preprocessing") -> "Preprocessing":
        f = _Fields(doc, where)
        size = f.get("input_size", list)
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise ManifestError(f"{where}.input_size: expected [H, W] of positive integers, got {size!r}")
        out = cls(
            input_size=(size[0], size[1]),
            mean=_numbers(f.get("mean", list), f"{where}.mean", 3),  # type: ignore[arg-type]
            std=_numbers(f.get("std", list), f"{where}.std", 3, positive=True),  # type: ignore[arg-type]
            color=f.choice("color", COLORS),
            value_range=_numbers(f.get("value_range", list), f"{where}.value_range", 2),  # type: ignore[arg-type]
            resize=f.choice("resize", RESIZE_METHODS),
            layout=f.choice("layout", LAYOUTS),
        )
        f.done()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": [int(v) for v in self.input_size],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "color": self.color,
            "value_range": [float(v) for v in self.value_range],
            "resize": self.resize,
            "layout": self.layout,
        }


@dataclass(frozen=True)
class TaskInfo:
    """One task: its name (the ``<task>`` of the wire outputs) and label names (label ``i`` is ``labels[i]``)."""

    name: str
    labels: tuple[str, ...]

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> "TaskInfo":
        f = _Fields(doc, where)
        name = f.get("name", str, check=bool)
        labels = f.get("labels", list)
        if not labels or not all(isinstance(x, str) for x in labels) or len(set(labels)) != len(labels):
            raise ManifestError(f"{where}.labels: expected distinct label strings, got {labels!r}")
        f.done()
        return cls(name, tuple(labels))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels)}


@dataclass(frozen=True)
class TensorSpec:
    """A model file's input or output: name, dtype and shape (a string names a dynamic dimension)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> "TensorSpec":
        f = _Fields(doc, where)
        out = cls(f.get("name", str), f.get("dtype", str), tuple(f.get("shape", list)))
        f.done()
        if not all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in out.shape):
            raise ManifestError(f"{where}.shape: expected positive integers or dimension names, got {list(out.shape)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _specs(value: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list of tensors, got {value!r}")
    return tuple(TensorSpec.from_dict(v, f"{where}[{i}]") for i, v in enumerate(value))


@dataclass(frozen=True)
class EdgeSection:
    """The edge client: export target, file, the runtime that runs it, its tensors, how it was quantized
    and how it compared with the eager model at export."""

    target: str
    file: str
    runtime: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    quantization: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "edge") -> "EdgeSection":
        f = _Fields(doc, where)
        out = cls(
            target=f.get("target", str),
            file=f.get("file", str),
            runtime=f.choice("runtime", tuple(EDGE_RUNTIMES)),
            inputs=f.sub("inputs", _specs),
            outputs=f.sub("outputs", _specs),
            quantization=f.sub("quantization", _object, {}),
            check=f.sub("check", _object, {}),
        )
        f.done()
        if not out.file.endswith(EDGE_RUNTIMES[out.runtime]):
            raise ManifestError(f"{where}.file: {out.file!r} is not a {out.runtime} program (expected a {EDGE_RUNTIMES[out.runtime]} file)")
        if [s.name for s in out.inputs] != [EDGE_INPUT]:
            raise ManifestError(f"{where}.inputs: expected one input {EDGE_INPUT!r}, got {[s.name for s in out.inputs]}")
        if [s.name for s in out.outputs] != list(EDGE_OUTPUTS):
            raise ManifestError(f"{where}.outputs: expected {list(EDGE_OUTPUTS)}, got {[s.name for s in out.outputs]}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "file": self.file,
            "runtime": self.runtime,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "quantization": self.quantization,
            "check": self.check,
        }


@dataclass(frozen=True)
class ServerFile:
    """One file of the server half, the eager-vs-file check made at export, and build details."""

    file: str
    check: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> "ServerFile":
        f = _Fields(doc, where)
        out = cls(
            file=f.get("file", str),
            check=f.sub("check", _object, {}),
            inputs=f.sub("inputs", _specs, ()),
            outputs=f.sub("outputs", _specs, ()),
            details=f.sub("details", _object, {}),
        )
        f.done()
        return out

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"file": self.file, "check": self.check}
        if self.inputs:
            doc["inputs"] = [s.to_dict() for s in self.inputs]
        if self.outputs:
            doc["outputs"] = [s.to_dict() for s in self.outputs]
        if self.details:
            doc["details"] = self.details
        return doc


DEFAULT_VERSIONS = {"edge": 1, "server": 1}
"""Versions of a model that never learned tasks after deployment."""


def _versions(doc: Any, where: str) -> dict[str, int]:
    f = _Fields(doc, where)
    out = {k: f.get(k, int, check=_positive_int) for k in ("edge", "server")}
    f.done()
    return out


def _lineage(doc: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(doc, list):
        raise ManifestError(f"{where}: expected a list, got {type(doc).__name__}")
    out = []
    for i, entry in enumerate(doc):
        f = _Fields(entry, f"{where}[{i}]")
        out.append(
            {
                "versions": f.sub("versions", _versions),
                "checkpoint_sha256": f.get("checkpoint_sha256", str),
                "table_id": f.get("table_id", str, check=bool),
                "tables_sha256": f.get("tables_sha256", str, check=bool),
            }
        )
        f.done()
    return tuple(out)


SERVER_FILES = ("onnx", "torch", "onnx_fp16", "tensorrt")
"""Keys of the manifest's ``server`` section: ``onnx`` and ``torch`` always, the others for TensorRT."""


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of a bundle, every field typed and checked (see ``codec/MANIFEST.md``)."""

    model_name: str
    bitstream_version: int
    source_checkpoint: dict[str, str]
    producer: dict[str, str]
    preprocessing: Preprocessing
    tasks: tuple[TaskInfo, ...]
    task_mask_rule: str
    latent: tuple[int, int, int]
    tables: dict[str, str]
    edge: EdgeSection
    server: dict[str, ServerFile]
    files: dict[str, str] = field(default_factory=dict)
    format: str = BUNDLE_FORMAT
    server_detected_tasks: tuple[str, ...] = ()
    versions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_VERSIONS))
    lineage: tuple[dict[str, Any], ...] = ()

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def edge_tasks(self) -> int:
        """How many tasks (the first ones) the edge client's task detector and the bitstream's task mask cover."""
        return len(self.tasks) - len(self.server_detected_tasks)

    @property
    def server_outputs(self) -> list[str]:
        """The server half's outputs in order: ``logits_<task>`` per task, then ``detect_logits`` when it
        detects tasks itself."""
        return [logits_output(t) for t in self.task_names] + ([DETECT_OUTPUT] if self.server_detected_tasks else [])

    def earlier_version(self, table_id: str) -> dict[str, Any] | None:
        """The latest ``lineage`` entry (a version this model replaced) whose tables have ``table_id``."""
        return next((e for e in reversed(self.lineage) if e.get("table_id") == table_id), None)

    def labels(self, task: str) -> list[str]:
        """Label names of ``task``; ``KeyError`` naming the known tasks otherwise."""
        for t in self.tasks:
            if t.name == task:
                return list(t.labels)
        raise KeyError(f"unknown task {task!r}; the model has tasks {self.task_names}")

    @classmethod
    def from_dict(cls, doc: Any, where: str = MANIFEST_NAME) -> "Manifest":
        f = _Fields(doc, where)
        fmt = f.get("format", str)
        if fmt != BUNDLE_FORMAT:
            raise ManifestError(f"{where}: unknown format {fmt!r}, expected {BUNDLE_FORMAT!r}")
        tasks = f.get("tasks", list)
        latent = _Fields(f.get("latent", dict), f"{where}.latent")
        shape = tuple(latent.get(k, int, check=_positive_int) for k in ("channels", "height", "width"))
        latent.done()
        tables = _Fields(f.get("tables", dict), f"{where}.tables")
        tables_ref = {k: tables.get(k, str, check=bool) for k in ("file", "sha256", "table_id")}
        tables.done()
        server_doc = _Fields(f.get("server", dict), f"{where}.server")
        server = {k: server_doc.sub(k, ServerFile.from_dict) for k in SERVER_FILES if k in server_doc.doc or k in ("onnx", "torch")}
        server_doc.done()
        source = _Fields(f.get("source_checkpoint", dict), f"{where}.source_checkpoint")
        source_ref = {k: source.get(k, str) for k in ("path", "sha256")}
        source.done()
        out = cls(
            model_name=f.get("model_name", str),
            bitstream_version=f.get("bitstream_version", int),
            source_checkpoint=source_ref,
            producer=f.sub("producer", _str_map),
            preprocessing=f.sub("preprocessing", Preprocessing.from_dict),
            tasks=tuple(TaskInfo.from_dict(t, f"{where}.tasks[{i}]") for i, t in enumerate(tasks)),
            task_mask_rule=f.choice("task_mask_rule", tuple(TASK_MASK_RULES)),
            latent=shape,  # type: ignore[arg-type]
            tables=tables_ref,
            edge=f.sub("edge", EdgeSection.from_dict),
            server=server,
            files=f.sub("files", _str_map),
            format=fmt,
            server_detected_tasks=tuple(f.get("server_detected_tasks", list, ())),
            versions=f.sub("versions", _versions, dict(DEFAULT_VERSIONS)),
            lineage=f.sub("lineage", _lineage, ()),
        )
        f.done()
        out.validate(where)
        return out

    def validate(self, where: str = MANIFEST_NAME) -> None:
        """Cross-field checks: tasks, file entries inside the bundle, referenced files listed, names of
        the server half's tensors as the wire contract names them."""
        problem = model_name_problem(self.model_name)
        if problem:
            raise ManifestError(f"{where}.model_name: {problem}")
        if not 1 <= len(self.tasks) <= MAX_MODEL_TASKS or len(set(self.task_names)) != len(self.tasks):
            raise ManifestError(f"{where}.tasks: expected 1..{MAX_MODEL_TASKS} tasks with distinct names, got {self.task_names}")
        for name in self.files:
            p = Path(name)
            if p.is_absolute() or ".." in p.parts or not name:
                raise ManifestError(f"{where}.files: entry {name!r} points outside the bundle")
        if self.files:
            referenced = [self.tables["file"], self.edge.file, *(s.file for s in self.server.values())]
            unlisted = [n for n in referenced if n not in self.files]
            if unlisted:
                raise ManifestError(f"{where}: {unlisted} are referenced but not listed (and hashed) in 'files'")
        detected = list(self.server_detected_tasks)
        if (
            not all(isinstance(t, str) for t in detected)
            or len(detected) >= len(self.tasks)
            or detected != self.task_names[len(self.tasks) - len(detected) :]
        ):
            raise ManifestError(
                f"{where}.server_detected_tasks: must name the last tasks of {self.task_names} (and leave the edge at least one), got {detected}"
            )
        if self.edge_tasks > MAX_MASK_TASKS:
            raise ManifestError(
                f"{where}.tasks: {self.edge_tasks} tasks are detected on the edge, a bitstream's task mask names at most "
                f"{MAX_MASK_TASKS} (the server half may detect the others: 'server_detected_tasks')"
            )
        onnx = self.server["onnx"]
        if onnx.outputs and [s.name for s in onnx.outputs] != self.server_outputs:
            raise ManifestError(f"{where}.server.onnx.outputs: expected {self.server_outputs}, got {[s.name for s in onnx.outputs]}")
        if onnx.inputs and [s.name for s in onnx.inputs] != [SERVER_INPUT]:
            raise ManifestError(f"{where}.server.onnx.inputs: expected one input {SERVER_INPUT!r}, got {[s.name for s in onnx.inputs]}")

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON; the fields of added tasks (``server_detected_tasks``, ``versions``,
        ``lineage``) only where they differ from a model that never learned tasks after deployment."""
        doc: dict[str, Any] = {
            "format": self.format,
            "model_name": self.model_name,
            "bitstream_version": self.bitstream_version,
            "source_checkpoint": dict(self.source_checkpoint),
            "producer": dict(self.producer),
            "preprocessing": self.preprocessing.to_dict(),
            "tasks": [t.to_dict() for t in self.tasks],
            "task_mask_rule": self.task_mask_rule,
            "latent": dict(zip(("channels", "height", "width"), self.latent)),
            "tables": dict(self.tables),
            "edge": self.edge.to_dict(),
            "server": {k: v.to_dict() for k, v in self.server.items()},
            "files": dict(self.files),
        }
        if self.server_detected_tasks:
            doc["server_detected_tasks"] = list(self.server_detected_tasks)
        if self.versions != DEFAULT_VERSIONS:
            doc["versions"] = dict(self.versions)
        if self.lineage:
            doc["lineage"] = [dict(e) for e in self.lineage]
        return doc


def task_mask_from_logits(task_logits: np.ndarray) -> int:
    """Bit ``t`` set when task ``t`` is active, by the ``positive-else-argmax`` rule: every task whose
    logit is above 0, else the argmax."""
    logits = np.asarray(task_logits, dtype=np.float64).reshape(-1)
    if logits.size == 0 or logits.size > MAX_MASK_TASKS or not np.all(np.isfinite(logits)):
        raise ValueError(f"task logits must be 1..{MAX_MASK_TASKS} finite values, got {logits.size} values: {logits!r}")
    active = np.flatnonzero(logits > 0)
    if active.size == 0:
        active = np.array([int(np.argmax(logits))])
    return int(sum(1 << int(t) for t in active))
