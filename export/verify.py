"""Checks of every exported half against the eager PyTorch module, run before a bundle counts as written.

Edge client (int8 vs the float eager client, on held-out images):
  ``symbol_agreement`` (fraction of latent symbols, after the codec's quantization, that are identical),
  ``task_mask_agreement`` (fraction of images whose task mask is identical), ``latent_rel_rmse`` (RMSE of the
  latent divided by the float latent's standard deviation) and ``max_abs_latent_error``. Where the int8
  graph also exists in PyTorch (PT2E targets), the exported program is additionally compared with it
  (``lowering``): that isolates the lowering/conversion from the quantization itself.
Server half (ONNX, ``.pt2``, fp16 ONNX vs eager, on decoded latents of the same images at batch sizes 1
and several): element-wise ``|a - b| <= atol + rtol * max|b|`` and identical argmax.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

import codec
from codec.manifest import task_mask_from_logits
from export.errors import ExportError

EDGE_TOLERANCE = {"min_symbol_agreement": 0.90, "min_task_mask_agreement": 0.90, "max_latent_rel_rmse": 0.25}
LOWERING_TOLERANCE = {"min_symbol_agreement": 0.97, "min_task_mask_agreement": 0.90}
SERVER_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3, "min_argmax_agreement": 1.0}
FP16_TOLERANCE = {"atol": 1e-2, "rtol": 2e-2, "min_argmax_agreement": 0.95}

Outputs = Callable[[np.ndarray], Sequence[np.ndarray]]


def _edge_outputs(run: Outputs, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    latents, logits = [], []
    for x in images:
        lat, log = run(x)[:2]
        latents.append(np.asarray(lat, np.float32)[0])
        logits.append(np.asarray(log, np.float32).reshape(-1))
    return np.stack(latents), np.stack(logits)


def eager_outputs(module: torch.nn.Module) -> Outputs:
    """Wrap a PyTorch module as ``np -> [np, ...]``."""

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.detach().numpy() for o in module(torch.from_numpy(np.ascontiguousarray(x, np.float32)))]

    return run


def compare_edge(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], tables: Any) -> dict[str, float]:
    """Agreement metrics between two edge outputs ``(latents (N,C,h,w), task_logits (N,T))``."""
    (ref_lat, ref_log), (lat, log) = ref, got
    if lat.shape != ref_lat.shape or log.shape != ref_log.shape:
        raise ExportError(f"edge output shapes {lat.shape}, {log.shape} differ from the eager model's {ref_lat.shape}, {ref_log.shape}")
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(log))):
        raise ExportError("exported edge client produced non-finite values")
    sym_ref = codec.quantize(ref_lat, tables)
    sym = codec.quantize(lat, tables)
    masks_ref = [task_mask_from_logits(r) for r in ref_log]
    masks = [task_mask_from_logits(r) for r in log]
    err = lat - ref_lat
    return {
        "images": int(lat.shape[0]),
        "symbol_agreement": float(np.mean(sym == sym_ref)),
        "task_mask_agreement": float(np.mean([a == b for a, b in zip(masks, masks_ref)])),
        "latent_rel_rmse": float(np.sqrt(np.mean(err**2)) / max(float(np.std(ref_lat)), 1e-12)),
        "max_abs_latent_error": float(np.max(np.abs(err))),
        "max_abs_logit_error": float(np.max(np.abs(log - ref_log))),
    }


class Int8MismatchError(ExportError):
    """The int8 edge client is further from the float eager client than ``EDGE_TOLERANCE`` allows (a
    quantization problem, as opposed to a lowering or conversion one)."""


def _enforce(name: str, metrics: dict[str, float], tol: dict[str, float], error: type[ExportError] = ExportError) -> None:
    bad = []
    for key, limit in tol.items():
        kind, metric = key.split("_", 1)
        value = metrics[metric]
        if (kind == "min" and value < limit) or (kind == "max" and value > limit):
            bad.append(f"{metric}={value:.4g} ({kind} {limit})")
    if bad:
        raise error(f"{name} does not match the eager model: {', '.join(bad)}")


def check_edge(
    exported: Outputs,
    eager: torch.nn.Module,
    images: Sequence[np.ndarray],
    tables: Any,
    reference: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Compare the exported edge client with the eager float client (and its int8 PyTorch graph)."""
    got = _edge_outputs(exported, images)
    result: dict[str, Any] = compare_edge(_edge_outputs(eager_outputs(eager), images), got, tables)
    _enforce("edge client (int8 vs float eager)", result, EDGE_TOLERANCE, Int8MismatchError)
    tolerance: dict[str, Any] = {"vs_float_eager": EDGE_TOLERANCE}
    if reference is not None:
        result["lowering"] = compare_edge(_edge_outputs(eager_outputs(reference), images), got, tables)
        _enforce("edge client (exported vs its int8 PyTorch graph)", result["lowering"], LOWERING_TOLERANCE)
        tolerance["vs_int8_pytorch_graph"] = LOWERING_TOLERANCE
    result["tolerance"] = tolerance
    return result


def check_server(
    name: str,
    exported: Outputs,
    eager: torch.nn.Module,
    latents: np.ndarray,
    tolerance: dict[str, float],
    batch_sizes: Sequence[int] = (1, 3),
) -> dict[str, Any]:
    """Compare a server-half export with the eager module at several batch sizes (dynamic batch)."""
    worst_abs, worst_rel, agree, total = 0.0, 0.0, 0, 0
    run_eager = eager_outputs(eager)
    for b in batch_sizes:
        for start in range(0, len(latents) - b + 1, max(b, 1)):
            y = np.ascontiguousarray(latents[start : start + b], np.float32)
            refs, gots = run_eager(y), exported(y)
            if len(gots) != len(refs):
                raise ExportError(f"{name} returned {len(gots)} outputs, the eager server half {len(refs)}")
            for r, g in zip(refs, gots):
                g = np.asarray(g)
                if g.shape != r.shape:
                    raise ExportError(f"{name} output shape {g.shape} differs from the eager {r.shape} at batch {b}")
                diff = float(np.max(np.abs(g - r)))
                scale = float(np.max(np.abs(r)))
                worst_abs = max(worst_abs, diff)
                worst_rel = max(worst_rel, diff / max(scale, 1e-12))
                if diff > tolerance["atol"] + tolerance["rtol"] * scale:
                    raise ExportError(f"{name} differs from the eager server half by {diff:.3g} at batch {b} (tolerance {tolerance})")
                agree += int(np.sum(np.argmax(g, 1) == np.argmax(r, 1)))
                total += r.shape[0]
    result = {"max_abs_error": worst_abs, "max_rel_error": worst_rel, "argmax_agreement": agree / max(total, 1)}
    if result["argmax_agreement"] < tolerance["min_argmax_agreement"]:
        raise ExportError(f"{name}: argmax agreement {result['argmax_agreement']:.3f} below {tolerance['min_argmax_agreement']}")
    return {**result, "batch_sizes": list(batch_sizes), "tolerance": tolerance}
