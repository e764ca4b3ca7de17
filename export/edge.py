"""The edge client, int8: stem, task detector, FiLM generator and FiLMed encoder, ending at the bottleneck.

Input ``image`` float32 ``(1, 3, H, W)`` (preprocessed as the manifest says); outputs ``latent`` float32
``(1, C, h, w)`` (the bottleneck input ``y``; the runtime quantizes it with the codec's tables) and
``task_logits`` float32 ``(1, T)`` (the runtime derives the task mask from them).

- ``executorch``: PT2E int8 (XNNPACK quantizer) lowered to the XNNPACK delegate -> ``edge.pte``.
- ``coreml``: the same PT2E int8 graph converted to an ML program for iOS 17 -> ``edge.mlpackage``. Its
  int8 weights become ``constexpr_affine_dequantize`` ops and its int8 activations ``quantize`` /
  ``dequantize`` pairs. (coremltools' own ``CoreMLQuantizer`` is built on ``torch.ao`` APIs that this
  torch no longer has, so the backend-neutral PT2E symmetric int8 recipe is used for both targets.)
- ``onnx`` / ``tensorrt``: float ONNX export, then ONNX Runtime static QDQ int8 -> ``edge.onnx`` (TensorRT
  consumes explicit Q/DQ ONNX as int8 on the device).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from codec.manifest import EDGE_INPUT, EDGE_OUTPUTS
from export.quantize import check_keep_float, quantize_onnx, quantize_pt2e

EDGE_TARGETS = ("executorch", "coreml", "onnx", "tensorrt")
EDGE_FILES = {
    "executorch": ("edge.pte", "executorch"),
    "coreml": ("edge.mlpackage", "coreml"),
    "onnx": ("edge.onnx", "onnxruntime"),
    "tensorrt": ("edge.onnx", "onnxruntime"),
}
COREML_INT8_OPS = ("quantize", "dequantize", "constexpr_affine_dequantize")
"""Ops of an ML program that show it is int8: activation quantize/dequantize pairs and int8 weights."""


@dataclass
class EdgeExport:
    """The written edge file, its runtime, and the int8 PyTorch graph it came from (PT2E targets)."""

    file: str
    runtime: str
    reference: torch.nn.Module | None
    details: dict[str, Any] = field(default_factory=dict)


def lower_executorch(quantized: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(torch.export.export(quantized, (example,)), partitioner=[XnnpackPartitioner()])
    outside: Counter = Counter()
    delegates = 0
    for node in edge.exported_program().graph.nodes:
        if node.op != "call_function":
            continue
        name = str(getattr(node.target, "__name__", node.target))
        if "call_delegate" in name:
            delegates += 1
        elif name != "getitem":
            outside[name] += 1
    program = edge.to_executorch()
    path.write_bytes(program.buffer)
    return {"xnnpack": {"delegate_calls": delegates, "ops_outside_delegate": dict(sorted(outside.items()))}}


def _convert_coreml(quantized: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    import coremltools as ct

    program = torch.export.export(quantized, (example,)).run_decompositions({})
    model = ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        inputs=[ct.TensorType(name=EDGE_INPUT, shape=tuple(example.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name=n, dtype=np.float32) for n in EDGE_OUTPUTS],
    )
    model.save(str(path))
    return {}


def inspect_coreml(path: Path) -> dict[str, Any]:
    """Inputs, outputs (name, dtype, shape) and op counts of a saved ``.mlpackage``, without loading it
    for prediction (works on Linux)."""
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2 as ft

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    names = {v: k for k, v in ft.ArrayFeatureType.ArrayDataType.items()}

    def desc(features) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "dtype": names[f.type.multiArrayType.dataType].lower(), "shape": list(f.type.multiArrayType.shape)}
            for f in features
        ]

    ops: Counter = Counter()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                ops[op.type] += 1
    return {
        "spec_version": int(spec.specificationVersion),
        "inputs": desc(spec.description.input),
        "outputs": desc(spec.description.output),
        "ops": dict(sorted(ops.items())),
    }


def _export_onnx_float(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        dynamo=True,
        input_names=[EDGE_INPUT],
        output_names=list(EDGE_OUTPUTS),
        verbose=False,
        external_data=False,
    )


def export_edge(
    client: nn.Module,
    target: str,
    out_dir: Path,
    example: torch.Tensor,
    calibration: Sequence[torch.Tensor],
    observer: str,
    keep_float: Sequence[str] = (),
) -> EdgeExport:
    """Quantize ``client`` on the ``calibration`` images (each ``(1,3,H,W)``) and write the edge file for
    ``target`` into ``out_dir``."""
    if target not in EDGE_TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {EDGE_TARGETS}")
    name, runtime = EDGE_FILES[target]
    path = out_dir / name
    module = client.eval()
    check_keep_float(module, keep_float)
    if target in ("executorch", "coreml"):
        quantized = quantize_pt2e(module, example, calibration, observer, keep_float)
        if target == "executorch":
            details = lower_executorch(quantized, example, path)
        else:
            details = _convert_coreml(quantized, example, path)
        return EdgeExport(name, runtime, quantized, details)
    float_path = out_dir / "edge.float.onnx"
    try:
        _export_onnx_float(module, example, float_path)
        quantize_onnx(float_path, path, EDGE_INPUT, [x.numpy() for x in calibration], observer, keep_float)
    finally:
        float_path.unlink(missing_ok=True)
        float_path.with_name(float_path.name + ".data").unlink(missing_ok=True)
    return EdgeExport(name, runtime, None, {})
