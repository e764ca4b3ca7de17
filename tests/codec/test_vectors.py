"""The shared test vectors (tests/vectors/): pinned hashes, and the Python codec reproduces every case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import codec
from codec.rans import available_backends
from tests.tools.vectors import DEFAULT_DIR, check, sha256_hex

INDEX = json.loads((DEFAULT_DIR / "index.json").read_text())


def test_vector_dir_is_the_tests_one() -> None:
    assert DEFAULT_DIR == Path(__file__).resolve().parents[1] / "vectors"


@pytest.mark.parametrize("backend", available_backends())
def test_all_vectors_pass(backend: str) -> None:
    assert check(DEFAULT_DIR, [backend]) == []


def test_every_listed_file_is_pinned_and_every_file_is_listed() -> None:
    listed = {INDEX["tables"]["file"]: INDEX["tables"]["sha256"]}
    for case in INDEX["valid"]:
        for key in ("symbols", "bitstream", "latent"):
            if key in case:
                listed[case[key]] = case[f"{key}_sha256"]
    for case in INDEX["malformed"] + INDEX["malformed_tables"]:
        listed[case["file"]] = case["sha256"]
    on_disk = {p.name for p in DEFAULT_DIR.iterdir()} - {"index.json"}
    assert on_disk == set(listed)
    for name, sha in listed.items():
        assert sha256_hex((DEFAULT_DIR / name).read_bytes()) == sha, name


def test_vectors_cover_every_decoder_error_class() -> None:
    names = {c["error"] for c in INDEX["malformed"]} | {c["error"] for c in INDEX["malformed_tables"]}
    expected = {
        "TruncatedError",
        "BadMagicError",
        "UnsupportedVersionError",
        "TableMismatchError",
        "ChecksumError",
        "PayloadError",
        "TableFileError",
        None,
    }
    assert names == expected
    assert all(hasattr(codec, n) for n in names if n)


def test_vectors_are_small_and_include_a_kilobyte_payload() -> None:
    assert sum(p.stat().st_size for p in DEFAULT_DIR.iterdir()) < 100_000
    sizes = [(DEFAULT_DIR / c["bitstream"]).stat().st_size - codec.HEADER_SIZE for c in INDEX["valid"]]
    assert max(sizes) >= 1024


def test_a_changed_vector_is_detected(tmp_path: Path) -> None:
    for p in DEFAULT_DIR.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    case = INDEX["valid"][0]
    data = bytearray((tmp_path / case["bitstream"]).read_bytes())
    data[-1] ^= 1
    (tmp_path / case["bitstream"]).write_bytes(bytes(data))
    failures = check(tmp_path, ["python"])
    assert any(case["bitstream"] in f and "sha256" in f for f in failures)
    assert any("encode differs" in f for f in failures)


def test_halfway_latent_vector_rounds_half_to_even() -> None:
    case = next(c for c in INDEX["valid"] if c["name"] == "latent_halfway")
    shape = tuple(case["shape"])
    lat = np.fromfile(DEFAULT_DIR / case["latent"], dtype="<f4").reshape(shape)
    tables = codec.EntropyTables.load(DEFAULT_DIR / "tables.safetensors")
    d = lat - tables.medians.reshape(-1, 1, 1)
    halfway = (d % np.float32(1)) == np.float32(0.5)
    assert halfway.sum() >= 16
    sym = np.fromfile(DEFAULT_DIR / case["symbols"], dtype="<i4").reshape(shape)
    assert np.all(sym[halfway] % 2 == 0)
