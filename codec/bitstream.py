"""Encoding symbols to a MANTiS bitstream (8-byte header + rANS payload) and decoding it back."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from codec import format as fmt
from codec import rans
from codec.errors import ShapeError, SymbolError
from codec.tables import EntropyTables


class Decoded(NamedTuple):
    """A decoded bitstream."""

    symbols: np.ndarray
    """int32 ``(C, H, W)``."""
    task_mask: int
    """Bit ``t`` set = task ``t`` active."""
    shape: tuple[int, int, int]


def check_symbols(symbols: np.ndarray, tables: EntropyTables) -> np.ndarray:
    """``symbols`` as a C-contiguous int32 ``(C, H, W)`` array after checking shape, dtype and range."""
    arr = np.asarray(symbols)
    if arr.ndim != 3:
        raise ShapeError(f"symbols must have shape (C, H, W), got {arr.shape}")
    fmt.check_shape(arr.shape, tables.num_channels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise SymbolError(f"symbols must be integers, got dtype {arr.dtype} (quantize latents first)")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < -fmt.SYMBOL_LIMIT or hi > fmt.SYMBOL_LIMIT:
        raise SymbolError(f"symbols span {lo}..{hi}, outside the coded range +-{fmt.SYMBOL_LIMIT}")
    return np.ascontiguousarray(arr, dtype=np.int32)


def encode(symbols: np.ndarray, task_mask: int, tables: EntropyTables, *, backend: str | None = None) -> bytes:
    """Bitstream of integer ``symbols`` ``(C, H, W)`` coded with ``tables``, carrying ``task_mask`` (0..255).

    ``backend``: ``"python"``, ``"compressai"`` or ``None`` (see :func:`codec.rans.get_backend`); every
    backend writes the same bytes.
    """
    mask = fmt.check_task_mask(task_mask)
    sym = check_symbols(symbols, tables)
    payload = rans.encode(sym, tables, backend)
    return fmt.pack(mask, tables.table_id, tables.sha256_digest, sym.shape, payload)


def decode(data: bytes, tables: EntropyTables, *, backend: str | None = None) -> Decoded:
    """Parse and verify a bitstream; any malformed input raises a :class:`~codec.errors.CodecError` subclass."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"bitstream must be bytes, got {type(data).__name__}")
    header, payload = fmt.unpack(data, tables.table_id, tables.sha256_digest, tables.num_channels)
    shape = (tables.num_channels, *header.latent_size)
    symbols = rans.decode(payload, shape, tables, backend)
    return Decoded(symbols, header.task_mask, shape)


def compressai_string(data: bytes) -> bytes:
    """The payload of a bitstream as CompressAI's coder writes and reads it (``EntropyBottleneck.compress``'s
    string): the rANS state widened back to 8 bytes. Checks only the payload's state, not the header."""
    return rans.unpack_state(bytes(data[fmt.HEADER_SIZE :]))
