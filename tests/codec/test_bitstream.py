"""Bitstream encode/decode: round trips on both backends, header fields, every malformed-input class."""

from __future__ import annotations

import binascii
from pathlib import Path

import numpy as np
import pytest

import codec
from codec import format as fmt
from codec.errors import (
    BadMagicError,
    ChecksumError,
    CodecError,
    PayloadError,
    ShapeError,
    SymbolError,
    TableMismatchError,
    TaskMaskError,
    TruncatedError,
    UnsupportedVersionError,
)
from codec.rans import available_backends
from codec.tables import EntropyTables
from tests.tools.fuzz import reseal

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
BACKENDS = available_backends()


@pytest.fixture(scope="module")
def tables() -> EntropyTables:
    return EntropyTables.load(VECTORS / "tables.safetensors")


def _random_symbols(tables: EntropyTables, shape: tuple[int, int, int], seed: int, escapes: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sym = np.rint(rng.laplace(0, 2.0, size=shape)).astype(np.int64)
    wild = rng.random(shape) < escapes
    sym[wild] = rng.integers(-5000, 5000, size=int(wild.sum()))
    return sym.astype(np.int32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(8, 1, 1), (8, 2, 3), (8, 28, 28), (8, 5, 64)])
def test_round_trip(tables: EntropyTables, backend: str, shape: tuple[int, int, int]) -> None:
    sym = _random_symbols(tables, shape, seed=sum(shape))
    data = codec.encode(sym, 0b1010_0101, tables, backend=backend)
    dec = codec.decode(data, tables, backend=backend)
    assert dec.symbols.dtype == np.int32 and dec.shape == shape and dec.task_mask == 0b1010_0101
    np.testing.assert_array_equal(dec.symbols, sym)


def test_backends_write_identical_bytes(tables: EntropyTables) -> None:
    if "compressai" not in BACKENDS:
        pytest.skip("compressai is not installed: only the Python backend exists here")
    for seed in range(6):
        sym = _random_symbols(tables, (8, 7, 9), seed, escapes=0.1 * seed)
        assert codec.encode(sym, seed, tables, backend="python") == codec.encode(sym, seed, tables, backend="compressai")


def test_extreme_symbols_round_trip(tables: EntropyTables) -> None:
    sym = np.zeros((8, 2, 2), dtype=np.int32)
    sym[:, 0, 0] = codec.SYMBOL_LIMIT
    sym[:, 0, 1] = -codec.SYMBOL_LIMIT
    for backend in BACKENDS:
        np.testing.assert_array_equal(codec.decode(codec.encode(sym, 1, tables, backend=backend), tables).symbols, sym)


def test_header_layout(tables: EntropyTables) -> None:
    sym = _random_symbols(tables, (8, 5, 7), seed=1)
    data = codec.encode(sym, 0x81, tables)
    assert codec.HEADER_SIZE == 8
    assert data[0] == 0xA3 and data[1] == 0x81 and data[2:4] == tables.table_id and data[4] + 1 == 5 and data[5] + 1 == 7
    crc = binascii.crc_hqx(tables.sha256_digest + data[:6] + data[8:], 0xFFFF)
    assert int.from_bytes(data[6:8], "little") == crc
    header = codec.read_header(data)
    assert header.latent_size == (5, 7) and header.payload_bytes == len(data) - 8 and header.check == crc
    # The payload is the rANS word stream with the state's zero high bytes dropped (5 to 8 bytes).
    stream = codec.compressai_string(data)
    keep = 5 + (len(data) - 8 - 5) % 4
    assert len(stream) % 4 == 0 and len(stream) == len(data) - 8 - keep + 8
    assert stream[:keep] == data[8 : 8 + keep] and stream[keep:8] == bytes(8 - keep) and stream[8:] == data[8 + keep :]
    assert keep == 5 or data[8 + keep - 1] != 0


def test_checksum_is_crc16_ccitt_false() -> None:
    """The header's check is CRC-16/CCITT-FALSE (check value 0x29B1), chained over tables hash, header, payload."""
    assert fmt.checksum(b"123", b"456", b"789") == 0x29B1


def test_every_packed_state_length_round_trips(tables: EntropyTables) -> None:
    """States of 5, 6, 7 and 8 bytes all occur; each payload is the word stream with the state's zero high
    bytes dropped (the shortest form), decodes on every backend, and one more zero byte is rejected."""
    from codec.rans import state_bytes

    seen = set()
    for seed in range(400):
        sym = _random_symbols(tables, (8, 2, 3), seed=seed, escapes=0.0)
        data = codec.encode(sym, 1, tables)
        payload, stream = data[8:], codec.compressai_string(data)
        keep = state_bytes(len(payload))
        x = int.from_bytes(stream[:8], "little")
        assert keep == max(fmt.MIN_PAYLOAD_BYTES, (x.bit_length() + 7) // 8)
        if keep in seen:
            continue
        seen.add(keep)
        for backend in BACKENDS:
            np.testing.assert_array_equal(codec.decode(data, tables, backend=backend).symbols, sym)
        if keep < 8:
            wide = payload[:keep] + b"\0" + payload[keep:]
            with pytest.raises(PayloadError, match="shortest form"):
                codec.decode(_with_crc(tables, data[:6], wide), tables)
    assert seen == {5, 6, 7, 8}


def test_latent_round_trip(tables: EntropyTables) -> None:
    from tests.tools.fit import synthetic_latent

    lat = synthetic_latent((8, 6, 5), seed=9)
    data = codec.encode_latent(lat, 3, tables)
    y_hat, mask = codec.decode_latent(data, tables)
    assert mask == 3 and y_hat.dtype == np.float32
    np.testing.assert_array_equal(y_hat, codec.dequantize(codec.quantize(lat, tables), tables))
    assert np.max(np.abs(y_hat - lat)) <= 0.5 + 1e-6


def test_quantize_matches_entropy_bottleneck_rounding(tables: EntropyTables) -> None:
    import torch
    from compressai.entropy_models import EntropyBottleneck

    rng = np.random.default_rng(0)
    med = tables.medians.reshape(1, 8, 1, 1)
    k = rng.integers(-4, 4, size=(2, 8, 3, 4)).astype(np.float32)
    lat = np.concatenate([med + k + np.float32(0.5), rng.normal(0, 3, (2, 8, 3, 4)).astype(np.float32)], axis=2)
    halfway = (lat - med) % np.float32(1) == np.float32(0.5)
    assert halfway.sum() >= 40, "the test needs exact half-way values"
    eb = EntropyBottleneck(8)
    ref = eb.quantize(torch.from_numpy(lat), "symbols", torch.from_numpy(med.copy())).numpy()
    ours = codec.quantize(lat, tables)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(codec.quantize(lat[0], tables), ref[0])
    lat64 = lat.astype(np.float64) + 1e-9  # float64 latents are rounded in float64, as torch promotes them
    ref64 = eb.quantize(torch.from_numpy(lat64), "symbols", torch.from_numpy(med.copy())).numpy()
    np.testing.assert_array_equal(codec.quantize(lat64, tables), ref64)
    deq = EntropyBottleneck.dequantize(torch.from_numpy(ref), torch.from_numpy(med.copy())).numpy()
    np.testing.assert_array_equal(codec.dequantize(ours, tables), deq)


def test_quantize_rejects_bad_latents(tables: EntropyTables) -> None:
    lat = np.zeros((8, 2, 2), np.float32)
    for bad, exc in [(np.nan, SymbolError), (np.inf, SymbolError), (3e7, SymbolError)]:
        x = lat.copy()
        x[1, 1, 1] = bad
        with pytest.raises(exc):
            codec.quantize(x, tables)
    with pytest.raises(ShapeError, match="channels"):
        codec.quantize(np.zeros((7, 2, 2), np.float32), tables)
    with pytest.raises(ShapeError):
        codec.quantize(np.zeros((8, 2), np.float32), tables)
    with pytest.raises(SymbolError):
        codec.quantize(np.zeros((8, 2, 2), np.int32), tables)
    with pytest.raises(ShapeError):
        codec.encode_latent(np.zeros((1, 8, 2, 2), np.float32), 0, tables)


@pytest.mark.parametrize(
    "symbols, mask, exc",
    [
        (np.zeros((8, 2, 2), np.float32), 0, SymbolError),
        (np.full((8, 2, 2), codec.SYMBOL_LIMIT + 1), 0, SymbolError),
        (np.full((8, 2, 2), -codec.SYMBOL_LIMIT - 1, np.int64), 0, SymbolError),
        (np.zeros((7, 2, 2), np.int32), 0, ShapeError),
        (np.zeros((8, 2), np.int32), 0, ShapeError),
        (np.zeros((8, 0, 2), np.int32), 0, ShapeError),
        (np.zeros((8, 257, 1), np.int32), 0, ShapeError),
        (np.zeros((8, 400, 400), np.int8), 0, ShapeError),
        (np.zeros((8, 1, 300), np.int32), 0, ShapeError),
        (np.zeros((8, 2, 2), np.int32), 256, TaskMaskError),
        (np.zeros((8, 2, 2), np.int32), -1, TaskMaskError),
        (np.zeros((8, 2, 2), np.int32), 1.0, TaskMaskError),
        (np.zeros((8, 2, 2), np.int32), True, TaskMaskError),
    ],
)
def test_encode_rejects_bad_input(tables: EntropyTables, symbols, mask, exc) -> None:
    with pytest.raises(exc):
        codec.encode(symbols, mask, tables)


def test_every_task_mask_bit_round_trips(tables: EntropyTables) -> None:
    sym = np.zeros((8, 1, 2), np.int32)
    for mask in [0, 1, 2, 4, 8, 16, 32, 64, 128, 255, np.uint8(77)]:
        assert codec.decode(codec.encode(sym, mask, tables), tables).task_mask == int(mask)


def test_payload_too_large_for_the_format(tables: EntropyTables) -> None:
    sym = np.full((8, 256, 256), codec.SYMBOL_LIMIT, np.int32)  # ~ 7.5 bytes per symbol, > 1 MiB
    with pytest.raises(PayloadError, match="format limit"):
        codec.encode(sym, 0, tables)


# ---------------------------------------------------------------------------- malformed input


def _valid(tables: EntropyTables) -> bytes:
    return codec.encode(_random_symbols(tables, (8, 6, 6), seed=4), 5, tables)


def _with_crc(tables: EntropyTables, head6: bytes, payload: bytes) -> bytes:
    return reseal(head6 + bytes(2) + payload, tables)


@pytest.mark.parametrize("backend", BACKENDS)
def test_malformed_classes(tables: EntropyTables, backend: str) -> None:
    good = _valid(tables)
    head, payload = good[:4], good[8:]
    size = lambda h, w: bytes((h - 1, w - 1))  # noqa: E731
    cases = [
        (b"", TruncatedError, "shorter than the 8-byte header"),
        (good[:7], TruncatedError, "header"),
        (good[:12], TruncatedError, "13-byte minimum"),
        (_with_crc(tables, head + size(6, 6), payload[:4]), TruncatedError, "13-byte minimum"),
        (good[:-1], ChecksumError, "cut or extended"),
        (b"XY" + good[2:], BadMagicError, "magic"),
        (b"MT\x02" + good[3:], UnsupportedVersionError, "format version 2 .16-byte header"),
        (bytes([0xA7]) + good[1:], UnsupportedVersionError, "version 7"),
        (good[:2] + bytes([good[2] ^ 1]) + good[3:], TableMismatchError, tables.table_id.hex()),
        (good[:20] + bytes([good[20] ^ 4]) + good[21:], ChecksumError, "corrupted"),
        (good[:4] + bytes([good[4] + 1]) + good[5:], ChecksumError, "corrupted"),
        (good + b"junk", ChecksumError, "cut or extended"),
        (_with_crc(tables, head + size(6, 6), payload + b"\1\0\0\0"), PayloadError, None),
        (_with_crc(tables, head + size(6, 6), payload[:-4]), PayloadError, None),
        (_with_crc(tables, head + size(6, 6), payload + b"\0"), PayloadError, None),
        (_with_crc(tables, head + size(6, 6), payload[:-1]), PayloadError, None),
        (_with_crc(tables, head + size(6, 7), payload), PayloadError, None),
        (_with_crc(tables, head + size(6, 5), payload), PayloadError, None),
        (_with_crc(tables, head + size(256, 256), payload), PayloadError, None),
        (_with_crc(tables, head + size(6, 6), bytes(fmt.MAX_PAYLOAD_BYTES + 1)), PayloadError, "format limit"),
    ]
    for data, exc, message in cases:
        with pytest.raises(exc, match=message):
            codec.decode(data, tables, backend=backend)


def test_table_mismatch_with_other_tables(tables: EntropyTables) -> None:
    other = EntropyTables(tables.cdfs, tables.cdf_lengths, tables.offsets, tables.medians + np.float32(1))
    with pytest.raises(TableMismatchError, match="other|written with"):
        codec.decode(_valid(tables), other)


def test_id_collision_is_caught_by_the_checksum(tables: EntropyTables) -> None:
    """Tables that share the 2-byte id but differ (here: only the medians) fail the CRC, which covers the
    full table hash, instead of decoding to a silently wrong latent."""
    import hashlib

    prefix = hashlib.sha256(tables.content_bytes()[: -4 * tables.num_channels])
    for k in range(1, 1 << 20):
        medians = tables.medians + np.float32(k * 2.0**-12)
        h = prefix.copy()
        h.update(medians.astype("<f4").tobytes())
        if h.digest()[:2] == tables.table_id:
            break
    else:
        pytest.fail("no colliding id found")
    other = EntropyTables(tables.cdfs, tables.cdf_lengths, tables.offsets, medians)
    assert other.table_id == tables.table_id and other.sha256 != tables.sha256
    with pytest.raises(ChecksumError, match="other tables"):
        codec.decode(_valid(tables), other)


def test_too_many_symbols_are_rejected_before_allocation() -> None:
    """With 32 channels a header's largest latent (256 x 256) has 2^21 symbols, over the 2^20 limit: refused
    from the header, with nothing allocated for them."""
    import tracemalloc

    wide = EntropyTables(
        np.tile(np.array([[0, 30000, 65000, 65536]], np.int32), (32, 1)),
        np.full(32, 4, np.int32),
        np.full(32, -1, np.int32),
        np.zeros(32, np.float32),
    )
    good = codec.encode(np.zeros((32, 2, 2), np.int32), 1, wide)
    bad = _with_crc(wide, good[:4] + bytes((255, 255)), good[8:])
    tracemalloc.start()
    with pytest.raises(ShapeError, match="more than the limit"):
        codec.decode(bad, wide)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20


def test_decode_accepts_bytes_like_and_rejects_other_types(tables: EntropyTables) -> None:
    good = _valid(tables)
    for data in (bytearray(good), memoryview(good)):
        assert codec.decode(data, tables).task_mask == 5
    with pytest.raises(TypeError):
        codec.decode("\xa3", tables)  # type: ignore[arg-type]


def test_hierarchy() -> None:
    for exc in (
        TruncatedError,
        BadMagicError,
        UnsupportedVersionError,
        TableMismatchError,
        ChecksumError,
        ShapeError,
        PayloadError,
        SymbolError,
        TaskMaskError,
        codec.TableFileError,
    ):
        assert issubclass(exc, CodecError) and issubclass(exc, ValueError)
    assert issubclass(codec.TableFileError, codec.TableError)


def test_unknown_backend(tables: EntropyTables) -> None:
    with pytest.raises(CodecError, match="unknown codec backend"):
        codec.encode(np.zeros((8, 1, 1), np.int32), 0, tables, backend="fast")
