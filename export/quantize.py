"""Post-training int8 quantization of the edge client: PT2E (ExecuTorch, Core ML) and ONNX Runtime QDQ.

Scheme everywhere: symmetric int8 weights with one scale per output channel, int8 activations with one
scale per tensor, calibrated on real images. Two activation observers:

- ``minmax``: the range is the smallest and largest value seen during calibration;
- ``histogram``: a histogram of every activation; PT2E picks the range minimising the quantization error
  (``HistogramObserver``), ONNX Runtime clips at the 0.001 / 99.999 percentiles (``Percentile``).

Layers can be kept in float by module name (``keep_float``, e.g. ``encoder.project``): their convolutions
and linears are left unannotated (PT2E) or excluded by node (ONNX), so they run in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

OBSERVERS = ("minmax", "histogram")
SCHEME = "int8 per-channel symmetric weights, per-tensor int8 activations"


def _check_observer(observer: str) -> None:
    if observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}; expected one of {OBSERVERS}")


def pt2e_quantizer(observer: str, keep_float: Sequence[str] = ()):
    """The XNNPACK quantizer with per-channel weights and the chosen activation observer."""
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver
    from torchao.quantization.pt2e.quantizer import get_module_name_filter

    _check_observer(observer)
    config = get_symmetric_quantization_config(is_per_channel=True)
    ctr = (HistogramObserver if observer == "histogram" else MinMaxObserver).with_args(eps=2**-12)
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=ctr)
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    quantizer = XNNPACKQuantizer().set_global(config)
    if keep_float:
        filters = [get_module_name_filter(name) for name in keep_float]
        quantizer.set_filter_function(lambda node: not any(f(node) for f in filters))
    return quantizer


def quantizable_layers(module: torch.nn.Module) -> list[str]:
    """Names (relative to ``module``) of its convolutions and linear layers: what int8 quantizes, and
    what ``keep_float`` can name (or a module holding several of them)."""
    return [name for name, m in module.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def check_keep_float(module: torch.nn.Module, keep_float: Sequence[str]) -> None:
    """``ValueError`` naming every ``keep_float`` entry that is not a module of ``module`` (a misspelled
    name would otherwise quantize everything without a word), and listing the layers it can name."""
    names = {name for name, _ in module.named_modules() if name}
    unknown = [k for k in keep_float if k not in names]
    if unknown:
        raise ValueError(
            f"layers to keep in float {unknown} are not modules of the edge client; its conv/linear layers are "
            f"{quantizable_layers(module)} (a module holding several, such as {sorted({n.split('.')[0] for n in names})}, keeps them all)"
        )


def quantize_pt2e(
    module: torch.nn.Module,
    example: torch.Tensor,
    calibration: Iterable[torch.Tensor],
    observer: str,
    keep_float: Sequence[str] = (),
) -> torch.fx.GraphModule:
    """Export ``module`` at ``example``'s shape, insert observers, run ``calibration`` batches (same shape
    as ``example``), and return the converted graph with quantize/dequantize pairs (the reference int8
    model that ExecuTorch lowers to XNNPACK and Core ML converts)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = module.eval()
    check_keep_float(module, keep_float)
    with torch.no_grad():
        graph = torch.export.export(module, (example,)).module()
        prepared = prepare_pt2e(graph, pt2e_quantizer(observer, keep_float))
        seen = 0
        for x in calibration:
            prepared(x)
            seen += 1
        if seen == 0:
            raise ValueError("calibration set is empty")
        return convert_pt2e(prepared)


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over float32 arrays."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._it = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def onnx_nodes_in_modules(model_path: Path, module_names: Sequence[str]) -> list[str]:
    """Names of the ONNX nodes that ``torch.onnx.export(dynamo=True)`` emitted for the given modules (or
    modules inside them), read from each node's ``pkg.torch.onnx.name_scopes`` metadata: a Python list
    literal of the enclosing modules' full paths, outermost first, then the op, such as
    ``['', 'encoder', 'encoder.project', 'conv2d_10']``."""
    import ast

    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    found = []
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        if not scopes:
            continue
        try:
            modules = [s for s in ast.literal_eval(scopes)[:-1] if s]
        except (ValueError, SyntaxError):
            continue
        if any(path == name or path.startswith(name + ".") for path in modules for name in module_names):
            found.append(node.name)
    return found


def quantize_onnx(
    float_model: Path,
    out_model: Path,
    input_name: str,
    calibration: Iterable[np.ndarray],
    observer: str,
    keep_float: Sequence[str] = (),
) -> None:
    """Static int8 QDQ quantization of an ONNX model with ONNX Runtime's calibrator."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _check_observer(observer)
    pre = out_model.with_name(out_model.stem + ".pre.onnx")
    try:
        quant_pre_process(str(float_model), str(pre))
        exclude = onnx_nodes_in_modules(float_model, keep_float) if keep_float else []
        if keep_float and not exclude:
            raise ValueError(f"no ONNX nodes belong to the modules kept in float {list(keep_float)}")
        method = CalibrationMethod.Percentile if observer == "histogram" else CalibrationMethod.MinMax
        quantize_static(
            str(pre),
            str(out_model),
            _Reader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=exclude,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    finally:
        pre.unlink(missing_ok=True)
