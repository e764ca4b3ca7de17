"""The codec's exception hierarchy (documented in ``codec/FORMAT.md``, section "Errors").

Every problem with a bitstream, a table file or the codec's inputs raises a subclass of
:class:`CodecError`, itself a :class:`ValueError`, with a message that says what is wrong.
The Java codec (``android_demo/codec``) uses the same class names.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "TruncatedError",
    "BadMagicError",
    "UnsupportedVersionError",
    "TableMismatchError",
    "ChecksumError",
    "ShapeError",
    "PayloadError",
    "SymbolError",
    "TaskMaskError",
    "TableError",
    "TableFileError",
]


class CodecError(ValueError):
    """Base class of every codec error."""


class TruncatedError(CodecError):
    """The data is shorter than the header, or than the header and the smallest payload."""


class BadMagicError(CodecError):
    """The data does not start with the MANTiS magic (``0xA`` in the high 4 bits of byte 0)."""


class UnsupportedVersionError(CodecError):
    """The header's format version is not one this codec reads."""


class TableMismatchError(CodecError):
    """The bitstream was written with other entropy tables (its table id differs)."""


class ChecksumError(CodecError):
    """The CRC-16 over tables, header and payload does not match: the data was corrupted, cut or extended."""


class ShapeError(CodecError):
    """A latent shape is invalid, too large, or does not match the tables' channel count."""


class PayloadError(CodecError):
    """The rANS payload is malformed (too short, overrun, non-canonical) or too large to encode."""


class SymbolError(CodecError):
    """Symbols or latents given to the encoder are not integers / finite, or lie outside the coded range."""


class TaskMaskError(CodecError):
    """A task mask outside 0..255."""


class TableError(CodecError):
    """Entropy tables violate the table invariants (CDF shape, monotonicity, value ranges)."""


class TableFileError(TableError):
    """A table file is missing, unreadable, malformed, or fails its content hash; the message names the file."""
