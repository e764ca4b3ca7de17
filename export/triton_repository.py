"""A Triton Inference Server model repository from a bundle: the bundle's model as an ensemble that speaks
the wire contract (``codec/WIRE.md``) unchanged.

    uv run python -m export.triton_repository --artifacts BUNDLE --out REPO [--server-half python|onnxruntime|tensorrt]
        [--max-batch-size N] [--max-queue-delay-us U] [--instances I] [--decode-instances D]
        [--compute-threads T] [--execution-env PATH] [--gpu]

Four models, ``<model>`` being the manifest's ``model_name``::

    REPO/<model>/config.pbtxt             ensemble: bitstream BYTES [N] -> logits_<t>, labels_<t>, active_tasks, top
    REPO/<model>/<v>/                     (empty: an ensemble has no files)
    REPO/<model>_decode/<v>/model.py      Python backend: bitstreams -> latent [N, C, h, w], task_mask [N]
    REPO/<model>_server/<v>/...           the server half, dynamic batching: model.py (Python backend on ONNX
                                          Runtime), model.onnx (onnxruntime_onnx) or model.plan (tensorrt_plan)
    REPO/<model>_answer/<v>/model.py      Python backend: logits + task masks -> labels_<t>, active_tasks, top

Each Python model version holds ``bundle/`` (the manifest, the tables and the server file it runs) and a
copy of the project code it imports (``codec/`` and the server's answer logic), so a repository is
complete on its own and a version keeps the code that answers for it. Third-party packages (numpy < 2,
ONNX Runtime, CompressAI's rANS coder) come from the Python environment named by ``--execution-env``
(``EXECUTION_ENV_PATH``; ``runtime_server/triton_serving/install.py`` builds one), else from the Python of
Triton's own stub.

Versions: writing a bundle into a repository that serves another bundle of the same model adds version
``v + 1`` (Triton then serves the newest); writing the same bundle again rewrites its version. The
ensemble's configuration ``parameters`` carry the bundle's versions, table id and tables hash.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from codec.files import atomic_write_text
from codec.bundle import Bundle, BundleError, file_sha256, load_bundle
from codec.manifest import MANIFEST_NAME, SERVER_INPUT
from codec.wire import ACTIVE_TASKS_OUTPUT, BITSTREAM_INPUT, LABEL_INDEX_OUTPUT, labels_output, logits_output
from runtime_server.triton_serving.common import BUNDLE_DIR, COMPUTE_THREADS, LATENT, MAX_REQUEST_IMAGES, SERVER_OUTPUT_PREFIX, TASK_MASK

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = REPO_ROOT / "runtime_server" / "triton_serving"
PROJECT_CODE = (
    "codec",
    "runtime_server/__init__.py",
    "runtime_server/answers.py",
    "runtime_server/protocol.py",
    "runtime_server/backends.py",
    "runtime_server/triton_serving/__init__.py",
    "runtime_server/triton_serving/common.py",
)
"""What the Python-backend models import from the project, copied into every Python model version."""
SERVER_HALVES = {"python": "python", "onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
"""``--server-half`` -> the Triton backend (``python``) or platform that runs the server half."""
DEFAULT_MAX_BATCH_SIZE = 32


class RepositoryError(ValueError):
    """The repository cannot be written: a bad bundle, or an option the bundle cannot serve."""


@dataclass(frozen=True)
class RepositoryOptions:
    """How Triton serves the bundle. ``max_batch_size`` None: the TensorRT engine's batch profile maximum
    when the bundle has one, else 32."""

    server_half: str = "python"
    max_batch_size: int | None = None
    max_queue_delay_us: int = 2000
    instances: int = 1
    decode_instances: int = 2
    compute_threads: int = 0
    execution_env: str | None = None
    gpu: bool = False


@dataclass(frozen=True)
class WrittenRepository:
    """What :func:`write_repository` wrote: the repository, the ensemble's name and the version."""

    root: Path
    model: str
    version: int
    max_batch_size: int


def _dims(shape: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _tensor(name: str, datatype: str, shape: list[int]) -> str:
    return f'  {{ name: "{name}" data_type: {datatype} dims: {_dims(shape)} }}'


def _tensors(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _parameters(values: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}\n' for k, v in values.items())


def max_batch_size(bundle: Bundle, requested: int | None) -> int:
    """The server half's max batch size: ``requested``, which a TensorRT engine's batch profile bounds,
    else that profile's maximum, else :data:`DEFAULT_MAX_BATCH_SIZE`."""
    engine = bundle.manifest.server.get("tensorrt")
    profile = engine.details.get("batch_profile") if engine is not None else None
    limit = int(profile[2]) if isinstance(profile, list) and len(profile) == 3 else None
    if requested is None:
        return limit or DEFAULT_MAX_BATCH_SIZE
    if requested < 1:
        raise RepositoryError(f"max batch size must be >= 1, got {requested}")
    if limit is not None and requested > limit:
        raise RepositoryError(
            f"max batch size {requested} exceeds the TensorRT engine's batch profile maximum {limit} (manifest server.tensorrt.details)"
        )
    return requested


class _Writer:
    """The configurations and version folders of one bundle."""

    def __init__(self, bundle: Bundle, options: RepositoryOptions, batch: int) -> None:
        self.bundle = bundle
        self.options = options
        self.batch = batch
        manifest = bundle.manifest
        self.model = manifest.model_name
        self.tasks = manifest.task_names
        self.labels = {t: len(manifest.labels(t)) for t in self.tasks}
        self.server_outputs = manifest.server_outputs
        self.detected = len(manifest.server_detected_tasks)
        self.names = {"decode": f"{self.model}_decode", "server": f"{self.model}_server", "answer": f"{self.model}_answer"}

    def _output_width(self, name: str) -> int:
        return self.labels[name[len(logits_output("")) :]] if name.startswith(logits_output("")) else self.detected

    def _python(self, name: str, max_batch: int, instances: int, extra: str, params: dict[str, str]) -> str:
        env = {"EXECUTION_ENV_PATH": self.options.execution_env} if self.options.execution_env else {}
        return (
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            + extra
            + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
            + "version_policy: { latest: { num_versions: 1 } }\n"
            + _parameters({**params, **env})
        )

    def decode_config(self) -> str:
        c, h, w = self.bundle.latent_shape
        io = _tensors("input", [_tensor(BITSTREAM_INPUT, "TYPE_STRING", [-1])]) + _tensors(
            "output", [_tensor(LATENT, "TYPE_FP32", [-1, c, h, w]), _tensor(TASK_MASK, "TYPE_INT64", [-1])]
        )
        return self._python(self.names["decode"], 0, self.options.decode_instances, io, {MAX_REQUEST_IMAGES: str(self.batch)})

    def server_config(self) -> str:
        c, h, w = self.bundle.latent_shape
        io = (
            _tensors("input", [_tensor(SERVER_INPUT, "TYPE_FP32", [c, h, w])])
            + _tensors("output", [_tensor(n, "TYPE_FP32", [self._output_width(n)]) for n in self.server_outputs])
            + f"dynamic_batching {{ max_queue_delay_microseconds: {self.options.max_queue_delay_us} }}\n"
        )
        name = self.names["server"]
        kind = SERVER_HALVES[self.options.server_half]
        if kind == "python":
            return self._python(name, self.batch, self.options.instances, io, {COMPUTE_THREADS: str(self.options.compute_threads)})
        device = "KIND_GPU" if self.options.gpu or kind == "tensorrt_plan" else "KIND_CPU"
        return (
            f'name: "{name}"\nplatform: "{kind}"\nmax_batch_size: {self.batch}\n'
            + io
            + f"instance_group [ {{ count: {self.options.instances} kind: {device} }} ]\n"
            + "version_policy: { latest: { num_versions: 1 } }\n"
        )

    def _wire_outputs(self) -> list[str]:
        """The ensemble's outputs, as ``codec/WIRE.md`` names them."""
        return (
            [_tensor(logits_output(t), "TYPE_FP32", [-1, self.labels[t]]) for t in self.tasks]
            + [_tensor(labels_output(t), "TYPE_STRING", [-1, -1]) for t in self.tasks]
            + [
                _tensor(ACTIVE_TASKS_OUTPUT, "TYPE_BOOL", [-1, len(self.tasks)]),
                _tensor(LABEL_INDEX_OUTPUT, "TYPE_INT32", [-1, len(self.tasks), -1]),
            ]
        )

    def answer_config(self) -> str:
        inputs = [_tensor(SERVER_OUTPUT_PREFIX + n, "TYPE_FP32", [-1, self._output_width(n)]) for n in self.server_outputs]
        inputs.append(_tensor(TASK_MASK, "TYPE_INT64", [-1]))
        return self._python(self.names["answer"], 0, 1, _tensors("input", inputs) + _tensors("output", self._wire_outputs()), {})

    def ensemble_config(self) -> str:
        manifest = self.bundle.manifest

        def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
            maps = "".join(f'      input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in inputs.items())
            maps += "".join(f'      output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in outputs.items())
            return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}'

        handed = {SERVER_OUTPUT_PREFIX + n: SERVER_OUTPUT_PREFIX + n for n in self.server_outputs}
        answers = [
            *(logits_output(t) for t in self.tasks),
            *(labels_output(t) for t in self.tasks),
            ACTIVE_TASKS_OUTPUT,
            LABEL_INDEX_OUTPUT,
        ]
        steps = [
            step(self.names["decode"], {BITSTREAM_INPUT: BITSTREAM_INPUT}, {LATENT: LATENT, TASK_MASK: TASK_MASK}),
            step(self.names["server"], {SERVER_INPUT: LATENT}, {n: SERVER_OUTPUT_PREFIX + n for n in self.server_outputs}),
            step(self.names["answer"], {**handed, TASK_MASK: TASK_MASK}, {n: n for n in answers}),
        ]
        params = {
            "mantis_bundle_versions": json.dumps(manifest.versions, sort_keys=True),
            "mantis_table_id": manifest.tables["table_id"],
            "mantis_tables_sha256": manifest.tables["sha256"],
            "mantis_bitstream_version": str(manifest.bitstream_version),
            "mantis_max_request_images": str(self.batch),
        }
        return (
            f'name: "{self.model}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
            + _tensors("input", [_tensor(BITSTREAM_INPUT, "TYPE_STRING", [-1])])
            + _tensors("output", self._wire_outputs())
            + "ensemble_scheduling {\n  step [\n"
            + ",\n".join(steps)
            + "\n  ]\n}\n"
            + _parameters(params)
        )

    def fill_python(self, folder: Path, source: str, server_files: tuple[str, ...] = ()) -> None:
        """A Python model version: ``model.py``, the project code and ``bundle/`` with the files it needs."""
        shutil.copy2(SOURCES / source, folder / "model.py")
        for part in PROJECT_CODE:
            src, dst = REPO_ROOT / part, folder / part
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        bundle_dir = folder / BUNDLE_DIR
        bundle_dir.mkdir()
        manifest = self.bundle.manifest
        for name in [MANIFEST_NAME, manifest.tables["file"], *(manifest.server[k].file for k in server_files)]:
            shutil.copy2(self.bundle.root / name, bundle_dir / name)

    def fill_server(self, folder: Path) -> None:
        kind = SERVER_HALVES[self.options.server_half]
        if kind == "python":
            self.fill_python(folder, "server_half.py", ("onnx",))
            return
        section = "onnx" if kind == "onnxruntime_onnx" else "tensorrt"
        spec = self.bundle.manifest.server.get(section)
        if spec is None:
            raise RepositoryError(
                f"bundle {self.bundle.root}: manifest has no server.{section} entry for --server-half {self.options.server_half}"
                + (
                    "; export it with `export/split.py --server-engine tensorrt` on a machine with TensorRT"
                    if section == "tensorrt"
                    else ""
                )
            )
        shutil.copy2(self.bundle.path(spec.file), folder / ("model.onnx" if section == "onnx" else "model.plan"))


def _versions(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def _version_for(root: Path, writer: _Writer) -> int:
    """The version this bundle gets: the latest one when it holds this same bundle, else the next."""
    versions = _versions(root / writer.model)
    if not versions:
        return 1
    latest = versions[-1]
    served = root / writer.names["decode"] / str(latest) / "bundle" / MANIFEST_NAME
    if served.is_file() and file_sha256(served) == file_sha256(writer.bundle.root / MANIFEST_NAME):
        return latest
    return latest + 1


def _replace_version(model_dir: Path, version: int, fill: Callable[[Path], None]) -> None:
    """Write version ``version`` of a model into a temporary folder beside it, then move it into place."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir))
    try:
        fill(tmp)
        final = model_dir / str(version)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{version}.old.", dir=model_dir))
            os.replace(final, old / "v")
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_repository(
    artifacts: str | os.PathLike, out: str | os.PathLike, options: RepositoryOptions = RepositoryOptions()
) -> WrittenRepository:
    """Write (or add a version to) the Triton model repository ``out`` for the bundle ``artifacts``."""
    if options.server_half not in SERVER_HALVES:
        raise RepositoryError(f"unknown server half {options.server_half!r}; choose one of {sorted(SERVER_HALVES)}")
    for key in ("instances", "decode_instances"):
        if getattr(options, key) < 1:
            raise RepositoryError(f"{key} must be >= 1, got {getattr(options, key)}")
    if options.max_queue_delay_us < 0 or options.compute_threads < 0:
        raise RepositoryError("max queue delay and compute threads must be >= 0")
    try:
        bundle = load_bundle(artifacts)
    except BundleError as exc:
        raise RepositoryError(str(exc)) from None
    writer = _Writer(bundle, options, max_batch_size(bundle, options.max_batch_size))
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise RepositoryError(f"{root} exists and is not a directory")
    version = _version_for(root, writer)
    _replace_version(root / writer.names["decode"], version, lambda d: writer.fill_python(d, "decode.py"))
    _replace_version(root / writer.names["server"], version, writer.fill_server)
    _replace_version(root / writer.names["answer"], version, lambda d: writer.fill_python(d, "answer.py"))
    _replace_version(root / writer.model, version, lambda d: None)
    atomic_write_text(root / writer.names["decode"] / "config.pbtxt", writer.decode_config())
    atomic_write_text(root / writer.names["server"] / "config.pbtxt", writer.server_config())
    atomic_write_text(root / writer.names["answer"] / "config.pbtxt", writer.answer_config())
    atomic_write_text(root / writer.model / "config.pbtxt", writer.ensemble_config())
    return WrittenRepository(root, writer.model, version, writer.batch)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="write a Triton Inference Server model repository for a MANTiS bundle")
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory written by export/split.py")
    p.add_argument("--out", type=Path, required=True, help="model repository to write (or add a version to)")
    add_options(p)
    return p.parse_args(argv)


def add_options(p: "argparse._ActionsContainer", prefix: str = "") -> None:
    """The repository options (``prefix`` in front of each, for export/split.py)."""
    d = RepositoryOptions()
    p.add_argument(
        f"--{prefix}server-half",
        choices=sorted(SERVER_HALVES),
        default=d.server_half,
        help="how Triton runs the server half: python (ONNX Runtime inside the Python backend; any Triton), "
        "onnxruntime (Triton's onnxruntime_onnx backend), tensorrt (tensorrt_plan: server.plan, GPU)",
    )
    p.add_argument(
        f"--{prefix}max-batch-size",
        type=int,
        default=None,
        help=f"server half's max batch size (default: the TensorRT batch profile maximum, else {DEFAULT_MAX_BATCH_SIZE}); "
        "also the most bitstreams per request",
    )
    p.add_argument(
        f"--{prefix}max-queue-delay-us", type=int, default=d.max_queue_delay_us, help="dynamic batching's longest wait for a batch"
    )
    p.add_argument(f"--{prefix}instances", type=int, default=d.instances, help="server half instances")
    p.add_argument(f"--{prefix}decode-instances", type=int, default=d.decode_instances, help="decode model instances (processes)")
    p.add_argument(
        f"--{prefix}compute-threads",
        type=int,
        default=d.compute_threads,
        help="ONNX Runtime threads per Python server-half instance (0: its default)",
    )
    p.add_argument(
        f"--{prefix}execution-env",
        default=None,
        help="EXECUTION_ENV_PATH of the Python models: a Python environment with numpy<2, onnxruntime (and compressai's coder)",
    )
    p.add_argument(f"--{prefix}gpu", action="store_true", help="run the onnxruntime server half on a GPU instance (tensorrt always does)")


def options_from(args: argparse.Namespace, prefix: str = "") -> RepositoryOptions:
    """:class:`RepositoryOptions` from the arguments :func:`add_options` defined."""
    key = prefix.replace("-", "_")
    return RepositoryOptions(
        server_half=getattr(args, f"{key}server_half"),
        max_batch_size=getattr(args, f"{key}max_batch_size"),
        max_queue_delay_us=getattr(args, f"{key}max_queue_delay_us"),
        instances=getattr(args, f"{key}instances"),
        decode_instances=getattr(args, f"{key}decode_instances"),
        compute_threads=getattr(args, f"{key}compute_threads"),
        execution_env=getattr(args, f"{key}execution_env"),
        gpu=getattr(args, f"{key}gpu"),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        written = write_repository(args.artifacts, args.out, options_from(args))
    except RepositoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote model {written.model} version {written.version} (max batch size {written.max_batch_size}) to {written.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
