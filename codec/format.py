"""Constants of bitstream format version 3 and its 8-byte header (see ``codec/FORMAT.md``).

Header layout, little-endian::

    offset size field
    0      1    magic and version 0xA3: magic 0xA (high 4 bits), version 3 (low 4 bits)
    1      1    task mask         bit t set = task t active (tasks 0..7)
    2      2    table id          first 2 bytes of the tables' SHA-256 content hash
    4      1    height            H - 1
    5      1    width             W - 1
    6      2    check (uint16 LE) CRC-16/CCITT-FALSE of tables SHA-256 (32 bytes) || header[0:6] || payload

The channel count is the tables' and the payload is everything after the header (its length is the
bitstream's, which every container gives).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from codec.errors import (
    BadMagicError,
    ChecksumError,
    PayloadError,
    ShapeError,
    TableMismatchError,
    TaskMaskError,
    TruncatedError,
    UnsupportedVersionError,
)

MAGIC = 0xA
"""High 4 bits of header byte 0."""
FORMAT_VERSION = 3
"""Low 4 bits of header byte 0."""
LEGACY_MAGIC = b"MT"
"""How format versions 1 and 2 (16-byte header) start: refused as an unsupported version, not as garbage."""
HEADER_SIZE = 8
TABLE_ID_SIZE = 2
_CHECKED_HEADER = HEADER_SIZE - 2  # header bytes under the CRC (all but the CRC itself)

PRECISION = 16
"""CDF precision in bits: every CDF ends at ``1 << PRECISION``."""

MAX_CHANNELS = 1 << 10
"""Largest channel count C of a set of entropy tables (and so of a latent)."""
MAX_LATENT_SIDE = 1 << 8
"""Largest latent H and W a header can carry (one byte each, stored minus one)."""
MAX_SYMBOLS = 1 << 20
"""Largest C*H*W a bitstream may have; decoding never allocates for more."""
MAX_PAYLOAD_BYTES = (1 << 18) - 1
"""Largest payload: 256 KiB - 1 byte."""
MIN_PAYLOAD_BYTES = 5
"""Every payload holds at least the flushed rANS state, in 5 to 8 bytes (``codec.rans.pack_state``)."""
SYMBOL_LIMIT = 1 << 24
"""Symbols must lie in ``[-SYMBOL_LIMIT, SYMBOL_LIMIT]``."""
MAX_MASK_TASKS = 8
"""Tasks a bitstream's task mask can name: one bit each in the 8-bit field (tasks 0..7)."""


@dataclass(frozen=True)
class Header:
    """Parsed header fields, as the header states them."""

    task_mask: int
    table_id: bytes
    latent_size: tuple[int, int]
    """``(H, W)`` of the latent; its channel count is the tables'."""
    payload_bytes: int
    """The bitstream's length less the header."""
    check: int
    """The stored CRC-16."""


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
    for name, v in (("H", h), ("W", w)):
        if not 1 <= v <= MAX_LATENT_SIDE:
            raise ShapeError(f"latent {name}={v} outside 1..{MAX_LATENT_SIDE} (shape {(c, h, w)})")
    if c * h * w > MAX_SYMBOLS:
        raise ShapeError(f"latent shape {(c, h, w)} has {c * h * w} symbols, more than the limit {MAX_SYMBOLS}")
    return c, h, w


def check_payload_length(n: int) -> None:
    """:class:`PayloadError` unless a payload of ``n`` bytes fits the format: at least the packed rANS state,
    at most :data:`MAX_PAYLOAD_BYTES`."""
    if n < MIN_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {n} bytes is shorter than the {MIN_PAYLOAD_BYTES}-byte minimum (the rANS state)")
    if n > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {n} bytes exceeds the format limit of {MAX_PAYLOAD_BYTES} bytes")


def checksum(table_sha256: bytes, header6: bytes | memoryview, payload: bytes | memoryview) -> int:
    """CRC-16/CCITT-FALSE of the tables' raw SHA-256, the first 6 header bytes, and the payload."""
    return binascii.crc_hqx(payload, binascii.crc_hqx(header6, binascii.crc_hqx(table_sha256, 0xFFFF)))


def pack(task_mask: int, table_id: bytes, table_sha256: bytes, shape: tuple[int, int, int], payload: bytes) -> bytes:
    """Header + payload. ``shape`` must already be validated (:func:`check_shape`)."""
    check_payload_length(len(payload))
    _, h, w = shape
    head6 = bytes(((MAGIC << 4) | FORMAT_VERSION, check_task_mask(task_mask))) + table_id + bytes((h - 1, w - 1))
    return head6 + checksum(table_sha256, head6, payload).to_bytes(2, "little") + payload


def read_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse the 8-byte header of ``data`` alone, without looking at the payload or verifying the CRC.

    Checks length >= 8 (:class:`TruncatedError`), magic and version; the fields (table id, latent size) are
    returned as the header states them, unchecked. Cheap whatever ``data`` holds: a receiver can refuse a
    bitstream its model cannot use (other tables, another latent size, unknown tasks) before decoding
    anything. :func:`unpack` starts with it.
    """
    view = memoryview(data).cast("B")
    n = len(view)
    if n < HEADER_SIZE:
        raise TruncatedError(f"bitstream of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    if bytes(view[0:2]) == LEGACY_MAGIC:
        raise UnsupportedVersionError(
            f"bitstream format version {view[2]} (16-byte header starting with {LEGACY_MAGIC!r}), this codec reads version "
            f"{FORMAT_VERSION}: re-export the edge client with this codec"
        )
    if view[0] >> 4 != MAGIC:
        raise BadMagicError(
            f"bitstream starts with {view[0]:#04x}, not the magic {MAGIC:#x}_ (format version {FORMAT_VERSION} starts with {(MAGIC << 4) | FORMAT_VERSION:#04x})"
        )
    version = view[0] & 0xF
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(f"bitstream format version {version}, this codec reads version {FORMAT_VERSION}")
    check = int.from_bytes(view[_CHECKED_HEADER:HEADER_SIZE], "little")
    return Header(view[1], bytes(view[2 : 2 + TABLE_ID_SIZE]), (view[4] + 1, view[5] + 1), n - HEADER_SIZE, check)


def unpack(data: bytes, table_id: bytes, table_sha256: bytes, num_channels: int) -> tuple[Header, memoryview]:
    """Parse and verify the header of ``data``; return it and a view of the payload.

    Checks, in this order: length >= 8 (:class:`TruncatedError`), magic, version, table id, length >= 13
    (:class:`TruncatedError`), payload limit, CRC-16, then the shape ``(num_channels, H, W)`` against the limits.
    """
    header = read_header(data)
    view = memoryview(data).cast("B")
    if header.table_id != table_id:
        raise TableMismatchError(f"bitstream was written with entropy tables {header.table_id.hex()}, these tables are {table_id.hex()}")
    minimum = HEADER_SIZE + MIN_PAYLOAD_BYTES
    if len(view) < minimum:
        raise TruncatedError(
            f"bitstream of {len(view)} bytes is shorter than the {minimum}-byte minimum "
            f"({HEADER_SIZE}-byte header and {MIN_PAYLOAD_BYTES}-byte rANS state)"
        )
    check_payload_length(header.payload_bytes)
    payload = view[HEADER_SIZE:]
    actual = checksum(table_sha256, view[0:_CHECKED_HEADER], payload)
    if actual != header.check:
        raise ChecksumError(
            f"CRC-16 mismatch (header says {header.check:04x}, data gives {actual:04x}): the bitstream is corrupted, cut or"
            " extended (or was written with other tables that share the table id)"
        )
    check_shape((num_channels, *header.latent_size), num_channels)
    return header, payload
