"""Entropy tables from a trained CompressAI ``EntropyBottleneck``, through its public interface.

Both training's evaluation and the export build the codec's tables here, once per model::

    EntropyBottleneck ── update() ──► quantized_cdf, cdf_length, offset, quantiles ──► codec.EntropyTables
"""

from __future__ import annotations

from typing import Any

from codec.errors import TableError
from codec.format import PRECISION
from codec.tables import EntropyTables


def tables_from_bottleneck(eb: Any) -> EntropyTables:
    """Tables of an updated CompressAI ``EntropyBottleneck`` (its ``quantized_cdf``, ``cdf_length`` and
    ``offset`` properties and the medians of its ``quantiles``). Nothing is retrained or recomputed: call
    ``update()`` on the model (or ``eb.update(force=True)`` after further training) first, else
    :class:`codec.errors.TableError`."""
    for attr in ("quantized_cdf", "cdf_length", "offset", "quantiles"):
        if not hasattr(eb, attr):
            raise TableError(f"{type(eb).__name__} is not a CompressAI EntropyBottleneck (no {attr})")
    if eb.offset.numel() == 0 or eb.quantized_cdf.numel() == 0:
        raise TableError("the EntropyBottleneck has no quantized CDFs yet: call update() first")
    return EntropyTables(
        cdfs=eb.quantized_cdf.detach().cpu().numpy(),
        cdf_lengths=eb.cdf_length.detach().cpu().reshape(-1).numpy(),
        offsets=eb.offset.detach().cpu().reshape(-1).numpy(),
        medians=eb.quantiles[:, 0, 1].detach().cpu().float().numpy(),
        precision=int(getattr(eb, "entropy_coder_precision", PRECISION)),
    )
