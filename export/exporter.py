"""Splitting a Stage 2 checkpoint into a self-describing bundle (layout and manifest: ``codec/MANIFEST.md``).

``export_bundle(ExportOptions(...))`` loads the checkpoint, picks the calibration set and a held-out check
set from the training data pipeline, builds the entropy tables, exports and checks the int8 edge client
and the server half, and writes the bundle atomically (``export/bundle_writer.py``).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import codec
from codec.bundle import TABLES_FILE, file_sha256
from codec.format import FORMAT_VERSION
from codec.manifest import (
    DEFAULT_VERSIONS,
    DETECT_OUTPUT,
    EDGE_INPUT,
    EDGE_OUTPUTS,
    SERVER_INPUT,
    EdgeSection,
    Manifest,
    Preprocessing,
    ServerFile,
    TaskInfo,
    TensorSpec,
    model_name_problem,
)
from codec.wire import logits_output
from export import bundle_writer, server as server_export, verify
from export.calibration_set import CalibrationSourceError, SampleSet, data_config, load_split, select_samples
from export.edge import COREML_INT8_OPS, EDGE_TARGETS, export_edge, inspect_coreml
from training.tables import tables_from_bottleneck
from export.errors import ExportError
from export.quantize import OBSERVERS, SCHEME, check_keep_float, quantizable_layers
from export.tensorrt_engine import TensorRTUnavailable, build_engine
from runtime_edge.models import EdgeRuntimeError, coreml_available, load_edge_model
from runtime_server.backends import BackendUnavailableError, open_backend

TASK_MASK_RULE = "positive-else-argmax"
"""The rule the edge runtime applies to the task detector's logits (``codec.manifest.task_mask_from_logits``)."""

SERVER_ENGINES = ("tensorrt",)
PRODUCER_PACKAGES = ("torch", "executorch", "onnx", "onnxruntime", "coremltools", "compressai", "numpy")


@dataclass
class ExportOptions:
    """Everything ``export/split.py`` takes on the command line."""

    checkpoint: Path
    target: str
    out: Path
    calibration_samples: int = 128
    calibration_split: str = "train"
    observer: str = "histogram"
    data_config: Path | None = None
    keep_float: tuple[str, ...] = ()
    check_samples: int = 32
    check_split: str = "val"
    server_engine: str | None = None
    force: bool = False
    seed: int = 0
    model_name: str | None = None
    """The served model's name (``codec.manifest.MODEL_NAME_PATTERN``); None: :func:`default_model_name`."""


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    notes: list[str] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f"[export] {msg}", flush=True)


def producer_versions() -> dict[str, str]:
    out = {"mantis": importlib.metadata.version("mantis")}
    for name in PRODUCER_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _data_name(data: dict[str, Any]) -> str:
    """A short name for the training data: the image folder's or the shard directory's name."""
    kind = data.get("kind", "")
    if kind == "folder" and data.get("folder", {}).get("root"):
        return Path(data["folder"]["root"]).name
    if kind == "webdataset" and data.get("webdataset", {}).get("train"):
        return Path(data["webdataset"]["train"]).parent.name or kind
    return str(kind)


def default_model_name(meta: dict[str, Any], checkpoint: Path) -> str:
    """The model name a bundle gets without ``--model-name``: the training run (the checkpoint's directory)
    and its data, e.g. ``pets-Pets-photos`` for ``runs/pets/stage2.safetensors`` trained on the folder
    ``Pets photos``; another checkpoint of the run (the No-FiLM ablation) adds its file name. A checkpoint
    with tasks added to a deployed model takes that model's run, so the new version keeps its name."""
    base = meta.get("base_checkpoint")
    source = Path(base["path"]) if isinstance(base, dict) and base.get("path") else Path(checkpoint)
    parts = [source.absolute().parent.name, _data_name(meta.get("config", {}).get("data", {}))]
    if base is None and source.stem != "stage2":
        parts.append(source.stem)
    words: list[str] = []
    for part in parts:
        word = re.sub(r"[^A-Za-z0-9_.-]+", "-", part).strip("-_.")
        if word and word not in words:
            words.append(word)
    return "-".join(words)[:64].rstrip("-_.") or "mantis"


def load_source(checkpoint: Path) -> tuple[Any, dict[str, Any], str]:
    """``(model, meta, sha256)`` of a Stage 2 checkpoint; ``ExportError`` for anything else."""
    from training.build import load_model
    from training.checkpoint import CheckpointError, read_checkpoint

    if not checkpoint.is_file():
        raise ExportError(f"checkpoint {checkpoint}: no such file")
    try:
        _, meta = read_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise ExportError(f"cannot export: {exc}") from None
    if meta["stage"] != "stage2":
        raise ExportError(
            f"checkpoint {checkpoint} holds a {meta['stage']} model; export needs a Stage 2 checkpoint "
            "(task detector, FiLM and per-task heads): finish Stage 2 training first"
        )
    try:
        model, meta = load_model(checkpoint, stage="stage2")
    except CheckpointError as exc:
        raise ExportError(f"cannot export: {exc}") from None
    return model, meta, file_sha256(checkpoint)


def pick_samples(cfg: dict[str, Any], split: str, n: int, seed: int, task_names: list[str]) -> SampleSet:
    try:
        return select_samples(load_split(cfg, split, task_names), split, n, seed, task_names)
    except CalibrationSourceError as exc:
        raise ExportError(str(exc)) from None


def _tensor(name: str, shape: list[Any]) -> TensorSpec:
    return TensorSpec(name, "float32", tuple(shape))


def _check_coreml(path: Path, reference: torch.nn.Module, client: torch.nn.Module, images, tables, shapes) -> dict[str, Any]:
    """Structure of the ``.mlpackage`` here; numbers on macOS, else the int8 graph it was converted from."""
    info = inspect_coreml(path)
    want_in = [_tensor(EDGE_INPUT, shapes[EDGE_INPUT]).to_dict()]
    want_out = [_tensor(n, shapes[n]).to_dict() for n in EDGE_OUTPUTS]
    if info["inputs"] != want_in or info["outputs"] != want_out:
        raise ExportError(f"{path.name}: inputs/outputs {info['inputs']} {info['outputs']}, expected {want_in} {want_out}")
    missing = [op for op in COREML_INT8_OPS if not info["ops"].get(op)]
    if missing:
        raise ExportError(f"{path.name}: not int8, the ML program has no {missing} ops (ops: {info['ops']})")
    ok, reason = coreml_available()
    if ok:
        return {**verify.check_edge(_edge_model(path, "coreml").run, client, images, tables, reference), "structure": info}
    result = verify.check_edge(verify.eager_outputs(reference), client, images, tables)
    result["numeric"] = f"skipped: {reason}; checked the int8 PyTorch graph that was converted instead"
    result["structure"] = info
    return result


def _edge_model(path: Path, runtime: str) -> Any:
    """The exported edge client on the runtime devices use (:mod:`runtime_edge.models`); a ``.pte`` on the
    official ExecuTorch runtime, the one that wrote it (the torch-free one is checked against it in the tests)."""
    try:
        return load_edge_model(path, runtime, pte_runtime="official")
    except EdgeRuntimeError as exc:
        raise ExportError(f"cannot check {path.name}: {exc}") from None


def _server_backend(kind: str, path: Path, output_names: list[str]) -> Any:
    """A server-half file on the backend ``serve.py`` uses for it (:mod:`runtime_server.backends`)."""
    try:
        return open_backend(kind, path, output_names, threads=1)
    except BackendUnavailableError as exc:
        raise ExportError(f"cannot check {path.name}: {exc}") from None


def export_bundle(opts: ExportOptions, log: Callable[[str], None] = _log) -> ExportResult:
    """Write the bundle for ``opts`` (see the module docstring); ``ExportError`` on any failure, with
    nothing written."""
    if opts.target not in EDGE_TARGETS:
        raise ExportError(f"unknown target {opts.target!r}; expected one of {', '.join(EDGE_TARGETS)}")
    if opts.observer not in OBSERVERS:
        raise ExportError(f"unknown observer {opts.observer!r}; expected one of {', '.join(OBSERVERS)}")
    if opts.server_engine not in (None, *SERVER_ENGINES):
        raise ExportError(f"unknown server engine {opts.server_engine!r}; expected one of {', '.join(SERVER_ENGINES)}")
    if opts.calibration_split == opts.check_split:
        raise ExportError(f"calibration and check data must come from different splits (both {opts.check_split!r})")
    if opts.model_name is not None and model_name_problem(opts.model_name):
        raise ExportError(f"--model-name: {model_name_problem(opts.model_name)}")
    out = Path(opts.out).absolute()
    checkpoint = Path(opts.checkpoint)
    model, meta, sha = load_source(checkpoint)
    model_name = opts.model_name or default_model_name(meta, checkpoint)
    try:
        check_keep_float(model.client, opts.keep_float)
    except ValueError as exc:
        raise ExportError(f"--keep-float: {exc}") from None
    bundle_writer.check_destination(out, sha, opts.target, opts.force)
    task_names = [t["name"] for t in meta["tasks"]]
    try:
        cfg = data_config(meta, checkpoint, opts.data_config)
    except CalibrationSourceError as exc:
        raise ExportError(str(exc)) from None
    log(f"model name: {model_name}")
    log(f"calibration set: {opts.calibration_samples} images from the {opts.calibration_split} split")
    calib = pick_samples(cfg, opts.calibration_split, opts.calibration_samples, opts.seed, task_names)
    checks = pick_samples(cfg, opts.check_split, opts.check_samples, opts.seed + 1, task_names)
    h, w = (int(v) for v in meta["preprocessing"]["input_size"])
    if tuple(calib.images.shape[-2:]) != (h, w):
        raise ExportError(f"calibration images are {tuple(calib.images.shape[-2:])}, the model expects {(h, w)}")
    example = calib.images[:1].clone()
    client = model.client.eval()
    with torch.no_grad():
        latent, logits = client(example)
    c, lh, lw = (int(v) for v in latent.shape[1:])
    shapes = {EDGE_INPUT: [1, 3, h, w], EDGE_OUTPUTS[0]: [1, c, lh, lw], EDGE_OUTPUTS[1]: [1, int(logits.shape[1])]}
    check_images = [x.numpy() for x in checks.batches()]
    notes: list[str] = []
    engine = "tensorrt" if opts.target == "tensorrt" else opts.server_engine

    with bundle_writer.staging_dir(out) as staging:
        tables_from_bottleneck(model.entropy_bottleneck).save(staging / TABLES_FILE)
        tables = codec.EntropyTables.load(staging / TABLES_FILE)

        log(
            f"edge client: int8 {opts.target} ({opts.observer} observer"
            + (f", float: {list(opts.keep_float)})" if opts.keep_float else ")")
        )
        edge = export_edge(client, opts.target, staging, example, calib.batches(), opts.observer, opts.keep_float)
        try:
            if opts.target == "coreml":
                edge_check = _check_coreml(staging / edge.file, edge.reference, client, check_images, tables, shapes)
            else:
                edge_check = verify.check_edge(
                    _edge_model(staging / edge.file, edge.runtime).run, client, check_images, tables, edge.reference
                )
        except verify.Int8MismatchError as exc:
            raise ExportError(f"{exc}\n{int8_hints(opts, client)}") from None
        log(
            f"edge check: symbol agreement {edge_check['symbol_agreement']:.4f}, "
            f"task-mask agreement {edge_check['task_mask_agreement']:.3f}, latent rel. RMSE {edge_check['latent_rel_rmse']:.4f}"
        )

        log("server half: ONNX (dynamic batch) and server.pt2")
        with torch.no_grad():
            float_latents = np.stack([client(torch.from_numpy(x))[0][0].numpy() for x in check_images])
        decoded = codec.dequantize(codec.quantize(float_latents, tables), tables).astype(np.float32)
        detected = tuple(meta.get("added_tasks", ())) if hasattr(model.server, "detect") else ()
        server_manifest = _export_server(model.server, meta["tasks"], detected, (c, lh, lw), decoded, staging, engine, notes)

        manifest = Manifest(
            model_name=model_name,
            bitstream_version=FORMAT_VERSION,
            source_checkpoint={"path": str(checkpoint.resolve()), "sha256": sha},
            producer=producer_versions(),
            preprocessing=Preprocessing.from_dict(meta["preprocessing"], f"checkpoint {checkpoint} preprocessing"),
            tasks=tuple(TaskInfo(t["name"], tuple(t["labels"])) for t in meta["tasks"]),
            task_mask_rule=TASK_MASK_RULE,
            latent=(c, lh, lw),
            tables={"file": TABLES_FILE, "sha256": file_sha256(staging / TABLES_FILE), "table_id": tables.table_id.hex()},
            edge=EdgeSection(
                target=opts.target,
                file=edge.file,
                runtime=edge.runtime,
                inputs=(_tensor(EDGE_INPUT, shapes[EDGE_INPUT]),),
                outputs=tuple(_tensor(n, shapes[n]) for n in EDGE_OUTPUTS),
                quantization={
                    "scheme": SCHEME,
                    "observer": opts.observer,
                    "keep_float": list(opts.keep_float),
                    "calibration": {**calib.info, "data": _data_description(cfg)},
                    **edge.details,
                },
                check={**edge_check, "check_set": {k: v for k, v in checks.info.items() if k != "indices"}},
            ),
            server=server_manifest,
            server_detected_tasks=detected,
            versions=dict(meta.get("versions", DEFAULT_VERSIONS)),
            lineage=tuple(meta.get("lineage", ())),
        )
        manifest = bundle_writer.finalize(staging, out, manifest)
    log(f"bundle written to {out}")
    return ExportResult(out, manifest, notes)


def int8_hints(opts: ExportOptions, client: torch.nn.Module) -> str:
    """What to try when the int8 edge client is too far from the float one (the options of ``split.py``
    and the sensitivity tool, with this export's values filled in)."""
    others = [o for o in OBSERVERS if o != opts.observer]
    kept = f" (now {' '.join(opts.keep_float)})" if opts.keep_float else ""
    return "\n".join(
        [
            "what helps:",
            f"  - another activation observer: --observer {' / '.join(others)} (this export used {opts.observer})",
            f"  - more calibration images: --calibration-samples N (this export used {opts.calibration_samples})",
            f"  - keeping the most sensitive layers in float: --keep-float NAME ...{kept}; the client's conv/linear layers are "
            f"{', '.join(quantizable_layers(client))}",
            "  - finding those layers: calibration/sensitivity.py quantizes the client once per layer with that layer in float "
            "and ranks the layers by the accuracy each one recovers:",
            f"      uv run python calibration/sensitivity.py --checkpoint {opts.checkpoint} --observer {opts.observer}",
        ]
    )


def _data_description(cfg: dict[str, Any]) -> dict[str, Any]:
    data = cfg["data"]
    desc: dict[str, Any] = {"kind": data["kind"], "image_size": data["image_size"], "seed": cfg.get("seed")}
    desc.update(data.get(data["kind"], {}))
    return desc


def _export_server(
    server: torch.nn.Module,
    tasks: list[dict[str, Any]],
    detected: tuple[str, ...],
    latent_shape: tuple[int, int, int],
    decoded: np.ndarray,
    staging: Path,
    engine: str | None,
    notes: list[str],
) -> dict[str, ServerFile]:
    """Write and check ``server.onnx``, ``server.pt2`` (and for a TensorRT engine ``server_fp16.onnx`` and,
    where TensorRT exists, ``server.plan``); return the manifest's ``server`` section. ``detected``: the
    tasks the server half detects itself (its ``detect_logits`` output)."""
    c, lh, lw = latent_shape
    logits = [_tensor(logits_output(t["name"]), ["batch", len(t["labels"])]) for t in tasks]
    outputs = tuple(logits) + ((_tensor(DETECT_OUTPUT, ["batch", len(detected)]),) if detected else ())
    output_names = [o.name for o in outputs]
    half = server_export.server_half(server).eval()
    server_export.export_onnx(half, latent_shape, output_names, staging / "server.onnx")
    onnx_run = _server_backend("onnxruntime", staging / "server.onnx", output_names).run
    onnx_check = verify.check_server("server.onnx", onnx_run, half, decoded, verify.SERVER_TOLERANCE)
    server_export.export_pt2(half, latent_shape, staging / "server.pt2")
    pt2_run = _server_backend("torch", staging / "server.pt2", output_names).run
    pt2_check = verify.check_server("server.pt2", pt2_run, half, decoded, verify.SERVER_TOLERANCE)
    section = {
        "onnx": ServerFile(
            file="server.onnx",
            check=onnx_check,
            inputs=(_tensor(SERVER_INPUT, ["batch", c, lh, lw]),),
            outputs=outputs,
        ),
        "torch": ServerFile(file="server.pt2", check=pt2_check),
    }
    if engine != "tensorrt":
        return section
    fp16 = server_export.Fp16ServerHalf(half).eval()
    server_export.export_onnx(fp16, latent_shape, output_names, staging / "server_fp16.onnx")
    fp16_run = _server_backend("onnxruntime", staging / "server_fp16.onnx", output_names).run
    fp16_check = verify.check_server("server_fp16.onnx", fp16_run, half, decoded, verify.FP16_TOLERANCE)
    section["onnx_fp16"] = ServerFile(file="server_fp16.onnx", check=fp16_check)
    try:
        info = build_engine(staging, staging / "server.plan", latent_shape)
    except TensorRTUnavailable as exc:
        notes.append(str(exc))
        print(f"[export] {exc}", file=sys.stderr, flush=True)
        return section
    plan_run = _server_backend("tensorrt", staging / "server.plan", output_names).run
    plan_check = verify.check_server("server.plan", plan_run, half, decoded, verify.FP16_TOLERANCE)
    section["tensorrt"] = ServerFile(
        file="server.plan",
        check=plan_check,
        details={
            "precision": "fp16",
            "tensorrt": info.tensorrt_version,
            "source": info.source_onnx,
            "typing": info.typing,
            "batch_profile": list(info.batch_profile),
        },
    )
    return section
