"""What a payload costs beyond the information it carries: 31 to 40 bits (FLUSH_FIXED_BYTES plus at most one
byte of alignment of the packed rANS state).

This is the bound the training metrics rely on when they count the rANS flush as a fixed cost per
bitstream (``training/evaluate.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tools.fuzz import DEFAULT_VECTORS
from codec.rans import FLUSH_FIXED_BYTES, available_backends, encode, escape_operations, information_bits
from codec.tables import EntropyTables

TABLES = EntropyTables.load(DEFAULT_VECTORS / "tables.safetensors")
ROUNDING_BITS_PER_OPERATION = 2.0**-14


def _draw(rng: np.random.Generator, shape: tuple[int, int], escape_rate: float) -> np.ndarray:
    """Symbols sampled from each channel's own distribution, with some out-of-range ones (escapes)."""
    c = TABLES.num_channels
    out = np.empty((c, *shape), dtype=np.int32)
    for ch in range(c):
        n = int(TABLES.cdf_lengths[ch])
        freq = np.diff(TABLES.cdfs[ch, :n].astype(np.float64))[:-1]
        index = rng.choice(len(freq), size=shape, p=freq / freq.sum())
        out[ch] = index + TABLES.offsets[ch]
    escapes = rng.random(out.shape) < escape_rate
    out[escapes] = rng.integers(-3000, 3000, size=int(escapes.sum()))
    return out


@pytest.mark.parametrize("backend", available_backends())
@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(1, 12), w=st.integers(1, 12), escape_rate=st.sampled_from([0.0, 0.01, 0.2]))
def test_payload_is_information_plus_flush(backend: str, seed: int, h: int, w: int, escape_rate: float) -> None:
    symbols = _draw(np.random.default_rng(seed), (h, w), escape_rate)
    payload = encode(symbols, TABLES, backend)
    excess = 8 * len(payload) - information_bits(symbols, TABLES)
    slack = ROUNDING_BITS_PER_OPERATION * (symbols.size + escape_operations(symbols, TABLES))
    # The final state x carries log2(x) - 31 bits in 8 * max(5, ceil(bitlength(x) / 8)) bits.
    assert 8 * FLUSH_FIXED_BYTES - 1 - slack < excess <= 8 * FLUSH_FIXED_BYTES + 8 + slack


def test_information_bits_of_the_most_likely_symbols() -> None:
    """A one-symbol latent at each channel's mode costs exactly -log2 of the mode's frequency."""
    c = TABLES.num_channels
    modes = np.array([np.argmax(np.diff(TABLES.cdfs[ch, : int(TABLES.cdf_lengths[ch])])[:-1]) for ch in range(c)])
    symbols = (modes + TABLES.offsets).astype(np.int32).reshape(c, 1, 1)
    freq = TABLES.cdfs[np.arange(c), modes + 1] - TABLES.cdfs[np.arange(c), modes]
    assert information_bits(symbols, TABLES) == pytest.approx(float(np.sum(16 - np.log2(freq))))
