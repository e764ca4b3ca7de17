"""MANTiS bitstream format and entropy tables, shared by the edge client, the server and the Java codec.

See ``codec/FORMAT.md`` for the specification. Importing this package needs only numpy; CompressAI's C++
rANS coder is used when installed (it writes the same bytes as the pure-Python coder).
"""

from codec.bitstream import Decoded, compressai_string, decode, encode
from codec.errors import (
    BadMagicError,
    ChecksumError,
    CodecError,
    PayloadError,
    ShapeError,
    SymbolError,
    TableError,
    TableFileError,
    TableMismatchError,
    TaskMaskError,
    TruncatedError,
    UnsupportedVersionError,
)
from codec.format import FORMAT_VERSION, HEADER_SIZE, MAX_SYMBOLS, MAX_MASK_TASKS, SYMBOL_LIMIT, Header, read_header
from codec.latent import decode_latent, dequantize, encode_latent, quantize
from codec.rans import available_backends, get_backend
from codec.tables import EntropyTables

__all__ = [
    "EntropyTables",
    "Decoded",
    "encode",
    "decode",
    "encode_latent",
    "decode_latent",
    "quantize",
    "dequantize",
    "compressai_string",
    "available_backends",
    "get_backend",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAX_SYMBOLS",
    "MAX_MASK_TASKS",
    "SYMBOL_LIMIT",
    "Header",
    "read_header",
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
