"""Float latents <-> integer symbols, exactly as CompressAI's ``EntropyBottleneck`` quantizes them."""

from __future__ import annotations

import numpy as np

from codec.bitstream import decode, encode
from codec.errors import ShapeError, SymbolError
from codec.format import SYMBOL_LIMIT
from codec.tables import EntropyTables


def _channel_axis(ndim: int) -> int:
    if ndim == 3:
        return 0
    if ndim == 4:
        return 1
    raise ShapeError(f"latent must be (C, H, W) or (B, C, H, W), got {ndim} dimensions")


def _medians(shape: tuple[int, ...], tables: EntropyTables) -> np.ndarray:
    axis = _channel_axis(len(shape))
    if shape[axis] != tables.num_channels:
        raise ShapeError(f"latent has {shape[axis]} channels, the entropy tables have {tables.num_channels}")
    view = [1] * len(shape)
    view[axis] = -1
    return tables.medians.reshape(view)


def quantize(latent: np.ndarray, tables: EntropyTables) -> np.ndarray:
    """int32 symbols ``round(latent - median)`` per channel, for ``(C, H, W)`` or ``(B, C, H, W)``.

    Like ``EntropyBottleneck.quantize(x, "symbols", medians)``: the subtraction runs in the promoted type
    of the latent and the float32 medians (float32 for float32/float16 latents, float64 for float64) and
    rounds half to even (``torch.round``). Non-finite values or results beyond +-2^24 raise
    :class:`SymbolError`.
    """
    x = np.asarray(latent)
    if not np.issubdtype(x.dtype, np.floating):
        raise SymbolError(f"latent must be a float array, got dtype {x.dtype}")
    work = np.result_type(x.dtype, np.float32)
    med = _medians(x.shape, tables).astype(work)
    r = np.rint(x.astype(work, copy=False) - med)
    if not np.all(np.isfinite(r)):
        raise SymbolError("latent contains NaN or infinite values")
    if r.size and float(np.abs(r).max()) > SYMBOL_LIMIT:
        raise SymbolError(f"latent values reach {float(np.abs(r).max()):g} from the median, beyond +-{SYMBOL_LIMIT}")
    return r.astype(np.int32)


def dequantize(symbols: np.ndarray, tables: EntropyTables) -> np.ndarray:
    """float32 latent ``symbols + median`` per channel (CompressAI's ``dequantize`` with means)."""
    s = np.asarray(symbols)
    if not np.issubdtype(s.dtype, np.integer):
        raise SymbolError(f"symbols must be integers, got dtype {s.dtype}")
    return s.astype(np.float32) + _medians(s.shape, tables)


def encode_latent(latent: np.ndarray, task_mask: int, tables: EntropyTables, *, backend: str | None = None) -> bytes:
    """Quantize a float latent ``(C, H, W)`` and encode it."""
    if np.ndim(latent) != 3:
        raise ShapeError(f"latent must have shape (C, H, W), got {np.shape(latent)}")
    return encode(quantize(latent, tables), task_mask, tables, backend=backend)


def decode_latent(data: bytes, tables: EntropyTables, *, backend: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a bitstream to its float32 latent ``(C, H, W)`` and task mask."""
    dec = decode(data, tables, backend=backend)
    return dequantize(dec.symbols, tables), dec.task_mask
