"""The compact stream (specified in ``codec/STREAM.md``): one WebSocket binary message per request and
one per answer, with a few bytes of framing around the bitstreams and a few bytes per answer.

    request  = varint id | u8 top_k | (varint length | bitstream) x N
    answer   = varint id | u8 status = 0 | per image: varint task_mask | per active task: k varint label indices
    refusal  = varint id | u8 status = the error kind's stream code | UTF-8 message

Both runtimes read and write these messages only through this module; every malformed message raises
:class:`StreamFormatError` naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from codec.wire import ERRORS, LABEL_INDEX_INACTIVE, SPEC, ErrorKind, kind_for_stream_code

STATUS_OK: int = int(SPEC["stream"]["ok"])
UNREADABLE_ID: int = int(SPEC["stream"]["unreadable_id"])
"""The id of the answer to a message whose own id could not be read; clients number from 1."""
MAX_TOP_K: int = int(SPEC["stream"]["max_top_k"])
VARINT_MAX_BYTES: int = int(SPEC["stream"]["varint_max_bytes"])
MAX_ID: int = (1 << (7 * VARINT_MAX_BYTES)) - 1


class StreamFormatError(ValueError):
    """Bytes that are not a well-formed compact-stream message."""


def put_varint(value: int, out: bytearray) -> None:
    """Append ``value`` (0 <= value <= :data:`MAX_ID`) as an unsigned LEB128 varint."""
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"varint value {value} outside [0, {MAX_ID}]")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def get_varint(buf: bytes | memoryview, pos: int, what: str) -> tuple[int, int]:
    """Read a varint at ``pos``; returns ``(value, next position)``."""
    value = 0
    for i in range(VARINT_MAX_BYTES):
        if pos + i >= len(buf):
            raise StreamFormatError(f"{what}: message ends inside a varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos + i + 1
    raise StreamFormatError(f"{what}: varint longer than {VARINT_MAX_BYTES} bytes")


class TooManyImagesError(StreamFormatError):
    """A request message with more bitstreams than the server takes."""


@dataclass
class StreamRequest:
    id: int
    top_k: int
    bitstreams: list[bytes]


def encode_request(request_id: int, bitstreams: Sequence[bytes], top_k: int = 1) -> bytes:
    """One request message: ``request_id`` (>= 1), ``top_k`` (1..255) and one or more bitstreams."""
    if request_id < 1:
        raise ValueError(f"request ids start at 1 ({UNREADABLE_ID} is reserved), got {request_id}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be in [1, {MAX_TOP_K}] on the compact stream, got {top_k}")
    if not bitstreams:
        raise ValueError("a request needs at least one bitstream")
    out = bytearray()
    put_varint(request_id, out)
    out.append(top_k)
    for data in bitstreams:
        put_varint(len(data), out)
        out += data
    return bytes(out)


def read_request_id(buf: bytes | memoryview) -> int:
    """The id of a request message, or :data:`UNREADABLE_ID` when even that cannot be read."""
    try:
        return get_varint(buf, 0, "request id")[0]
    except StreamFormatError:
        return UNREADABLE_ID


def decode_request(buf: bytes | memoryview, max_images: int) -> StreamRequest:
    """Parse a request message. More than ``max_images`` bitstreams raises :class:`TooManyImagesError`
    as soon as the next one starts, before its bytes are copied."""
    view = memoryview(buf)
    request_id, pos = get_varint(view, 0, "request id")
    if request_id == UNREADABLE_ID:
        raise StreamFormatError(f"request id {UNREADABLE_ID} is reserved; ids start at 1")
    if pos >= len(view):
        raise StreamFormatError("message ends before its top_k byte")
    top_k = view[pos]
    pos += 1
    if top_k < 1:
        raise StreamFormatError("top_k must be at least 1")
    bitstreams: list[bytes] = []
    while pos < len(view):
        if len(bitstreams) == max_images:
            raise TooManyImagesError(f"message holds more than {max_images} bitstreams, the server's limit")
        n, pos = get_varint(view, pos, f"bitstream[{len(bitstreams)}] length")
        if pos + n > len(view):
            raise StreamFormatError(f"bitstream[{len(bitstreams)}] claims {n} bytes but only {len(view) - pos} remain")
        bitstreams.append(bytes(view[pos : pos + n]))
        pos += n
    if not bitstreams:
        raise StreamFormatError("message holds no bitstream")
    return StreamRequest(request_id, top_k, bitstreams)


def encode_answer(request_id: int, label_index: np.ndarray, label_counts: Sequence[int]) -> bytes:
    """The answer to ``request_id`` from the ``top`` output (``[N, T, k]``, -1 where inactive):
    per image the active-task mask, then per active task its ``min(k, labels_t)`` best label indices."""
    out = bytearray()
    put_varint(request_id, out)
    out.append(STATUS_OK)
    for image in np.asarray(label_index):
        active = [t for t in range(image.shape[0]) if image[t, 0] != LABEL_INDEX_INACTIVE]
        put_varint(sum(1 << t for t in active), out)
        for t in active:
            for j in image[t, : min(image.shape[1], label_counts[t])]:
                put_varint(int(j), out)
    return bytes(out)


def encode_refusal(request_id: int, kind: str, message: str, max_message_bytes: int = 1024) -> bytes:
    """A refusal: the error kind's stream code and the message (UTF-8, cut to ``max_message_bytes``)."""
    out = bytearray()
    put_varint(request_id, out)
    out.append(ERRORS[kind].stream)
    out += message.encode("utf-8")[:max_message_bytes]
    return bytes(out)


@dataclass
class StreamAnswer:
    """A decoded answer: ``labels`` per image, ``{task index: [label indices, best first]}`` for the
    active tasks; or, for a refusal, ``error`` (its kind) and ``message``."""

    id: int
    labels: list[dict[int, list[int]]] | None = None
    error: ErrorKind | None = None
    message: str = ""


def decode_answer(buf: bytes | memoryview, images: int, top_k: int, label_counts: Sequence[int]) -> StreamAnswer:
    """Parse an answer to a request of ``images`` bitstreams at ``top_k`` for a model whose tasks have
    ``label_counts`` labels."""
    view = memoryview(buf)
    request_id, pos = get_varint(view, 0, "answer id")
    if pos >= len(view):
        raise StreamFormatError("answer ends before its status byte")
    status = view[pos]
    pos += 1
    if status != STATUS_OK:
        kind = kind_for_stream_code(status)
        if kind is None:
            raise StreamFormatError(f"answer has unknown status {status}")
        return StreamAnswer(request_id, error=kind, message=bytes(view[pos:]).decode("utf-8", errors="replace"))
    labels: list[dict[int, list[int]]] = []
    for i in range(images):
        mask, pos = get_varint(view, pos, f"image {i} task mask")
        if mask >> len(label_counts):
            raise StreamFormatError(f"image {i}: task mask {mask:#b} names tasks beyond the model's {len(label_counts)}")
        image: dict[int, list[int]] = {}
        for t, count in enumerate(label_counts):
            if mask >> t & 1:
                ids = []
                for _ in range(min(top_k, count)):
                    j, pos = get_varint(view, pos, f"image {i} task {t} label")
                    if j >= count:
                        raise StreamFormatError(f"image {i} task {t}: label index {j} outside its {count} labels")
                    ids.append(j)
                image[t] = ids
        labels.append(image)
    if pos != len(view):
        raise StreamFormatError(f"answer has {len(view) - pos} bytes after its {images} images")
    return StreamAnswer(request_id, labels=labels)
