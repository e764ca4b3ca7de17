"""Constants of bitstream format version 2 and its 16-byte header (see ``codec/FORMAT.md``).

Header layout, little-endian::

    offset size field
    0      2    magic            b"MT" (0x4D 0x54)
    2      1    version          2
    3      1    task mask        bit t set = task t active (tasks 0..7)
    4      2    table id         first 2 bytes of the tables' SHA-256 content hash
    6      6    dims (uint48 LE) bits 0-9: C-1, 10-19: H-1, 20-29: W-1, 30-47: payload length in bytes
    12     4    crc32 (uint32 LE) CRC-32 of tables SHA-256 (32 bytes) || header[0:12] || payload
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from codec.errors import (
    BadMagicError,
    ChecksumError,
    PayloadError,
    ShapeError,
    TableMismatchError,
    TaskMaskError,
    TrailingDataError,
    TruncatedError,
    UnsupportedVersionError,
)

MAGIC = b"MT"
FORMAT_VERSION = 2
HEADER_SIZE = 16
TABLE_ID_SIZE = 2

PRECISION = 16
"""CDF precision in bits: every CDF ends at ``1 << PRECISION``."""

MAX_LATENT_DIM = 1 << 10
"""Largest latent C, H and W a header can carry (10 bits each, stored minus one)."""
MAX_SYMBOLS = 1 << 20
"""Largest C*H*W a bitstream may announce; decoding never allocates for more."""
MAX_PAYLOAD_BYTES = (1 << 18) - 1
"""Largest payload (18-bit field): 256 KiB - 1 byte."""
MIN_PAYLOAD_BYTES = 5
"""Every payload holds at least the flushed rANS state, in 5 to 8 bytes (``codec.rans.pack_state``)."""
SYMBOL_LIMIT = 1 << 24
"""Symbols must lie in ``[-SYMBOL_LIMIT, SYMBOL_LIMIT]``."""
MAX_MASK_TASKS = 8
"""Tasks a bitstream's task mask can name: one bit each in the 8-bit field (tasks 0..7)."""

_DIM_BITS = 10
_LENGTH_SHIFT = 3 * _DIM_BITS


@dataclass(frozen=True)
class Header:
    """Parsed header fields."""

    task_mask: int
    table_id: bytes
    shape: tuple[int, int, int]
    payload_bytes: int
    crc32: int


def check_task_mask(task_mask: int) -> int:
    """Return ``task_mask`` as int if it is an integer in 0..255, else raise :class:`TaskMaskError`."""
    if isinstance(task_mask, bool) or not hasattr(task_mask, "__index__"):
        raise TaskMaskError(f"task mask must be an integer, got {type(task_mask).__name__}")
    mask = int(task_mask.__index__())
    if not 0 <= mask < (1 << MAX_MASK_TASKS):
        raise TaskMaskError(f"task mask {mask} outside 0..{(1 << MAX_MASK_TASKS) - 1} (at most {MAX_MASK_TASKS} tasks)")
    return mask


def check_shape(shape: tuple[int, int, int], num_channels: int) -> tuple[int, int, int]:
    """Validate a latent shape ``(C, H, W)`` against the format limits and the tables' channel count."""
    if len(shape) != 3:
        raise ShapeError(f"latent shape must be (C, H, W), got {tuple(shape)}")
    c, h, w = (int(v) for v in shape)
    if c != num_channels:
        raise ShapeError(f"latent has {c} channels, the entropy tables have {num_channels}")
    for name, v in (("C", c), ("H", h), ("W", w)):
        if not 1 <= v <= MAX_LATENT_DIM:
            raise ShapeError(f"latent {name}={v} outside 1..{MAX_LATENT_DIM} (shape {(c, h, w)})")
    if c * h * w > MAX_SYMBOLS:
        raise ShapeError(f"latent shape {(c, h, w)} has {c * h * w} symbols, more than the limit {MAX_SYMBOLS}")
    return c, h, w


def check_payload_length(n: int) -> None:
    """:class:`PayloadError` unless a payload of ``n`` bytes fits the format: at least the packed rANS state,
    at most what the 18-bit length field holds."""
    if n < MIN_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {n} bytes is shorter than the {MIN_PAYLOAD_BYTES}-byte minimum (the rANS state)")
    if n > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {n} bytes exceeds the format limit of {MAX_PAYLOAD_BYTES} bytes")


def checksum(table_sha256: bytes, header12: bytes, payload: bytes) -> int:
    """CRC-32 (IEEE, as zlib) of the tables' raw SHA-256, the first 12 header bytes, and the payload."""
    return zlib.crc32(payload, zlib.crc32(header12, zlib.crc32(table_sha256))) & 0xFFFFFFFF


def pack(task_mask: int, table_id: bytes, table_sha256: bytes, shape: tuple[int, int, int], payload: bytes) -> bytes:
    """Header + payload. ``shape`` must already be validated."""
    check_payload_length(len(payload))
    c, h, w = shape
    dims = (c - 1) | ((h - 1) << _DIM_BITS) | ((w - 1) << (2 * _DIM_BITS)) | (len(payload) << _LENGTH_SHIFT)
    head12 = MAGIC + bytes((FORMAT_VERSION, check_task_mask(task_mask))) + table_id + dims.to_bytes(6, "little")
    return head12 + struct.pack("<I", checksum(table_sha256, head12, payload)) + payload


def read_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse the 16-byte header of ``data`` alone, without looking at the payload or verifying the CRC.

    Checks length >= 16 (:class:`TruncatedError`), magic and version; the fields (table id, shape, payload
    length) are returned as the header states them, unchecked. Cheap whatever ``data`` holds: a receiver
    can refuse a bitstream its model cannot use (other tables, another latent shape, unknown tasks) before
    decoding anything. :func:`unpack` starts with it.
    """
    view = memoryview(data).cast("B")
    n = len(view)
    if n < HEADER_SIZE:
        raise TruncatedError(f"bitstream of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    if bytes(view[0:2]) != MAGIC:
        raise BadMagicError(f"bitstream starts with {bytes(view[0:2])!r}, not the magic {MAGIC!r}")
    version = view[2]
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(f"bitstream format version {version}, this codec reads version {FORMAT_VERSION}")
    dims = int.from_bytes(view[6:12], "little")
    mask = (1 << _DIM_BITS) - 1
    shape = ((dims & mask) + 1, ((dims >> _DIM_BITS) & mask) + 1, ((dims >> (2 * _DIM_BITS)) & mask) + 1)
    (crc,) = struct.unpack("<I", view[12:16])
    return Header(view[3], bytes(view[4:6]), shape, dims >> _LENGTH_SHIFT, crc)


def unpack(data: bytes, table_id: bytes, table_sha256: bytes, num_channels: int) -> tuple[Header, memoryview]:
    """Parse and verify the header of ``data``; return it and a view of the payload.

    Checks, in this order: length >= 16 (:class:`TruncatedError`), magic, version, table id, payload length
    against the data length (truncated / trailing), CRC-32, then the shape against limits and tables.
    """
    header = read_header(data)
    view = memoryview(data).cast("B")
    n = len(view)
    if header.table_id != table_id:
        raise TableMismatchError(f"bitstream was written with entropy tables {header.table_id.hex()}, these tables are {table_id.hex()}")
    length = header.payload_bytes
    expected = HEADER_SIZE + length
    if n < expected:
        raise TruncatedError(f"header announces a {length}-byte payload, only {n - HEADER_SIZE} bytes follow")
    if n > expected:
        raise TrailingDataError(f"{n - expected} bytes follow the {length}-byte payload")
    payload = view[HEADER_SIZE:]
    actual = checksum(table_sha256, view[0:12], payload)
    if actual != header.crc32:
        raise ChecksumError(
            f"CRC-32 mismatch (header says {header.crc32:08x}, data gives {actual:08x}): the bitstream is corrupted"
            " (or was written with other tables that share the table id)"
        )
    check_payload_length(length)
    check_shape(header.shape, num_channels)
    return header, payload
