"""Integer entropy tables: built once from a CompressAI ``EntropyBottleneck``, stored as safetensors.

The table file is a standard safetensors file (8-byte little-endian header length, JSON header, raw
little-endian tensors) holding ``cdfs`` (int32, ``(C, Lmax)``), ``cdf_lengths``, ``offsets`` (int32, ``(C,)``)
and ``medians`` (float32, ``(C,)``). Its ``__metadata__`` carries the format name, version, precision and a
SHA-256 of the content (see :meth:`EntropyTables.content_bytes`), verified on every load. Reading and
writing are implemented here (no pickle, no torch) so a device needs only numpy.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from codec.errors import TableError, TableFileError
from codec.files import atomic_write_bytes
from codec.format import MAX_CHANNELS, PRECISION, TABLE_ID_SIZE

TABLE_FORMAT = "mantis.entropy_tables"
TABLE_FORMAT_VERSION = "1"
MAX_CDF_LENGTH = (1 << PRECISION) + 1
"""Longest CDF: every one of its ``length - 1`` symbols needs a frequency of at least 1."""
OFFSET_LIMIT = 1 << 20
MEDIAN_LIMIT = float(1 << 20)
MAX_TABLE_FILE_BYTES = 64 << 20
MAX_JSON_HEADER_BYTES = 1 << 20
TENSOR_DTYPES = {"cdfs": "I32", "cdf_lengths": "I32", "offsets": "I32", "medians": "F32"}
_NP_DTYPES = {"I32": np.dtype("<i4"), "F32": np.dtype("<f4")}


class CodingLists(NamedTuple):
    """Plain-Python views of the tables for the rANS coders (built once per tables object)."""

    rows: list[list[int]]
    """Each CDF cut to its length (CompressAI's coder reads only that part of a row)."""
    lengths: list[int]
    offsets: list[int]


def _int_array(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise TableError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TableError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise TableError(f"{name} has values outside int32")
    out = np.array(arr, dtype=np.int32, copy=True)
    out.setflags(write=False)
    return out


def content_bytes(cdfs: np.ndarray, cdf_lengths: np.ndarray, offsets: np.ndarray, medians: np.ndarray, precision: int) -> bytes:
    """Precision, C, Lmax as uint32 LE, then cdfs, cdf_lengths, offsets (int32 LE) and medians (float32 LE),
    each row-major. Its SHA-256 is the tables' content hash."""
    c, lmax = cdfs.shape
    return b"".join(
        (
            struct.pack("<III", precision, c, lmax),
            np.asarray(cdfs).astype("<i4").tobytes(),
            np.asarray(cdf_lengths).astype("<i4").tobytes(),
            np.asarray(offsets).astype("<i4").tobytes(),
            np.asarray(medians).astype("<f4").tobytes(),
        )
    )


def table_file_bytes(cdfs: np.ndarray, cdf_lengths: np.ndarray, offsets: np.ndarray, medians: np.ndarray, sha256: str) -> bytes:
    """Safetensors bytes: tensors in name order, JSON header (sorted keys, no spaces) space-padded to a
    multiple of 8, metadata with the given content hash. Does not validate (test vectors build bad files)."""
    tensors = {
        "cdf_lengths": np.asarray(cdf_lengths).astype("<i4"),
        "cdfs": np.asarray(cdfs).astype("<i4"),
        "medians": np.asarray(medians).astype("<f4"),
        "offsets": np.asarray(offsets).astype("<i4"),
    }
    header: dict[str, Any] = {
        "__metadata__": {
            "format": TABLE_FORMAT,
            "version": TABLE_FORMAT_VERSION,
            "precision": str(PRECISION),
            "sha256": sha256,
        }
    }
    pos = 0
    for name, arr in tensors.items():
        header[name] = {"dtype": TENSOR_DTYPES[name], "shape": list(arr.shape), "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
    js = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    js += b" " * (-len(js) % 8)
    return struct.pack("<Q", len(js)) + js + b"".join(a.tobytes() for a in tensors.values())


def _validate(cdfs: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, medians: np.ndarray, precision: int) -> None:
    if precision != PRECISION:
        raise TableError(f"precision {precision} is not supported, the rANS coder uses {PRECISION}")
    c, lmax = cdfs.shape
    if not 1 <= c <= MAX_CHANNELS:
        raise TableError(f"{c} channels, expected 1..{MAX_CHANNELS}")
    if not 3 <= lmax <= MAX_CDF_LENGTH:
        raise TableError(f"CDF rows of length {lmax}, expected 3..{MAX_CDF_LENGTH}")
    for name, arr in (("cdf_lengths", lengths), ("offsets", offsets), ("medians", medians)):
        if arr.shape != (c,):
            raise TableError(f"{name} has shape {arr.shape}, expected ({c},) for {c} channels")
    if lengths.min() < 3 or lengths.max() > lmax:
        raise TableError(f"cdf_lengths must lie in 3..{lmax}, got {lengths.min()}..{lengths.max()}")
    if lengths.max() != lmax:
        raise TableError(f"CDF rows have {lmax} columns but the longest CDF has {lengths.max()} entries")
    if np.abs(offsets.astype(np.int64)).max() > OFFSET_LIMIT:
        raise TableError(f"offsets must lie in -{OFFSET_LIMIT}..{OFFSET_LIMIT}")
    if not np.all(np.isfinite(medians)) or np.abs(medians).max() > MEDIAN_LIMIT:
        raise TableError(f"medians must be finite and within +-{MEDIAN_LIMIT:g}")
    inside = np.arange(lmax)[None, :] < lengths[:, None]
    if np.any(cdfs[:, 0] != 0):
        raise TableError(f"CDFs of channels {np.flatnonzero(cdfs[:, 0] != 0).tolist()} do not start at 0")
    ends = cdfs[np.arange(c), lengths - 1]
    if np.any(ends != (1 << precision)):
        raise TableError(f"CDFs of channels {np.flatnonzero(ends != (1 << precision)).tolist()} do not end at {1 << precision}")
    rising = np.diff(cdfs.astype(np.int64), axis=1) > 0
    bad = np.flatnonzero(np.any(inside[:, 1:] & ~rising, axis=1))
    if bad.size:
        raise TableError(f"CDFs of channels {bad.tolist()} are not strictly increasing (a zero-frequency symbol)")
    if np.any(cdfs[~inside] != 0):
        raise TableError("CDF rows must be zero-padded past their length")


@dataclass(frozen=True, eq=False)
class EntropyTables:
    """Quantized CDFs, CDF lengths, offsets and medians of a factorized prior, one row per channel.

    Immutable; the arrays are read-only copies. Construction validates every invariant the coders rely on
    and raises :class:`~codec.errors.TableError` otherwise.
    """

    cdfs: np.ndarray
    cdf_lengths: np.ndarray
    offsets: np.ndarray
    medians: np.ndarray
    precision: int = PRECISION

    def __post_init__(self) -> None:
        cdfs = _int_array("cdfs", self.cdfs, 2)
        lengths = _int_array("cdf_lengths", self.cdf_lengths, 1)
        offsets = _int_array("offsets", self.offsets, 1)
        med = np.asarray(self.medians)
        if med.ndim != 1 or not np.issubdtype(med.dtype, np.floating):
            raise TableError(f"medians must be a 1-D float array, got dtype {med.dtype} shape {med.shape}")
        medians = np.array(med, dtype=np.float32, copy=True)
        medians.setflags(write=False)
        if isinstance(self.precision, bool) or not isinstance(self.precision, (int, np.integer)):
            raise TableError(f"precision must be an integer, got {self.precision!r}")
        _validate(cdfs, lengths, offsets, medians, int(self.precision))
        for name, value in (("cdfs", cdfs), ("cdf_lengths", lengths), ("offsets", offsets), ("medians", medians)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "precision", int(self.precision))

    @property
    def num_channels(self) -> int:
        return int(self.cdfs.shape[0])

    def content_bytes(self) -> bytes:
        """Canonical serialization hashed for :attr:`sha256` (see :func:`content_bytes`)."""
        return content_bytes(self.cdfs, self.cdf_lengths, self.offsets, self.medians, self.precision)

    @cached_property
    def sha256_digest(self) -> bytes:
        """Raw 32-byte SHA-256 of :meth:`content_bytes`."""
        return hashlib.sha256(self.content_bytes()).digest()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of :meth:`content_bytes`."""
        return self.sha256_digest.hex()

    @property
    def table_id(self) -> bytes:
        """Short id carried in every bitstream header: the first 2 bytes of :attr:`sha256_digest`."""
        return self.sha256_digest[:TABLE_ID_SIZE]

    @cached_property
    def max_values(self) -> np.ndarray:
        """Per channel, the index of the escape symbol (``cdf_length - 2``), int64."""
        return self.cdf_lengths.astype(np.int64) - 2

    @cached_property
    def coding_lists(self) -> CodingLists:
        lengths = self.cdf_lengths.tolist()
        rows = [row[:n] for row, n in zip(self.cdfs.tolist(), lengths)]
        return CodingLists(rows, lengths, self.offsets.tolist())

    def __repr__(self) -> str:
        c, lmax = self.cdfs.shape
        return f"EntropyTables(channels={c}, max_cdf_length={lmax}, precision={self.precision}, sha256={self.sha256[:16]}...)"

    # ------------------------------------------------------------------ file I/O

    def to_bytes(self) -> bytes:
        """The table file's bytes (see :func:`table_file_bytes`)."""
        return table_file_bytes(self.cdfs, self.cdf_lengths, self.offsets, self.medians, self.sha256)

    def save(self, path: str | os.PathLike) -> None:
        """Write the table file atomically (:func:`codec.files.atomic_write`)."""
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "EntropyTables":
        """Parse and verify a table file's bytes; :class:`TableFileError` naming ``source`` on any problem."""
        try:
            return _parse(data)
        except TableFileError as exc:
            raise TableFileError(f"entropy table file {source}: {exc}") from None
        except TableError as exc:
            raise TableFileError(f"entropy table file {source}: invalid tables: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EntropyTables":
        """Read a table file, checking its layout, dtypes, shapes, content hash and value ranges."""
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_TABLE_FILE_BYTES:
                raise TableFileError(f"entropy table file {path}: {size} bytes, larger than {MAX_TABLE_FILE_BYTES}")
            data = path.read_bytes()
        except FileNotFoundError:
            raise TableFileError(f"entropy table file {path} does not exist") from None
        except IsADirectoryError:
            raise TableFileError(f"entropy table file {path} is a directory") from None
        except OSError as exc:
            raise TableFileError(f"entropy table file {path} cannot be read: {exc.strerror or exc}") from None
        return cls.from_bytes(data, str(path))


def _parse(data: bytes) -> EntropyTables:
    n = len(data)
    if n < 8:
        raise TableFileError(f"{n} bytes, too short for a safetensors file")
    (hlen,) = struct.unpack_from("<Q", data, 0)
    if hlen > MAX_JSON_HEADER_BYTES or 8 + hlen > n:
        raise TableFileError(f"header length {hlen} does not fit the {n}-byte file")
    try:
        header = json.loads(data[8 : 8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableFileError(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise TableFileError("header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict):
        raise TableFileError("no __metadata__ (not a MANTiS table file)")
    if meta.get("format") != TABLE_FORMAT:
        raise TableFileError(f"metadata format {meta.get('format')!r}, expected {TABLE_FORMAT!r}")
    if meta.get("version") != TABLE_FORMAT_VERSION:
        raise TableFileError(f"table format version {meta.get('version')!r}, this codec reads {TABLE_FORMAT_VERSION!r}")
    if meta.get("precision") != str(PRECISION):
        raise TableFileError(f"precision {meta.get('precision')!r}, expected {PRECISION!r}")
    if set(header) != set(TENSOR_DTYPES):
        raise TableFileError(f"tensors {sorted(header)}, expected {sorted(TENSOR_DTYPES)}")
    body = memoryview(data)[8 + hlen :]
    arrays: dict[str, np.ndarray] = {}
    spans = []
    for name, want in TENSOR_DTYPES.items():
        info = header[name]
        if not isinstance(info, dict) or info.get("dtype") != want:
            raise TableFileError(f"tensor {name} must have dtype {want}, got {info!r:.80}")
        shape, offs = info.get("shape"), info.get("data_offsets")
        ok_shape = isinstance(shape, list) and len(shape) <= 2 and all(type(d) is int and 0 <= d <= MAX_TABLE_FILE_BYTES for d in shape)
        ok_offs = isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
        if not (ok_shape and ok_offs and 0 <= offs[0] <= offs[1] <= len(body)):
            raise TableFileError(f"tensor {name} has a malformed shape {shape!r} or data_offsets {offs!r}")
        count = int(np.prod(shape, dtype=np.int64))
        if offs[1] - offs[0] != 4 * count:
            raise TableFileError(f"tensor {name} of shape {shape} spans {offs[1] - offs[0]} bytes, expected {4 * count}")
        arrays[name] = np.frombuffer(body[offs[0] : offs[1]], dtype=_NP_DTYPES[want]).reshape(shape)
        spans.append((offs[0], offs[1]))
    spans.sort()
    covered = 0
    for start, end in spans:
        if start != covered:
            raise TableFileError("tensor data regions overlap or leave gaps")
        covered = end
    if covered != len(body):
        raise TableFileError(f"{len(body) - covered} bytes after the last tensor")
    if arrays["cdfs"].ndim != 2:
        raise TableFileError(f"cdfs must be 2-D, got shape {arrays['cdfs'].shape}")
    digest = hashlib.sha256(
        content_bytes(arrays["cdfs"], arrays["cdf_lengths"], arrays["offsets"], arrays["medians"], PRECISION)
    ).hexdigest()
    if meta.get("sha256") != digest:
        raise TableFileError(
            f"content hash mismatch: metadata says {meta.get('sha256')!r}, content gives {digest} (file corrupted or edited)"
        )
    return EntropyTables(
        cdfs=arrays["cdfs"],
        cdf_lengths=arrays["cdf_lengths"],
        offsets=arrays["offsets"],
        medians=arrays["medians"],
        precision=PRECISION,
    )
