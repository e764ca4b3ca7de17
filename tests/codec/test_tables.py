"""Entropy tables: building from an EntropyBottleneck, the safetensors file, hashing and validation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from training.tables import tables_from_bottleneck
import codec
from codec.errors import TableError, TableFileError
from codec.tables import EntropyTables, content_bytes, table_file_bytes

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


@pytest.fixture(scope="module")
def tables() -> EntropyTables:
    return EntropyTables.load(VECTORS / "tables.safetensors")


@pytest.fixture(scope="module")
def eb():
    from tests.tools.fit import fit_entropy_bottleneck

    return fit_entropy_bottleneck(6, steps=40, seed=3, batch=2, size=8)


def test_from_entropy_bottleneck_copies_the_updated_tables(eb) -> None:
    t = tables_from_bottleneck(eb)
    assert t.num_channels == 6
    np.testing.assert_array_equal(t.cdfs, eb.quantized_cdf.numpy())
    np.testing.assert_array_equal(t.cdf_lengths, eb.cdf_length.numpy())
    np.testing.assert_array_equal(t.offsets, eb.offset.numpy())
    np.testing.assert_array_equal(t.medians, eb._get_medians().detach().reshape(-1).numpy())
    assert t.cdfs.dtype == np.int32 and t.medians.dtype == np.float32 and t.precision == 16
    assert not t.cdfs.flags.writeable


def test_from_entropy_bottleneck_requires_update() -> None:
    from compressai.entropy_models import EntropyBottleneck

    with pytest.raises(TableError, match="update"):
        tables_from_bottleneck(EntropyBottleneck(4))
    with pytest.raises(TableError, match="not a CompressAI EntropyBottleneck"):
        tables_from_bottleneck(object())


def test_save_load_round_trip_is_exact_and_atomic(tables: EntropyTables, tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    tables.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]
    again = EntropyTables.load(path)
    for name in ("cdfs", "cdf_lengths", "offsets", "medians"):
        np.testing.assert_array_equal(getattr(again, name), getattr(tables, name))
    assert again.sha256 == tables.sha256 and again.table_id == tables.table_id
    assert path.read_bytes() == (VECTORS / "tables.safetensors").read_bytes()


def test_hash_and_id(tables: EntropyTables) -> None:
    import hashlib

    assert tables.sha256 == hashlib.sha256(tables.content_bytes()).hexdigest()
    assert tables.table_id == bytes.fromhex(tables.sha256[:4]) and len(tables.table_id) == 2
    other = EntropyTables(tables.cdfs, tables.cdf_lengths, tables.offsets, tables.medians + np.float32(0.25))
    assert other.sha256 != tables.sha256, "medians are part of the content hash"


def test_standard_safetensors_reads_our_file_and_we_read_its_files(tables: EntropyTables, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    loaded = load_file(str(VECTORS / "tables.safetensors"))
    np.testing.assert_array_equal(loaded["cdfs"], tables.cdfs)
    np.testing.assert_array_equal(loaded["medians"], tables.medians)
    path = tmp_path / "lib.safetensors"
    meta = {"format": "mantis.entropy_tables", "version": "1", "precision": "16", "sha256": tables.sha256}
    arrays = {"cdfs": tables.cdfs, "cdf_lengths": tables.cdf_lengths, "offsets": tables.offsets, "medians": tables.medians}
    save_file({k: np.array(v) for k, v in arrays.items()}, str(path), metadata=meta)
    assert EntropyTables.load(path).sha256 == tables.sha256


def test_missing_unreadable_and_directory_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TableFileError, match="nope.safetensors.*does not exist"):
        EntropyTables.load(tmp_path / "nope.safetensors")
    with pytest.raises(TableFileError, match="is a directory"):
        EntropyTables.load(tmp_path)


def _set(key: str, field: str, value: object):
    return lambda h: h[key].__setitem__(field, value)


@pytest.mark.parametrize(
    "mutate, extra, message",
    [
        (lambda h: h.pop("medians"), b"", "tensors"),
        (_set("cdfs", "dtype", "I64"), b"", "dtype"),
        (_set("cdfs", "data_offsets", [0, 10**9]), b"", "data_offsets"),
        (_set("cdfs", "shape", [1, 2, 3]), b"", "shape"),
        (_set("__metadata__", "format", "other"), b"", "format"),
        (_set("__metadata__", "version", "9"), b"", "version"),
        (_set("__metadata__", "precision", "15"), b"", "precision"),
        (_set("__metadata__", "sha256", "0" * 64), b"", "hash mismatch"),
        (lambda h: None, b"\0\0\0\0", "after the last tensor"),
    ],
)
def test_malformed_files_raise_table_file_error(tables: EntropyTables, tmp_path: Path, mutate, extra: bytes, message: str) -> None:
    raw = tables.to_bytes()
    (hlen,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + hlen])
    mutate(header)
    js = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(js)) + js + raw[8 + hlen :] + extra)
    with pytest.raises(TableFileError, match=message) as info:
        EntropyTables.load(path)
    assert "bad.safetensors" in str(info.value)


@pytest.mark.parametrize(
    "data", [b"", b"\x01", struct.pack("<Q", 1 << 40) + b"{}", struct.pack("<Q", 2) + b"[]", struct.pack("<Q", 4) + b"\xff\xfe{}"]
)
def test_garbage_files(data: bytes) -> None:
    with pytest.raises(TableFileError):
        EntropyTables.from_bytes(data, "x")


def _valid_arrays(tables: EntropyTables) -> dict[str, np.ndarray]:
    return {
        "cdfs": tables.cdfs.copy(),
        "cdf_lengths": tables.cdf_lengths.copy(),
        "offsets": tables.offsets.copy(),
        "medians": tables.medians.copy(),
    }


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a["cdfs"].__setitem__((0, 0), 1), "start at 0"),
        (lambda a: a["cdfs"].__setitem__((1, 1), 0), "strictly increasing"),
        (lambda a: a["cdf_lengths"].__setitem__(0, 2), "cdf_lengths"),
        (lambda a: a["cdf_lengths"].__setitem__(2, a["cdf_lengths"][2] - 1), "end at 65536|zero-padded"),
        (lambda a: a["offsets"].__setitem__(0, 1 << 21), "offsets"),
        (lambda a: a["medians"].__setitem__(0, np.nan), "medians"),
        (lambda a: a.__setitem__("medians", a["medians"][:-1]), "shape"),
        (lambda a: a.__setitem__("cdfs", a["cdfs"].astype(np.float32)), "integers"),
        (lambda a: a.__setitem__("cdfs", np.concatenate([a["cdfs"], np.zeros((8, 1), np.int32)], 1)), "longest"),
    ],
)
def test_invalid_tables_are_rejected(tables: EntropyTables, edit, message: str) -> None:
    arrays = _valid_arrays(tables)
    edit(arrays)
    with pytest.raises(TableError, match=message):
        EntropyTables(**arrays)


def test_invalid_content_with_matching_hash_is_a_table_file_error(tables: EntropyTables) -> None:
    import hashlib

    arrays = _valid_arrays(tables)
    arrays["offsets"][3] = -(1 << 21)
    digest = hashlib.sha256(content_bytes(**arrays, precision=16)).hexdigest()
    with pytest.raises(TableFileError, match="edited.safetensors: invalid tables: offsets"):
        EntropyTables.from_bytes(table_file_bytes(**arrays, sha256=digest), "edited.safetensors")


def test_precision_other_than_16_is_rejected(tables: EntropyTables) -> None:
    with pytest.raises(TableError, match="precision"):
        EntropyTables(tables.cdfs, tables.cdf_lengths, tables.offsets, tables.medians, precision=15)


def test_tables_are_immutable(tables: EntropyTables) -> None:
    with pytest.raises(AttributeError):
        tables.precision = 12  # type: ignore[misc]
    with pytest.raises(ValueError):
        tables.offsets[0] = 3
    assert codec.EntropyTables is EntropyTables
