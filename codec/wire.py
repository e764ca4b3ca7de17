"""The wire contract between the edge runtime and the server (specified in ``codec/WIRE.md``).

Every name, status and byte layout that crosses the network is read here from ``codec/wire.json``, the
one machine-readable definition that the Python runtimes, the export, the Java client's tests and the
test suite all read::

    edge                                                          server
    bitstreams ─► BYTES tensor "bitstream" [N] ─────────────────► decode ─► server half
                  (uint32-le length + bytes per element)
    labels    ◄── logits_<task> FP32 [N, labels]  ◄────────────── per-task logits
              ◄── labels_<task> BYTES [N, k]      ◄────────────── top-k label names (active tasks only)
              ◄── active_tasks BOOL [N, T]        ◄────────────── the task mask of each bitstream

Errors carry a *kind* (``bad_request``, ``codec``, ``table_mismatch`` ...) that fixes the HTTP status and
the gRPC status code with the same meaning.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SPEC_FILE = Path(__file__).with_name("wire.json")
SPEC: dict = json.loads(SPEC_FILE.read_text(encoding="utf-8"))

BITSTREAM_INPUT: str = SPEC["inputs"]["bitstream"]["name"]
ACTIVE_TASKS_OUTPUT: str = SPEC["outputs"]["active_tasks"]["name"]
LOGITS_PREFIX: str = SPEC["outputs"]["logits"]["prefix"]
LABELS_PREFIX: str = SPEC["outputs"]["labels"]["prefix"]
LABEL_INDEX_OUTPUT: str = SPEC["outputs"]["top"]["name"]
"""INT32 ``[N, T, k]``: per image and task the indices of the k best labels (the manifest's order), best first."""
LABEL_INDEX_INACTIVE: int = int(SPEC["outputs"]["top"]["inactive"])
"""The ``top`` value where a task is inactive for an image (or has fewer than k labels)."""
TOP_K_PARAMETER: str = SPEC["parameters"]["top_k"]["name"]
TOP_K_DEFAULT: int = int(SPEC["parameters"]["top_k"]["default"])
HEADER_LENGTH: str = SPEC["binary_extension"]["header_length"]
BINARY_DATA_SIZE: str = SPEC["binary_extension"]["binary_data_size"]
BINARY_DATA: str = SPEC["binary_extension"]["binary_data"]
BINARY_DATA_OUTPUT: str = SPEC["binary_extension"]["binary_data_output"]
AUTH_HEADER: str = SPEC["auth"]["header"]
AUTH_SCHEME: str = SPEC["auth"]["scheme"]
TOKEN_ENV: str = SPEC["auth"]["token_env"]
"""Environment variable holding the bearer token when no token file is given (edge runtime and server)."""
GRPC_PROTO: Path = SPEC_FILE.with_name(SPEC["grpc"]["proto"])
"""The KServe v2 gRPC service definition (package ``inference``), the one source of the gRPC messages."""
GRPC_SERVICE: str = SPEC["grpc"]["service"]
GRPC_AUTH_METADATA: str = SPEC["grpc"]["auth_metadata"]
"""gRPC metadata key carrying ``Bearer <token>`` (gRPC metadata keys are lower case)."""
ERROR_KIND_PARAMETER: str = SPEC["grpc"]["error_kind_parameter"]
"""Response parameter naming the error kind of a refused request on the gRPC stream."""
STREAM_PATH: str = SPEC["stream"]["path"]
"""Route of the compact stream (``codec/STREAM.md``); ``{model}`` is the model name."""

# KServe v2 datatype -> little-endian numpy dtype (BYTES is handled separately).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


@dataclass(frozen=True)
class ErrorKind:
    """One class of refusal: its name, HTTP status, gRPC status code name and meaning."""

    name: str
    http: int
    grpc: str
    stream: int
    meaning: str


ERRORS: dict[str, ErrorKind] = {
    k: ErrorKind(k, int(v["http"]), str(v["grpc"]), int(v["stream"]), str(v["meaning"])) for k, v in SPEC["errors"].items()
}
_BY_HTTP = {}
for _kind in ERRORS.values():
    _BY_HTTP.setdefault(_kind.http, _kind)
_BY_STREAM = {kind.stream: kind for kind in ERRORS.values()}


def error_kind(name: str) -> ErrorKind:
    """The :class:`ErrorKind` called ``name``; ``KeyError`` naming the known kinds otherwise."""
    try:
        return ERRORS[name]
    except KeyError:
        raise KeyError(f"unknown error kind {name!r}; the wire contract has {sorted(ERRORS)}") from None


def kind_for_status(status: int) -> ErrorKind | None:
    """The first error kind with HTTP status ``status`` (None for a status the contract does not use)."""
    return _BY_HTTP.get(status)


def kind_for_stream_code(code: int) -> ErrorKind | None:
    """The error kind with compact-stream status ``code`` (None for a code the contract does not define)."""
    return _BY_STREAM.get(code)


class ProtocolError(Exception):
    """A request the server refuses. ``kind`` names the :data:`ERRORS` entry, which fixes ``status``
    (HTTP) and ``grpc_code``."""

    def __init__(self, message: str, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.error = error_kind(kind)

    @property
    def kind(self) -> str:
        return self.error.name

    @property
    def status(self) -> int:
        return self.error.http

    @property
    def grpc_code(self) -> str:
        return self.error.grpc


class WireFormatError(ValueError):
    """Bytes that do not follow the contract's layout (a truncated BYTES tensor, a wrong element count)."""


def logits_output(task: str) -> str:
    """Name of the FP32 ``[N, labels]`` output of ``task``'s logits (also the server half's output name)."""
    return LOGITS_PREFIX + task


def labels_output(task: str) -> str:
    """Name of the BYTES ``[N, k]`` output of ``task``'s top-k label names."""
    return LABELS_PREFIX + task


def output_names(tasks: Sequence[str]) -> list[str]:
    """The outputs a model with ``tasks`` answers when a request names none, in the contract's order
    (everything but ``top``, which comes only when asked for, so older clients get what they always did)."""
    return [logits_output(t) for t in tasks] + [labels_output(t) for t in tasks] + [ACTIVE_TASKS_OUTPUT]


def requestable_outputs(tasks: Sequence[str]) -> list[str]:
    """Every output a request may name: :func:`output_names` and ``top``."""
    return output_names(tasks) + [LABEL_INDEX_OUTPUT]


def pack_bytes(elements: Sequence[bytes]) -> bytes:
    """Serialise a BYTES tensor: per element a uint32 little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(e)) + bytes(e) for e in elements)


def unpack_bytes(buf: bytes | memoryview, count: int | None, name: str = "tensor") -> list[bytes]:
    """Split a binary BYTES tensor into its elements (exactly ``count`` when given); :class:`WireFormatError`
    naming ``name`` when the buffer does not hold that."""
    view = memoryview(buf)
    out: list[bytes] = []
    pos = 0
    while pos < len(view):
        if count is not None and len(out) == count:
            raise WireFormatError(f"{name}: binary data has bytes after its {count} elements (shape says {count})")
        if pos + 4 > len(view):
            raise WireFormatError(f"{name}: element {len(out)} has a truncated 4-byte length prefix")
        (n,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + n > len(view):
            raise WireFormatError(f"{name}: element {len(out)} claims {n} bytes but only {len(view) - pos} remain")
        out.append(bytes(view[pos : pos + n]))
        pos += n
    if count is not None and len(out) != count:
        raise WireFormatError(f"{name}: binary data holds {len(out)} elements, shape says {count}")
    return out


def bearer(token: str) -> str:
    """The ``Authorization`` header value for ``token``."""
    return f"{AUTH_SCHEME} {token}"


def read_token(token_file: str | os.PathLike | None) -> str | None:
    """The bearer token from ``token_file`` (stripped), else from ``$MANTIS_SERVER_TOKEN``, else None.
    An unreadable or empty token file is a ``ValueError`` naming the file."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read token file {token_file}: {exc}") from None
        if not token:
            raise ValueError(f"token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None
