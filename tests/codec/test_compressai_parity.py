"""Cross-compatibility with CompressAI: its EntropyBottleneck and rANS coder read our payloads and we read theirs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.tables import tables_from_bottleneck
import codec
from codec import format as fmt
from tests.tools.fit import synthetic_latent
from codec.rans import (
    PythonBackend,
    compressai_encode_fits,
    decode_padding_words,
    escape_operations,
    get_backend,
    pack_state,
)
from codec.tables import EntropyTables

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
BACKENDS = codec.available_backends()


@pytest.fixture(scope="module")
def eb():
    from tests.tools.fit import fit_entropy_bottleneck

    return fit_entropy_bottleneck(16, steps=60, seed=1, batch=2, size=8)


@pytest.fixture(scope="module")
def tables(eb) -> EntropyTables:
    return tables_from_bottleneck(eb)


def _latents(channels: int) -> list[np.ndarray]:
    plain = synthetic_latent((channels, 28, 28), seed=21)
    outliers = synthetic_latent((channels, 9, 11), seed=22)
    outliers[:, ::3, ::4] *= 60.0  # far outside the tables: escape path
    outliers[0, 0, 0] = -30_000.0
    return [plain, outliers, synthetic_latent((channels, 1, 1), seed=23)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_entropy_bottleneck_compress_equals_our_payload(eb, tables: EntropyTables, backend: str) -> None:
    for lat in _latents(tables.num_channels):
        ref = eb.compress(torch.from_numpy(lat)[None])[0]
        ours = codec.encode_latent(lat, 9, tables, backend=backend)
        assert codec.compressai_string(ours) == ref


@pytest.mark.parametrize("backend", BACKENDS)
def test_entropy_bottleneck_decompresses_our_payload(eb, tables: EntropyTables, backend: str) -> None:
    for lat in _latents(tables.num_channels):
        data = codec.encode_latent(lat, 1, tables, backend=backend)
        y_ref = eb.decompress([codec.compressai_string(data)], lat.shape[1:])[0].numpy()
        y_ours, _ = codec.decode_latent(data, tables, backend=backend)
        np.testing.assert_array_equal(y_ref, y_ours)
        np.testing.assert_array_equal(codec.quantize(y_ref, tables), codec.quantize(lat, tables))


@pytest.mark.parametrize("backend", BACKENDS)
def test_we_decode_entropy_bottleneck_strings(eb, tables: EntropyTables, backend: str) -> None:
    for lat in _latents(tables.num_channels):
        strings = eb.compress(torch.from_numpy(lat)[None])
        symbols = eb.quantize(torch.from_numpy(lat)[None], "symbols", eb._get_medians()).numpy()[0]
        got = get_backend(backend).decode(strings[0], lat.shape, tables)
        np.testing.assert_array_equal(got, symbols)
        # Its state packed and wrapped in our header, the string is a valid bitstream.
        data = fmt.pack(4, tables.table_id, tables.sha256_digest, lat.shape, pack_state(strings[0]))
        np.testing.assert_array_equal(codec.decode(data, tables, backend=backend).symbols, symbols)


def test_compressai_raw_coder_on_the_shared_vectors() -> None:
    from compressai import ans

    index = json.loads((VECTORS / "index.json").read_text())
    tables = EntropyTables.load(VECTORS / index["tables"]["file"])
    cdfs = tables.cdfs.tolist()  # the full zero-padded rows, as EntropyBottleneck passes them
    lists = tables.coding_lists
    for case in index["valid"]:
        shape = tuple(case["shape"])
        sym = np.fromfile(VECTORS / case["symbols"], dtype="<i4").reshape(shape)
        stream = (VECTORS / case["bitstream"]).read_bytes()
        idx = np.repeat(np.arange(shape[0]), shape[1] * shape[2]).tolist()
        if compressai_encode_fits(sym.size, escape_operations(sym, tables)):
            enc = ans.RansEncoder().encode_with_indexes(sym.reshape(-1).tolist(), idx, cdfs, lists.lengths, lists.offsets)
            assert enc == codec.compressai_string(stream), case["name"]
        dec = ans.RansDecoder().decode_with_indexes(codec.compressai_string(stream), idx, cdfs, lists.lengths, lists.offsets)
        assert dec == sym.reshape(-1).tolist(), case["name"]


def test_tiny_latents_avoid_compressai_buffer_overflow() -> None:
    """CompressAI's encoder buffer has one word per operation; 1-3 symbols need more (the 8-byte flush)."""
    vec = EntropyTables.load(VECTORS / "tables.safetensors")
    one = EntropyTables(vec.cdfs[:1, : vec.cdf_lengths[0]], vec.cdf_lengths[:1], vec.offsets[:1], vec.medians[:1])
    assert not compressai_encode_fits(1, 0) and not compressai_encode_fits(3, 0) and compressai_encode_fits(5, 0)
    for shape in [(1, 1, 1), (1, 1, 2), (1, 2, 2), (1, 1, 5)]:
        sym = np.zeros(shape, np.int32)
        sym.flat[0] = 123_456  # an escape: more bypass operations
        data = [codec.encode(sym, 0, one, backend=b) for b in BACKENDS]
        assert len(set(data)) == 1
        np.testing.assert_array_equal(codec.decode(data[0], one).symbols, sym)


def _compressai_decoder_reads(words: list[int], tables: EntropyTables, shape: tuple[int, int, int]) -> int:
    """Model of CompressAI's ``decode_with_indexes``: number of 32-bit words it reads, zeros past the end."""
    lists = tables.coding_lists
    mask64 = (1 << 64) - 1
    pos = 2
    x = (words[0] if words else 0) | ((words[1] if len(words) > 1 else 0) << 32)

    def refill(state: int) -> int:
        nonlocal pos
        if state < 1 << 31:
            state = ((state << 32) | (words[pos] if pos < len(words) else 0)) & mask64
            pos += 1
        return state

    def get4() -> int:
        nonlocal x
        val = x & 15
        x = refill(x >> 4)
        return val

    for ch in range(shape[0]):
        row, mv = lists.rows[ch], lists.lengths[ch] - 2
        for _ in range(shape[1] * shape[2]):
            cum = x & 0xFFFF
            s = next(i for i, v in enumerate(row) if v > cum) - 1
            x = refill(((row[s + 1] - row[s]) * (x >> 16) + cum - row[s]) & mask64)
            if s == mv:
                val = get4()
                n = val
                while val == 15:
                    val = get4()
                    n += val
                for _ in range(n):
                    get4()
    return pos


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    words=st.lists(
        st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 0xFFFFFFFF, 0xFFFF0000, 0x0000FFFF, 0x80000000])),
        min_size=2,
        max_size=24,
    ),
    h=st.integers(1, 4),
    w=st.integers(1, 6),
)
def test_decoder_padding_covers_every_byte_stream(words: list[int], h: int, w: int) -> None:
    """Any payload, however crafted, makes CompressAI's decoder read fewer words than payload + padding."""
    vec = EntropyTables.load(VECTORS / "tables.safetensors")
    reads = _compressai_decoder_reads(words, vec, (8, h, w))
    assert reads <= len(words) + decode_padding_words(8 * h * w, len(words))


def test_python_backend_agrees_with_the_model_on_valid_streams() -> None:
    vec = EntropyTables.load(VECTORS / "tables.safetensors")
    sym = np.random.default_rng(3).integers(-40, 40, size=(8, 3, 4)).astype(np.int32)
    payload = PythonBackend().encode(sym, vec)
    words = np.frombuffer(payload, dtype="<u4").tolist()
    assert _compressai_decoder_reads(words, vec, sym.shape) == len(words)


def test_direct_extension_load_keeps_compressai_importable() -> None:
    """The codec loads ``compressai.ans`` without importing torch; importing compressai afterwards works."""
    code = (
        "import sys, codec, numpy as np\n"
        "assert codec.get_backend().name == 'compressai' and 'torch' not in sys.modules\n"
        "import torch\n"
        "from compressai.entropy_models import EntropyBottleneck\n"
        "eb = EntropyBottleneck(2); eb.update()\n"
        "print(len(eb.compress(torch.zeros(1, 2, 3, 3))[0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) >= 8
