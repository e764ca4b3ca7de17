"""The device side: image -> preprocessing -> edge client -> quantize -> rANS -> bitstream.

``EdgeRuntime(artifacts_dir)`` reads an exported bundle (``codec.bundle.load_bundle``: manifest, file hashes,
entropy tables) and loads its edge client on the runtime the manifest names:

- ``edge.pte``: the ExecuTorch runtime (``executorch.runtime``; its Python wheel links libtorch),
- ``edge.onnx``: ONNX Runtime (CPU),
- ``edge.mlpackage``: Core ML, on macOS only.

Nothing here imports ``training/``: a device needs the bundle, ``codec/`` and this package.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

import codec
from codec.bundle import Bundle, load_bundle

ImageInput = Union[Image.Image, str, os.PathLike]


class EdgeRuntimeError(RuntimeError):
    """The edge client cannot be loaded or run (wrong platform, missing runtime, unexpected outputs)."""


class ImageError(ValueError):
    """An input image is missing or unreadable; the message names the file."""


@dataclass
class EncodedImage:
    """One image's bitstream, its task mask (bit t = task t active) and where the time went (ms)."""

    bitstream: bytes
    task_mask: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_bytes(self) -> int:
        return len(self.bitstream)


class EdgeModel(Protocol):
    """A loaded edge client: ``run(x (1,3,H,W) float32) -> (latent (1,C,h,w), task_logits (1,T))``."""

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ExecuTorchModel:
    """``.pte`` program on the ExecuTorch runtime (XNNPACK-delegated int8 kernels where exported so)."""

    def __init__(self, path: Path) -> None:
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError as exc:
            raise EdgeRuntimeError(f"{path.name} needs the ExecuTorch runtime: pip install executorch ({exc})") from None
        self._torch = torch
        try:
            self._method = Runtime.get().load_program(path).load_method("forward")
        except Exception as exc:  # the runtime raises plain RuntimeError/ValueError with its own codes
            raise EdgeRuntimeError(f"ExecuTorch cannot load {path}: {exc}") from None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._method.execute([self._torch.from_numpy(x)])
        if len(outputs) != 2:
            raise EdgeRuntimeError(f"edge program returned {len(outputs)} outputs, expected (latent, task_logits)")
        return outputs[0].detach().numpy(), outputs[1].detach().numpy()


class OnnxModel:
    """``.onnx`` edge client on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, output_names: list[str]) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EdgeRuntimeError(f"{path.name} needs ONNX Runtime: pip install onnxruntime ({exc})") from None
        try:
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EdgeRuntimeError(f"ONNX Runtime cannot load {path}: {exc}") from None
        self._input = self._session.get_inputs()[0].name
        names = [o.name for o in self._session.get_outputs()]
        self._outputs = output_names if set(output_names) <= set(names) else names[:2]

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        latent, logits = self._session.run(self._outputs, {self._input: x})
        return latent, logits


class CoreMLModel:
    """``.mlpackage`` edge client; Core ML predicts on macOS only."""

    def __init__(self, path: Path, input_name: str, output_names: list[str]) -> None:
        if platform.system() != "Darwin":
            raise EdgeRuntimeError(
                f"{path.name} is a Core ML model: it runs on macOS/iOS only, this is {platform.system()}; "
                "export the bundle with --target executorch or --target onnx for this device"
            )
        try:
            import coremltools as ct
        except ImportError as exc:
            raise EdgeRuntimeError(f"{path.name} needs coremltools: pip install coremltools ({exc})") from None
        self._model = ct.models.MLModel(str(path))
        self._input = input_name
        self._outputs = output_names

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._model.predict({self._input: x})
        try:
            return np.asarray(out[self._outputs[0]]), np.asarray(out[self._outputs[1]])
        except KeyError as exc:
            raise EdgeRuntimeError(f"Core ML model has no output {exc}; it has {sorted(out)}") from None


def load_edge_model(bundle: Bundle) -> EdgeModel:
    """Load the bundle's edge client on the runtime its manifest names."""
    edge = bundle.edge
    path = bundle.path(edge["file"])
    runtime = edge.get("runtime", edge.get("target"))
    outputs = [o["name"] for o in edge.get("outputs", [])] or ["latent", "task_logits"]
    inputs = [i["name"] for i in edge.get("inputs", [])] or ["image"]
    if runtime == "executorch" or path.suffix == ".pte":
        return ExecuTorchModel(path)
    if runtime == "onnxruntime" or runtime == "onnx" or path.suffix == ".onnx":
        return OnnxModel(path, outputs)
    if runtime == "coreml" or path.suffix == ".mlpackage":
        return CoreMLModel(path, inputs[0], outputs)
    raise EdgeRuntimeError(f"bundle {bundle.root}: unknown edge runtime {runtime!r} for {edge['file']}")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file; ``ImageError`` names the file when it cannot."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"image {p}: no such file")
    try:
        with Image.open(p) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"image {p}: not a readable image ({exc})") from None



class EdgeRuntime:
    """The edge half of MANTiS for one bundle: ``encode(image) -> EncodedImage``."""

    def __init__(self, artifacts_dir: str | os.PathLike, verify: bool = True) -> None:
        self.bundle = load_bundle(artifacts_dir, verify=verify)
        self.model = load_edge_model(self.bundle)
        self.latent_shape = self.bundle.latent_shape
        self.num_tasks = len(self.bundle.task_names)

    @property
    def model_name(self) -> str:
        return str(self.bundle.manifest.get("model_name", "mantis"))

    def run_model(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edge client on a preprocessed ``(1,3,H,W)`` batch; returns ``(latent (C,h,w), task_logits (T,))``."""
        latent, logits = self.model.run(np.ascontiguousarray(x, dtype=np.float32))
        latent = np.asarray(latent, dtype=np.float32)
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        if latent.shape != (1, *self.latent_shape):
            raise EdgeRuntimeError(f"edge client returned a latent of shape {latent.shape}, manifest says {(1, *self.latent_shape)}")
        if logits.size != self.num_tasks:
            raise EdgeRuntimeError(f"edge client returned {logits.size} task logits, bundle has {self.num_tasks} tasks")
        if not (np.all(np.isfinite(latent)) and np.all(np.isfinite(logits))):
            raise EdgeRuntimeError("edge client produced non-finite values (NaN/inf)")
        return latent[0], logits

    def encode(self, image: ImageInput) -> EncodedImage:
        """Preprocess as the manifest says, run the edge client, quantize and entropy-code the latent."""
        t0 = time.perf_counter()
        img = image if isinstance(image, Image.Image) else load_image(image)
        x = self.bundle.preprocess(img)
        t1 = time.perf_counter()
        latent, logits = self.run_model(x)
        t2 = time.perf_counter()
        mask = self.bundle.task_mask(logits)
        symbols = codec.quantize(latent, self.bundle.tables)
        bitstream = codec.encode(symbols, mask, self.bundle.tables)
        t3 = time.perf_counter()
        timings = {
            "preprocess_ms": (t1 - t0) * 1000.0,
            "edge_ms": (t2 - t1) * 1000.0,
            "entropy_ms": (t3 - t2) * 1000.0,
            "total_ms": (t3 - t0) * 1000.0,
        }
        return EncodedImage(bitstream=bytes(bitstream), task_mask=mask, timings=timings)

    def active_tasks(self, task_mask: int) -> list[str]:
        """Names of the tasks whose bit is set in ``task_mask``."""
        return [name for t, name in enumerate(self.bundle.task_names) if task_mask >> t & 1]

    def describe(self) -> dict[str, Any]:
        """A short summary: model name, edge file and runtime, tasks, latent shape."""
        return {
            "model_name": self.model_name,
            "edge": self.bundle.edge["file"],
            "runtime": self.bundle.edge.get("runtime"),
            "tasks": self.bundle.task_names,
            "latent": list(self.latent_shape),
        }
