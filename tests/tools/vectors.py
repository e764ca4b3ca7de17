"""Shared test vectors in ``tests/vectors/``, checked by the Python and the Java tests.

``uv run python -m tests.tools.vectors --check`` verifies them; ``--regenerate`` (deliberate) rebuilds them from
a freshly fitted 8-channel ``EntropyBottleneck`` (needs torch and CompressAI) and rewrites ``index.json``
with every file's SHA-256. Files: ``tables.safetensors``; per valid case ``<name>.symbols.i32`` (int32 LE,
C-order), ``<name>.mtb`` (the bitstream) and optionally ``<name>.latent.f32`` (float32 LE); per malformed
case ``bad_<name>.mtb`` or ``bad_<name>.safetensors`` with the error class it must raise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from training.tables import tables_from_bottleneck
from codec import format as fmt
from codec.bitstream import decode, encode
from codec.errors import CodecError
from codec.files import atomic_write_bytes, atomic_write_json
from codec.latent import quantize
from codec.rans import available_backends, encode_operations, pack_state, state_bytes, unpack_state
from codec.tables import EntropyTables, table_file_bytes
from tests.tools.fuzz import reseal

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "vectors"
INDEX = "index.json"
TABLES = "tables.safetensors"
CHANNELS = 8


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- building


def _valid_cases(tables: EntropyTables) -> list[dict[str, Any]]:
    from tests.tools.fit import synthetic_latent

    c = tables.num_channels
    rng = np.random.default_rng(7)
    cases: list[dict[str, Any]] = []

    typical = quantize(synthetic_latent((c, 6, 6), seed=1), tables)
    cases.append({"name": "typical", "task_mask": 0b101, "symbols": typical})

    esc = rng.integers(-2, 3, size=(c, 4, 5)).astype(np.int64)
    lo = tables.offsets.astype(np.int64)
    hi = lo + tables.max_values  # first value coded through the escape path (raw value 0)
    special = [
        lo - 1,
        lo - 2,
        hi,
        hi + 1,
        hi + 15,
        lo - 1000,
        hi + 70_000,
        np.full(c, -fmt.SYMBOL_LIMIT),
        np.full(c, fmt.SYMBOL_LIMIT),
        hi - 1,
        lo,
    ]
    for k, vals in enumerate(special):
        esc[:, k // 5, k % 5] = vals
    cases.append({"name": "escapes", "task_mask": 0xFF, "symbols": esc.astype(np.int32)})

    cases.append({"name": "single_pixel", "task_mask": 0, "symbols": quantize(synthetic_latent((c, 1, 1), 2), tables)})
    cases.append({"name": "zeros", "task_mask": 1, "symbols": np.zeros((c, 3, 7), dtype=np.int32)})
    large = quantize(synthetic_latent((c, 24, 24), seed=3), tables)
    cases.append({"name": "large", "task_mask": 0x80, "symbols": large})

    # A latent whose first row sits exactly half-way between integers (d = x - median = k + 0.5 in float32),
    # pinning the round-half-to-even rule.
    lat = synthetic_latent((c, 4, 4), seed=4)
    med = tables.medians[:, None]
    lat[:, 0, :] = med + np.array([-1.5, -0.5, 0.5, 1.5], dtype=np.float32)[None, :]
    halfway = int(np.sum(np.abs((lat[:, 0, :] - med) % np.float32(1) - np.float32(0.5)) == 0))
    if halfway < 2 * c:
        raise RuntimeError(f"only {halfway} half-way values in the latent_halfway vector")
    cases.append({"name": "latent_halfway", "task_mask": 0b11, "latent": lat, "symbols": quantize(lat, tables)})
    return cases


def _reheader(stream: bytes, tables: EntropyTables, *, size: tuple[int, int] | None = None, payload: bytes | None = None) -> bytes:
    """Rewrite the latent size (H, W) and/or payload of a bitstream and recompute its CRC (valid checksum)."""
    head = bytearray(stream[: fmt.HEADER_SIZE])
    if size is not None:
        head[4:6] = bytes((size[0] - 1, size[1] - 1))
    return reseal(bytes(head) + (stream[fmt.HEADER_SIZE :] if payload is None else payload), tables)


def _escape_ops(tables: EntropyTables, count_nibbles: list[int], raw_nibbles: list[int]) -> list[tuple[int, int]]:
    row = tables.coding_lists.rows[0]
    mv = tables.coding_lists.lengths[0] - 2
    return [(row[mv], row[mv + 1] - row[mv])] + [(n, 0) for n in count_nibbles + raw_nibbles]


def _malformed_cases(tables: EntropyTables, valid: bytes, shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    c, h, w = shape
    payload = valid[fmt.HEADER_SIZE :]
    n = len(payload)
    rng = np.random.default_rng(11)

    def patched(offset: int, value: int) -> bytes:
        b = bytearray(valid)
        b[offset] = value
        return bytes(b)

    flipped = bytearray(valid)
    flipped[fmt.HEADER_SIZE + 3] ^= 0x10
    lists = tables.coding_lists

    def zero_op(ch: int) -> tuple[int, int]:
        row, z = lists.rows[ch], -lists.offsets[ch]  # symbol 0 of channel ch lies inside its CDF
        return row[z], row[z + 1] - row[z]

    def crafted(ops: list[tuple[int, int]]) -> bytes:
        """A (C, 1, 1) stream: ``ops`` for channel 0, then symbol 0 for the other channels, valid CRC."""
        p = pack_state(encode_operations(ops + [zero_op(ch) for ch in range(1, c)]))
        return _reheader(valid, tables, size=(1, 1), payload=p)

    # A payload whose state takes fewer than 8 bytes, widened by a zero high byte: decodes, but not canonical.
    candidates = [(payload, (h, w)), (crafted([zero_op(0)])[fmt.HEADER_SIZE :], (1, 1))]
    short = next(((p, hw) for p, hw in candidates if state_bytes(len(p)) < 8), None)
    if short is None:
        raise RuntimeError("every candidate payload has an 8-byte state: none can be widened")
    short_state, (sh, sw) = short
    keep = state_bytes(len(short_state))
    widened = short_state[:keep] + b"\0" + short_state[keep:]
    garbage = rng.integers(0, 256, size=n, dtype=np.uint16).astype(np.uint8).tobytes()
    stream = unpack_state(payload)
    big_state = pack_state(stream[:4] + struct.pack("<I", 0x80000000 | struct.unpack_from("<I", stream, 4)[0]) + stream[8:])
    return [
        {"name": "empty", "data": b"", "error": "TruncatedError", "what": "no bytes at all"},
        {"name": "short_header", "data": valid[:5], "error": "TruncatedError", "what": "5 of the 8 header bytes"},
        {
            "name": "payload_four_bytes",
            "data": _reheader(valid, tables, payload=payload[:4]),
            "error": "TruncatedError",
            "what": "a 4-byte payload, shorter than any rANS state (valid CRC)",
        },
        {"name": "short_payload", "data": valid[:-1], "error": "ChecksumError", "what": "last payload byte missing"},
        {"name": "bad_magic", "data": patched(0, ord("X")), "error": "BadMagicError", "what": "first byte X"},
        {
            "name": "version_2",
            "data": b"MT\x02" + valid[1:],
            "error": "UnsupportedVersionError",
            "what": "a stream starting like version 2 (16-byte header, magic MT)",
        },
        {"name": "version_4", "data": patched(0, 0xA4), "error": "UnsupportedVersionError", "what": "version 4 in byte 0"},
        {"name": "other_tables", "data": patched(2, valid[2] ^ 0xFF), "error": "TableMismatchError", "what": "table id of other tables"},
        {"name": "payload_bit_flip", "data": bytes(flipped), "error": "ChecksumError", "what": "one payload bit flipped"},
        {"name": "crc_field", "data": patched(6, valid[6] ^ 1), "error": "ChecksumError", "what": "CRC field altered"},
        {"name": "size_field", "data": patched(4, valid[4] + 1), "error": "ChecksumError", "what": "latent height altered"},
        {"name": "trailing_byte", "data": valid + b"\0", "error": "ChecksumError", "what": "one byte appended"},
        {"name": "trailing_word", "data": valid + b"\0\0\0\0", "error": "ChecksumError", "what": "a word appended"},
        {
            "name": "largest_size",
            "data": _reheader(valid, tables, size=(fmt.MAX_LATENT_SIDE, fmt.MAX_LATENT_SIDE)),
            "error": "PayloadError",
            "what": "the largest latent size with a small latent's payload (valid CRC)",
        },
        {
            "name": "payload_garbage",
            "data": _reheader(valid, tables, payload=garbage),
            "error": "PayloadError",
            "what": "random payload bytes (valid CRC)",
        },
        {
            "name": "payload_extra_word",
            "data": _reheader(valid, tables, payload=payload + b"\0\0\0\0"),
            "error": "PayloadError",
            "what": "an unused word after the payload (valid CRC)",
        },
        {
            "name": "payload_missing_word",
            "data": _reheader(valid, tables, payload=payload[:-4]),
            "error": "PayloadError",
            "what": "payload one word short (valid CRC)",
        },
        {
            "name": "state_too_large",
            "data": _reheader(valid, tables, payload=big_state),
            "error": "PayloadError",
            "what": "initial rANS state >= 2^63 (valid CRC)",
        },
        {
            "name": "state_not_shortest",
            "data": _reheader(valid, tables, size=(sh, sw), payload=widened),
            "error": "PayloadError",
            "what": "the rANS state written with a zero high byte (valid CRC)",
        },
        {
            "name": "escape_too_long",
            "data": crafted(_escape_ops(tables, [8], [1] * 8)),
            "error": "PayloadError",
            "what": "an escape announcing 8 nibbles (valid CRC)",
        },
        {
            "name": "escape_count_runaway",
            "data": crafted(_escape_ops(tables, [15] * 40 + [0], [])),
            "error": "PayloadError",
            "what": "an escape count of 600 nibbles (valid CRC)",
        },
        {
            "name": "escape_leading_zero",
            "data": crafted(_escape_ops(tables, [2], [3, 0])),
            "error": "PayloadError",
            "what": "an escape whose top nibble is 0, not canonical (valid CRC)",
        },
        {
            "name": "escape_out_of_range",
            "data": crafted(_escape_ops(tables, [7], [15] * 7)),
            "error": "PayloadError",
            "what": "an escape decoding beyond +-2^24 (valid CRC)",
        },
        {
            "name": "canonical_control",
            "data": crafted([zero_op(0)]),
            "error": None,
            "what": "control: the crafting path yields a valid stream of zeros",
        },
    ]


def _malformed_tables(tables: EntropyTables) -> list[dict[str, Any]]:
    good = tables.to_bytes()
    edited = bytearray(good)
    edited[-1] ^= 0x01  # last byte of the offsets tensor
    cdfs = tables.cdfs.copy()
    cdfs[0, 2] = cdfs[0, 1]  # a zero-frequency symbol
    from codec.tables import content_bytes

    flat_sha = sha256_hex(content_bytes(cdfs, tables.cdf_lengths, tables.offsets, tables.medians, tables.precision))
    return [
        {"name": "edited", "data": bytes(edited), "error": "TableFileError", "what": "one byte changed: hash mismatch"},
        {"name": "truncated", "data": good[:100], "error": "TableFileError", "what": "first 100 bytes only"},
        {
            "name": "zero_frequency",
            "data": table_file_bytes(cdfs, tables.cdf_lengths, tables.offsets, tables.medians, flat_sha),
            "error": "TableFileError",
            "what": "a CDF that is not strictly increasing, with a matching hash",
        },
    ]


def regenerate(out_dir: Path) -> dict[str, Any]:
    """Fit the tables, build every case and write the vector files and ``index.json``."""
    from tests.tools.fit import fit_entropy_bottleneck

    out_dir.mkdir(parents=True, exist_ok=True)
    tables = tables_from_bottleneck(fit_entropy_bottleneck(CHANNELS, steps=200, seed=0, batch=4, size=8))
    tables.save(out_dir / TABLES)
    table_bytes = (out_dir / TABLES).read_bytes()
    index: dict[str, Any] = {
        "format_version": fmt.FORMAT_VERSION,
        "tables": {
            "file": TABLES,
            "sha256": sha256_hex(table_bytes),
            "content_sha256": tables.sha256,
            "table_id": tables.table_id.hex(),
            "channels": tables.num_channels,
        },
        "valid": [],
        "malformed": [],
        "malformed_tables": [],
    }
    typical_stream = b""
    for case in _valid_cases(tables):
        sym = case["symbols"]
        stream = encode(sym, case["task_mask"], tables, backend="python")
        entry = {"name": case["name"], "shape": list(sym.shape), "task_mask": case["task_mask"]}
        files = {"symbols": (f"{case['name']}.symbols.i32", sym.astype("<i4").tobytes()), "bitstream": (f"{case['name']}.mtb", stream)}
        if "latent" in case:
            files["latent"] = (f"{case['name']}.latent.f32", case["latent"].astype("<f4").tobytes())
        for key, (name, data) in files.items():
            atomic_write_bytes(out_dir / name, data)
            entry[key] = name
            entry[f"{key}_sha256"] = sha256_hex(data)
        index["valid"].append(entry)
        if case["name"] == "typical":
            typical_stream, typical_shape = stream, sym.shape
    for case in _malformed_cases(tables, typical_stream, typical_shape):
        name = f"{'bad' if case['error'] else 'ok'}_{case['name']}.mtb"
        atomic_write_bytes(out_dir / name, case["data"])
        index["malformed"].append(
            {"name": case["name"], "file": name, "sha256": sha256_hex(case["data"]), "error": case["error"], "what": case["what"]}
        )
    for case in _malformed_tables(tables):
        name = f"bad_tables_{case['name']}.safetensors"
        atomic_write_bytes(out_dir / name, case["data"])
        index["malformed_tables"].append(
            {"name": case["name"], "file": name, "sha256": sha256_hex(case["data"]), "error": case["error"], "what": case["what"]}
        )
    atomic_write_json(out_dir / INDEX, index, indent=1)
    return index


# ---------------------------------------------------------------------------- checking


def check(vector_dir: Path, backends: list[str] | None = None) -> list[str]:
    """Verify every pinned file hash and every case with each backend; return a list of failures."""
    failures: list[str] = []
    index = json.loads((vector_dir / INDEX).read_text(encoding="utf-8"))

    def read(name: str, sha: str) -> bytes:
        data = (vector_dir / name).read_bytes()
        if sha256_hex(data) != sha:
            failures.append(f"{name}: sha256 {sha256_hex(data)} differs from the pinned {sha}")
        return data

    read(index["tables"]["file"], index["tables"]["sha256"])
    tables = EntropyTables.load(vector_dir / index["tables"]["file"])
    if tables.sha256 != index["tables"]["content_sha256"] or tables.table_id.hex() != index["tables"]["table_id"]:
        failures.append("tables: content hash or table id differs from index.json")
    for be in backends or available_backends():
        for case in index["valid"]:
            shape = tuple(case["shape"])
            sym = np.frombuffer(read(case["symbols"], case["symbols_sha256"]), dtype="<i4").reshape(shape)
            stream = read(case["bitstream"], case["bitstream_sha256"])
            if "latent" in case:
                lat = np.frombuffer(read(case["latent"], case["latent_sha256"]), dtype="<f4").reshape(shape)
                if not np.array_equal(quantize(lat, tables), sym):
                    failures.append(f"{case['name']}: quantize(latent) differs from the pinned symbols")
            if encode(sym, case["task_mask"], tables, backend=be) != stream:
                failures.append(f"{case['name']} [{be}]: encode differs from the pinned bitstream")
            try:
                dec = decode(stream, tables, backend=be)
            except CodecError as exc:
                failures.append(f"{case['name']} [{be}]: decode raised {type(exc).__name__}: {exc}")
                continue
            if not np.array_equal(dec.symbols, sym) or dec.task_mask != case["task_mask"] or dec.shape != shape:
                failures.append(f"{case['name']} [{be}]: decode differs from the pinned symbols/mask/shape")
        for case in index["malformed"]:
            data = read(case["file"], case["sha256"])
            try:
                decode(data, tables, backend=be)
                got = None
            except CodecError as exc:
                got = type(exc).__name__
            if got != case["error"]:
                failures.append(f"{case['file']} [{be}]: expected {case['error']}, got {got}")
    for case in index["malformed_tables"]:
        read(case["file"], case["sha256"])
        try:
            EntropyTables.load(vector_dir / case["file"])
            got = None
        except CodecError as exc:
            got = type(exc).__name__
        if got != case["error"]:
            failures.append(f"{case['file']}: expected {case['error']}, got {got}")
    return failures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.tools.vectors", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="vector directory (default: tests/vectors)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--regenerate", action="store_true", help="rebuild all vectors (changes the pinned bytes)")
    mode.add_argument("--check", action="store_true", help="verify the vectors (the default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.regenerate:
        index = regenerate(args.dir)
        print(
            f"wrote {len(index['valid'])} valid, {len(index['malformed'])} malformed bitstreams and "
            f"{len(index['malformed_tables'])} malformed table files to {args.dir}"
        )
    failures = check(args.dir)
    for f in failures:
        print("FAIL", f)
    print(f"vectors in {args.dir}: {'OK' if not failures else f'{len(failures)} failures'} (backends: {', '.join(available_backends())})")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
