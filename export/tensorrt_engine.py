"""Building an fp16 TensorRT engine (``server.plan``) for the server half from its ONNX export.

UNTESTED HERE: TensorRT needs an NVIDIA GPU and is not installable on the CPU machines this project is
developed and tested on. Only the "TensorRT is not available" path runs in the test suite; the build path
follows NVIDIA's documented Python API and runs only where ``import tensorrt`` works and a GPU is present.

Two generations of the builder API are handled:

- TensorRT 11.x has only strongly typed networks (the builder's FP16/INT8 flags are gone): precision comes
  from the tensor types in the ONNX model. The engine is built from ``server_fp16.onnx``, the server half
  exported from PyTorch in float16 with float32 inputs and outputs.
- TensorRT 10.x builds a weakly typed network from ``server.onnx`` (float32) with ``BuilderFlag.FP16``,
  letting the builder pick fp16 kernels.

Both use one optimisation profile over the dynamic batch dimension of the ``latent`` input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


class TensorRTUnavailable(RuntimeError):
    """``tensorrt`` cannot be imported here; the message says so and what still works."""


@dataclass(frozen=True)
class EngineInfo:
    """What was built: TensorRT version, which ONNX file, how precision was chosen, the batch profile."""

    tensorrt_version: str
    source_onnx: str
    typing: str
    batch_profile: tuple[int, int, int]


def import_tensorrt():
    """``import tensorrt`` or raise :class:`TensorRTUnavailable` with a clear message."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            f"TensorRT is not installed here ({exc}); server.plan was not built. The ONNX server half "
            "(server.onnx) is complete and usable; build the engine on a machine with TensorRT and an "
            "NVIDIA GPU with: python export/split.py ... --server-engine tensorrt"
        ) from None
    return trt


def tensorrt_major(version: str) -> int:
    """Major version number of a TensorRT version string such as ``"10.13.0.35"``."""
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise ValueError(f"cannot read the TensorRT version {version!r}") from None


def engine_source(major: int) -> tuple[str, str]:
    """``(onnx file, typing)`` to build from: strongly typed fp16 ONNX for 11+, FP16 flag for 10."""
    if major >= 11:
        return "server_fp16.onnx", "strongly typed (fp16 tensors in the ONNX)"
    if major == 10:
        return "server.onnx", "weakly typed, BuilderFlag.FP16"
    raise ValueError(f"TensorRT {major}.x is not supported; use TensorRT 10 or 11")


def build_engine(
    bundle_dir: Path,
    plan_path: Path,
    latent_shape: Sequence[int],
    batch_profile: tuple[int, int, int] = (1, 8, 64),
    workspace_bytes: int = 1 << 30,
) -> EngineInfo:
    """Build ``plan_path`` from the server ONNX in ``bundle_dir`` (see the module docstring)."""
    trt = import_tensorrt()
    major = tensorrt_major(trt.__version__)
    onnx_name, typing = engine_source(major)
    onnx_path = bundle_dir / onnx_name
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: the ONNX model to build the TensorRT engine from is missing")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if major == 10:
        config.set_flag(trt.BuilderFlag.FP16)
    lo, opt, hi = batch_profile
    c, h, w = (int(v) for v in latent_shape)
    profile = builder.create_optimization_profile()
    profile.set_shape("latent", (lo, c, h, w), (opt, c, h, w), (hi, c, h, w))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    plan_path.write_bytes(bytes(serialized))
    return EngineInfo(trt.__version__, onnx_name, typing, batch_profile)
