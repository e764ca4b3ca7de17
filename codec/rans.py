"""The rANS payload: CompressAI-compatible 64-bit-state rANS with a 4-bit escape (bypass) path.

Two backends produce identical bytes (``codec/FORMAT.md``, section "Payload"):

- ``python``: the reference coder in pure Python, always available, with every check of the spec.
- ``compressai``: CompressAI's C++ coder (``compressai.ans``), used when installed. Its decoder trusts its
  input, so it runs on the payload followed by enough zero words that no byte stream can make it read past
  the buffer (:func:`decode_padding_words`), and the result is accepted only if it is in range and
  re-encodes to exactly the payload. Its encoder writes into a buffer of one word per coding operation,
  so it is used only when the payload provably fits (:func:`compressai_encode_fits`).

Symbols are coded channel-major (C, H, W in C order), each with the CDF of its channel.

Both backends read and write CompressAI's *word stream*: the final 64-bit state as two 32-bit words, then
the emitted words. The bitstream's *payload* is that stream with the state's zero high bytes dropped
(:func:`pack_state`), so a payload costs its information plus 4 fixed bytes plus at most one byte of
alignment, not four; :func:`encode` and :func:`decode` convert.
"""

from __future__ import annotations

import array
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
from bisect import bisect_right
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from codec.errors import CodecError, PayloadError
from codec.format import MIN_PAYLOAD_BYTES, PRECISION, SYMBOL_LIMIT, check_payload_length
from codec.tables import EntropyTables

log = logging.getLogger("mantis.codec")

RANS_L = 1 << 31
"""Lower bound of the normalized state interval [2^31, 2^63); the encoder starts and the decoder ends here."""
STATE_END = 1 << 63
BYPASS_BITS = 4
BYPASS_MAX = (1 << BYPASS_BITS) - 1
MAX_BYPASS_NIBBLES = 7
"""Raw escape values of in-range symbols need at most 7 nibbles (they are below 2^26)."""
_MASK = (1 << PRECISION) - 1
_WORD = 0xFFFFFFFF
_BYPASS_EMIT = 1 << 59
"""Encoder: a 4-bit put first emits a word when the state is at least 2^59 (= 2^47 * 2^12)."""

FAST_DECODE_MAX_BYTES = 64 << 20
"""Largest zero-padded buffer handed to CompressAI's decoder; larger payloads use the Python decoder."""
BACKEND_ENV = "MANTIS_CODEC_BACKEND"


class Backend(Protocol):
    name: str

    def encode(self, symbols: np.ndarray, tables: EntropyTables) -> bytes:
        """``symbols``: int32 ``(C, H, W)``, already range-checked. Returns the word stream."""

    def decode(self, stream: bytes, shape: tuple[int, int, int], tables: EntropyTables) -> np.ndarray:
        """Word stream -> int32 ``(C, H, W)``, or :class:`PayloadError`."""


# ---------------------------------------------------------------------------- state packing

# The packed final state takes 5 (MIN_PAYLOAD_BYTES) to 8 bytes: its length is the payload length modulo 4
# (5 for 1, ..., 8 for 0), which is why a state below 2^32, which 4 bytes would hold, still takes 5.


def state_bytes(payload_length: int) -> int:
    """Bytes of the packed state at the start of a payload of ``payload_length`` bytes (>= 5)."""
    return MIN_PAYLOAD_BYTES + (payload_length - MIN_PAYLOAD_BYTES) % 4


def pack_state(stream: bytes) -> bytes:
    """Word stream -> payload: the final state (little-endian) in the fewest bytes in 5..8 that hold it,
    then the emitted words unchanged."""
    x = int.from_bytes(stream[:8], "little")
    keep = max(MIN_PAYLOAD_BYTES, (x.bit_length() + 7) // 8)
    return bytes(stream[:keep]) + bytes(stream[8:])


def unpack_state(payload: bytes) -> bytes:
    """Payload -> word stream (the inverse of :func:`pack_state`); :class:`PayloadError` for a payload that
    :func:`pack_state` cannot have written (too short, or a state with a zero high byte it would have dropped)."""
    check_payload_length(len(payload))
    keep = state_bytes(len(payload))
    if keep > MIN_PAYLOAD_BYTES and payload[keep - 1] == 0:
        raise PayloadError(f"the rANS state is written in {keep} bytes with a zero high byte (not the shortest form)")
    return bytes(payload[:keep]) + bytes(8 - keep) + bytes(payload[keep:])


def encode(symbols: np.ndarray, tables: EntropyTables, backend: str | None = None) -> bytes:
    """Payload of int32 ``symbols`` ``(C, H, W)`` (already range-checked) on ``backend`` (:func:`get_backend`)."""
    return pack_state(get_backend(backend).encode(symbols, tables))


def decode(payload: bytes, shape: tuple[int, int, int], tables: EntropyTables, backend: str | None = None) -> np.ndarray:
    """Payload -> int32 ``(C, H, W)``, or :class:`PayloadError`."""
    return get_backend(backend).decode(unpack_state(payload), shape, tables)


# ---------------------------------------------------------------------------- escape accounting


def escape_operations(symbols: np.ndarray, tables: EntropyTables) -> int:
    """Number of 4-bit bypass operations the escape path adds for ``symbols`` (int ``(C, ...)``)."""
    v = symbols.reshape(symbols.shape[0], -1).astype(np.int64) - tables.offsets.astype(np.int64)[:, None]
    mv = np.broadcast_to(tables.max_values[:, None], v.shape)
    esc = (v < 0) | (v >= mv)
    if not esc.any():
        return 0
    ve = v[esc]
    raw = np.where(ve < 0, -2 * ve - 1, 2 * (ve - mv[esc]))
    nibbles = np.zeros(raw.shape, dtype=np.int64)
    for j in range(16):
        nibbles += raw >= (1 << (BYPASS_BITS * j))
    return int(np.sum(nibbles + nibbles // BYPASS_MAX + 1))


FLUSH_FIXED_BYTES = 4
"""Bytes of every payload that carry no information: the encoder starts from the state 2^31 (which the
decoder must end on), so the final state holds 31 bits that say nothing. A payload of ``I`` bits of
information is ``I / 8 + 31 / 8`` to ``I / 8 + 5`` bytes (the rest is the packed state's byte alignment),
up to 2^-14 bits per coding operation of integer rounding (:func:`information_bits`). This is a constant
per bitstream, like the header, not a share of its size."""


def information_bits(symbols: np.ndarray, tables: EntropyTables) -> float:
    """Ideal code length of ``symbols`` (int ``(C, ...)``) under the integer tables, in bits.

    ``sum(-log2(f / 2^16))`` over the symbol operations plus 4 bits per bypass operation: what the
    payload carries besides :data:`FLUSH_FIXED_BYTES` and the state's byte alignment.
    """
    flat = symbols.reshape(symbols.shape[0], -1).astype(np.int64)
    v = flat - tables.offsets.astype(np.int64)[:, None]
    mv = tables.max_values[:, None]
    index = np.where((v < 0) | (v >= mv), mv, v)
    cdfs = tables.cdfs.astype(np.int64)
    rows = np.arange(flat.shape[0])[:, None]
    freq = cdfs[rows, index + 1] - cdfs[rows, index]
    return float(np.sum(PRECISION - np.log2(freq))) + BYPASS_BITS * escape_operations(symbols, tables)


def compressai_encode_fits(num_symbols: int, bypass_ops: int) -> bool:
    """Whether CompressAI's encoder buffer (one 32-bit word per coding operation) holds the payload.

    Each coding operation grows log2 of the state by at most 16 + 2^-14 bits (a 4-bit put: 4 + 2^-26), every
    emitted word shrinks it by at least 32, and the state starts at 2^31 and ends at or above it; the flush
    adds 2 words. So the payload has at most (16.0001 N + 4.0001 P) / 32 + 2 words; we require a margin.
    """
    ops = num_symbols + bypass_ops
    return (17 * num_symbols + 5 * bypass_ops) // 32 + 3 <= ops


def decode_padding_words(num_symbols: int, payload_words: int) -> int:
    """Zero words appended to a payload before CompressAI's decoder reads it, enough for any byte stream.

    That decoder reads at most one word per symbol step and per 4-bit read. Past the end (all zeros):
    a 4-bit read that refills leaves 32 zero bits below, so an escape count started there stops after at
    most 10 reads (<= 149 nibbles); with a nonzero state the nibble reads refill at most every 8th read
    after 2 quick ones, so such a symbol costs <= 1 + 2 + 149/8 + 2 < 24 words. A zero state stays zero
    (symbol 0, never the escape symbol since CDF lengths are >= 3) and costs 1 word per symbol, but the
    one escape running when it turns zero may read one word per nibble (<= 161). An escape count that
    began inside the payload saw at most 16 + 8 W nibbles of 15, so its raw part reads <= 120 W + 300.
    Hence 24 N + 120 W + 471 words suffice; we pad 24 N + 128 W + 1024.
    """
    return 24 * num_symbols + 128 * payload_words + 1024


def _words_to_bytes(first_words: list[int], emitted_reversed: list[int]) -> bytes:
    words = array.array("I", first_words)
    emitted_reversed.reverse()
    words.extend(emitted_reversed)
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()


def encode_operations(operations: list[tuple[int, int]]) -> bytes:
    """Payload for an explicit list of coding operations in decode order: ``(start, freq)`` codes a symbol
    of a CDF interval, ``(nibble, 0)`` a 4-bit bypass value. The symbol coders build exactly these
    sequences; this form exists to construct streams a symbol encoder never writes (test vectors)."""
    x = RANS_L
    emitted: list[int] = []
    for a, freq in reversed(operations):
        if freq == 0:
            if x >= _BYPASS_EMIT:
                emitted.append(x & _WORD)
                x >>= 32
            x = (x << BYPASS_BITS) | a
        else:
            if x >= freq << 47:
                emitted.append(x & _WORD)
                x >>= 32
            x = ((x // freq) << PRECISION) + (x % freq) + a
    return _words_to_bytes([x & _WORD, x >> 32], emitted)


@lru_cache(maxsize=4)
def _indexes(channels: int, per_channel: int) -> list[int]:
    """CDF index of every symbol (its channel), as CompressAI's coder takes them; cached per latent shape."""
    return np.repeat(np.arange(channels, dtype=np.int32), per_channel).tolist()


# ---------------------------------------------------------------------------- reference coder


class PythonBackend:
    """Reference rANS coder in pure Python."""

    name = "python"

    def encode(self, symbols: np.ndarray, tables: EntropyTables) -> bytes:
        lists = tables.coding_lists
        c = symbols.shape[0]
        x = RANS_L
        emitted: list[int] = []
        emit = emitted.append
        for ch in range(c - 1, -1, -1):
            row = lists.rows[ch]
            mv = lists.lengths[ch] - 2
            off = lists.offsets[ch]
            esc_start = row[mv]
            esc_freq = row[mv + 1] - esc_start
            for s in reversed(symbols[ch].reshape(-1).tolist()):
                v = s - off
                if 0 <= v < mv:
                    start = row[v]
                    freq = row[v + 1] - start
                else:
                    raw = -2 * v - 1 if v < 0 else 2 * (v - mv)
                    n = (raw.bit_length() + BYPASS_BITS - 1) // BYPASS_BITS
                    q, r = divmod(n, BYPASS_MAX)
                    # Decode order: count nibbles (15 x q, then r), raw nibbles low first; encode reverses it.
                    for nib in [(raw >> (BYPASS_BITS * j)) & BYPASS_MAX for j in range(n - 1, -1, -1)] + [r] + [BYPASS_MAX] * q:
                        if x >= _BYPASS_EMIT:
                            emit(x & _WORD)
                            x >>= 32
                        x = (x << BYPASS_BITS) | nib
                    start = esc_start
                    freq = esc_freq
                if x >= freq << 47:
                    emit(x & _WORD)
                    x >>= 32
                x = ((x // freq) << PRECISION) + (x % freq) + start
        return _words_to_bytes([x & _WORD, x >> 32], emitted)

    def decode(self, payload: bytes, shape: tuple[int, int, int], tables: EntropyTables) -> np.ndarray:
        c, h, w = shape
        hw = h * w
        data = bytes(payload)
        if len(data) % 4 or len(data) < 8:
            raise PayloadError(f"payload of {len(data)} bytes is not a whole number (>= 2) of 32-bit words")
        words = array.array("I")
        words.frombytes(data)
        if sys.byteorder != "little":
            words.byteswap()
        nwords = len(words)
        x = words[0] | (words[1] << 32)
        if not RANS_L <= x < STATE_END:
            raise PayloadError(f"initial rANS state {x:#x} outside [2^31, 2^63)")
        p = 2
        out = np.empty((c, hw), dtype=np.int32)
        lists = tables.coding_lists
        for ch in range(c):
            row = lists.rows[ch]
            mv = lists.lengths[ch] - 2
            off = lists.offsets[ch]
            dest = out[ch]
            values = []
            append = values.append
            for _ in range(hw):
                cum = x & _MASK
                s = bisect_right(row, cum) - 1
                start = row[s]
                x = (row[s + 1] - start) * (x >> PRECISION) + cum - start
                if x < RANS_L:
                    if p >= nwords:
                        raise PayloadError(f"payload ends early: {nwords} words are not enough for {c * hw} symbols")
                    x = (x << 32) | words[p]
                    p += 1
                if s != mv:
                    append(s + off)
                    continue
                # Escape: a count of nibbles (15 means "more follows"), then the raw value, low nibble first.
                n = 0
                while True:
                    val = x & BYPASS_MAX
                    x >>= BYPASS_BITS
                    if x < RANS_L:
                        if p >= nwords:
                            raise PayloadError("payload ends early inside an escape code")
                        x = (x << 32) | words[p]
                        p += 1
                    n += val
                    if n > MAX_BYPASS_NIBBLES:
                        raise PayloadError(f"escape code announces more than {MAX_BYPASS_NIBBLES} nibbles")
                    if val != BYPASS_MAX:
                        break
                raw = 0
                for j in range(n):
                    val = x & BYPASS_MAX
                    x >>= BYPASS_BITS
                    if x < RANS_L:
                        if p >= nwords:
                            raise PayloadError("payload ends early inside an escape code")
                        x = (x << 32) | words[p]
                        p += 1
                    raw |= val << (BYPASS_BITS * j)
                if n and raw >> (BYPASS_BITS * (n - 1)) == 0:
                    raise PayloadError("escape code with a leading zero nibble (not canonical)")
                v = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + mv
                sym = v + off
                if not -SYMBOL_LIMIT <= sym <= SYMBOL_LIMIT:
                    raise PayloadError(f"escaped symbol {sym} outside +-{SYMBOL_LIMIT}")
                append(sym)
            dest[:] = values
        if p != nwords:
            raise PayloadError(f"{nwords - p} unused 32-bit words after the last symbol")
        if x != RANS_L:
            raise PayloadError(f"final rANS state {x:#x} is not 2^31: the payload is corrupted")
        return out.reshape(c, h, w)


# ---------------------------------------------------------------------------- CompressAI backend


def _load_compressai_ans() -> Any:
    """``compressai.ans`` without importing the ``compressai`` package (which imports torch).

    The import system's path finder locates the ``ans`` extension module in the package's directory; it
    is loaded under its own name and registered in ``sys.modules``, so a later ``import compressai`` reuses
    it (loading the file twice would register its types twice). ``ModuleNotFoundError`` when compressai
    is not installed; ``ImportError`` when it is installed but its coder cannot be loaded."""
    if "compressai.ans" in sys.modules:
        return sys.modules["compressai.ans"]
    if "compressai" in sys.modules:
        return importlib.import_module("compressai.ans")
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("compressai is not installed", name="compressai")
    found = importlib.machinery.PathFinder.find_spec("ans", list(spec.submodule_search_locations))
    if found is None or found.origin is None:
        raise ImportError(f"compressai is installed in {list(spec.submodule_search_locations)} without its ans extension module")
    ext_spec = importlib.util.spec_from_file_location("compressai.ans", found.origin)
    if ext_spec is None or ext_spec.loader is None:
        raise ImportError(f"cannot load compressai's ans extension {found.origin}")
    module = importlib.util.module_from_spec(ext_spec)
    try:
        ext_spec.loader.exec_module(module)
    except (OSError, ImportError) as exc:
        raise ImportError(f"compressai's ans extension {found.origin} does not load: {exc}") from exc
    sys.modules["compressai.ans"] = module
    return module


class CompressAIBackend:
    """CompressAI's C++ rANS coder with the guards described in the module docstring."""

    name = "compressai"

    def __init__(self, ans: Any) -> None:
        self._encoder = ans.RansEncoder()
        self._decoder = ans.RansDecoder()
        self._python = PythonBackend()
        self._local = threading.local()

    def _padded(self, data: bytes, total: int) -> bytearray:
        """``data`` followed by zeros, at least ``total`` bytes, in a per-thread buffer reused across calls
        (allocating and zeroing megabytes per call would cost more than decoding)."""
        buf: bytearray | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < total or len(buf) > 2 * total + (1 << 20):
            buf = self._local.buf = bytearray(total)
            self._local.dirty = 0
        n = len(data)
        buf[:n] = data
        if self._local.dirty > n:
            buf[n : self._local.dirty] = bytes(self._local.dirty - n)
        self._local.dirty = n
        return buf

    def _encode_list(self, flat: list[int], symbols: np.ndarray, tables: EntropyTables) -> bytes:
        if not compressai_encode_fits(len(flat), escape_operations(symbols, tables)):
            return self._python.encode(symbols, tables)
        lists = tables.coding_lists
        idx = _indexes(symbols.shape[0], len(flat) // symbols.shape[0])
        return self._encoder.encode_with_indexes(flat, idx, lists.rows, lists.lengths, lists.offsets)

    def encode(self, symbols: np.ndarray, tables: EntropyTables) -> bytes:
        return self._encode_list(symbols.reshape(-1).tolist(), symbols, tables)

    def decode(self, payload: bytes, shape: tuple[int, int, int], tables: EntropyTables) -> np.ndarray:
        c, h, w = shape
        n = c * h * w
        data = bytes(payload)
        if len(data) % 4 or len(data) < 8:
            raise PayloadError(f"payload of {len(data)} bytes is not a whole number (>= 2) of 32-bit words")
        state = int.from_bytes(data[:8], "little")
        if not RANS_L <= state < STATE_END:
            raise PayloadError(f"initial rANS state {state:#x} outside [2^31, 2^63)")
        pad = decode_padding_words(n, len(data) // 4)
        if len(data) + 4 * pad > FAST_DECODE_MAX_BYTES:
            return self._python.decode(data, shape, tables)
        lists = tables.coding_lists
        flat = self._decoder.decode_with_indexes(
            self._padded(data, len(data) + 4 * pad), _indexes(c, h * w), lists.rows, lists.lengths, lists.offsets
        )
        symbols = np.fromiter(flat, dtype=np.int32, count=n).reshape(c, h, w)
        if symbols.min() < -SYMBOL_LIMIT or symbols.max() > SYMBOL_LIMIT:
            raise PayloadError(f"payload decodes to symbols outside +-{SYMBOL_LIMIT}: corrupted")
        if self._encode_list(flat, symbols, tables) != data:
            raise PayloadError("payload is not the canonical encoding of the symbols it decodes to: corrupted")
        return symbols


@lru_cache(maxsize=None)
def _compressai_backend() -> CompressAIBackend | None:
    """CompressAI's coder, or None when compressai is not installed (logged once). An installed compressai
    whose coder fails to load is logged as a warning, with the reason, before falling back to Python."""
    try:
        return CompressAIBackend(_load_compressai_ans())
    except ModuleNotFoundError:
        log.info("compressai is not installed: rANS coding uses the pure-Python coder (same bytes, slower)")
    except (ImportError, AttributeError) as exc:
        log.warning(
            "compressai is installed but its rANS coder cannot be used (%s): falling back to the pure-Python coder, about 3x slower", exc
        )
    return None


def available_backends() -> list[str]:
    """Names of the backends usable here, fastest first."""
    return (["compressai"] if _compressai_backend() is not None else []) + ["python"]


def get_backend(name: str | None = None) -> Backend:
    """``"python"``, ``"compressai"``, or ``None``/``"auto"``: the environment variable ``MANTIS_CODEC_BACKEND``
    if set, else CompressAI when installed, else Python."""
    name = name or os.environ.get(BACKEND_ENV) or "auto"
    if name == "python":
        return PythonBackend()
    fast = _compressai_backend()
    if name == "compressai":
        if fast is None:
            raise CodecError("the compressai rANS backend was requested but compressai.ans cannot be loaded")
        return fast
    if name != "auto":
        raise CodecError(f"unknown codec backend {name!r}; choose python, compressai or auto")
    return fast if fast is not None else PythonBackend()
