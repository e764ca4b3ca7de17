"""KServe v2 (Open Inference Protocol) HTTP/REST messages, as Triton speaks them.

Parsing of inference requests and encoding of inference responses, independent of the HTTP stack.

Requests are JSON, optionally followed by raw tensor bytes (the *binary tensor data extension*): the
``Inference-Header-Content-Length`` HTTP header then gives the length of the JSON part, and every input
whose ``parameters.binary_data_size`` is set takes that many bytes from what follows, in input order.
A ``BYTES`` tensor in binary form is its elements back to back, each a 4-byte little-endian length and the
bytes. In JSON form a ``BYTES`` element is a string: its UTF-8 bytes (Triton's rule), or, when the input
has the parameter ``"content_type": "base64"``, the base64-decoded bytes.

Responses put an output in binary form when its requested-output parameter ``binary_data`` is true, or
when the request parameter ``binary_data_output`` is true and the output does not say otherwise.

Everything a client can get wrong raises :class:`ProtocolError`, which carries the HTTP status to answer.
The work a request costs is bounded before it is done: with ``max_elements`` set, the JSON header is
refused (413) when it holds more structure than a request of that many elements needs (counted with
``bytes.count``, before ``json.loads`` turns each value into an object), and every input's element count
is checked against it (413) before its data is touched.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codec.wire import (
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    BINARY_DATA_SIZE,
    DATATYPES,
    HEADER_LENGTH,
    ProtocolError,
    WireFormatError,
    pack_bytes,
    unpack_bytes,
)


@dataclass
class InputTensor:
    """One request input. ``data`` holds the elements of a BYTES tensor, or a flat numpy array otherwise."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any]
    data: list[bytes] | np.ndarray


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """A parsed inference request. ``outputs`` is None when the client asked for every output."""

    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None
    parameters: dict[str, Any]

    def binary_output(self, name: str) -> bool:
        """Whether output ``name`` goes back in binary form."""
        default = bool(self.parameters.get(BINARY_DATA_OUTPUT, False))
        for out in self.outputs or []:
            if out.name == name:
                return bool(out.parameters.get(BINARY_DATA, default))
        return default


@dataclass
class OutputTensor:
    """One response output: a numpy array (an object array of ``bytes``/``str`` for BYTES)."""

    name: str
    datatype: str
    data: np.ndarray


def _check_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return value


MAX_RANK = 8
"""Most dimensions an input shape may have."""
MAX_TENSOR_DIM = (1 << 63) - 1
"""Largest dimension of a request tensor's shape (KServe shapes are int64)."""
JSON_BASE_TOKENS = 1024
"""Structural characters (``,`` ``:`` ``[`` ``{``) a JSON header may hold besides ``JSON_TOKENS_PER_ELEMENT``
per allowed element: enough for ids, parameters and a requested output per tensor of a large model."""
JSON_TOKENS_PER_ELEMENT = 4


ECHO_LIMIT = 80
"""Most characters of a client-given value (a name, a shape, a parameter) that an error message repeats."""


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters: how an error message repeats what a client sent."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shape(value: Any, name: str) -> tuple[list[int], int]:
    """The shape and its element count (exact: Python integers never overflow)."""
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_TENSOR_DIM for d in value):
        raise ProtocolError(f"input {echo(name)}: 'shape' must be a list of non-negative integers (below 2^63), got {echo(value)}")
    if len(value) > MAX_RANK:
        raise ProtocolError(f"input {echo(name)}: 'shape' has {len(value)} dimensions, at most {MAX_RANK} are allowed")
    count = 1
    for d in value:
        count *= d
    return value, count


def _json_tokens(data: bytes | memoryview) -> int:
    """Structural characters in ``data``: an upper bound on the JSON values it can hold, at C speed."""
    raw = bytes(data)
    return raw.count(b",") + raw.count(b":") + raw.count(b"[") + raw.count(b"{")


def _check_json_budget(tokens: int, max_elements: int) -> None:
    """413 when the JSON header holds more structure than a request of ``max_elements`` elements needs, so
    that ``json.loads`` (which holds the interpreter for its whole run) stays short whatever the body."""
    budget = JSON_BASE_TOKENS + JSON_TOKENS_PER_ELEMENT * max_elements
    if tokens > budget:
        raise ProtocolError(
            f"inference request header holds {tokens}+ JSON values, more than the {budget} this server parses for "
            f"a request of at most {max_elements} elements (send tensors in binary form)",
            kind="too_large",
        )


def _header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as a positive integer (None when absent)."""
    if value is None:
        return None
    try:
        json_len = int(value.strip())
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} header must be an integer, got {echo(value)}") from None
    if json_len <= 0:
        raise ProtocolError(f"{HEADER_LENGTH} must be positive, got {json_len}")
    return json_len


def _load_header(head: bytes | memoryview, max_elements: int | None) -> dict[str, Any]:
    """The JSON inference header as a dict, after the structure budget; with ``max_elements``, 413 as soon as
    the declared shapes (those that are lists of integers) make more elements than that."""
    if max_elements is not None:
        _check_json_budget(_json_tokens(head), max_elements)
    try:
        doc = json.loads(bytes(head))
    except RecursionError:
        raise ProtocolError("inference request header is not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer over Python's digit limit
        raise ProtocolError(f"inference request header is not valid JSON ({echo(str(exc), 200)})") from None
    if not isinstance(doc, dict):
        raise ProtocolError("inference request must be a JSON object")
    raw_inputs = doc.get("inputs")
    if max_elements is not None and isinstance(raw_inputs, list):
        total = 0
        for raw in raw_inputs:
            shape = raw.get("shape") if isinstance(raw, dict) else None
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_TENSOR_DIM for d in shape
            ):
                continue  # refused with its reason when the input is parsed
            count = 1
            for d in shape[: MAX_RANK + 1]:
                count = min(count * d, max_elements + 1)
            total += count
            if total > max_elements:
                raise ProtocolError(
                    f"input {echo(raw.get('name'))}: shape {echo(shape)} makes more than {max_elements} elements "
                    f"in the request; this server takes at most {max_elements} per request",
                    kind="too_large",
                )
    return doc


class BodyCollector:
    """An inference request body taken in as it arrives, refused as soon as the bytes received so far show
    it is over a limit: more than ``max_bytes`` (413), a JSON header with more values than ``max_elements``
    elements need (413, counted per chunk), or, once a binary request's JSON header is complete, shapes that
    make more than ``max_elements`` elements (413) - before the rest of the body is read."""

    def __init__(self, header_length: str | None, max_bytes: int, max_elements: int) -> None:
        self.json_len = _header_length(header_length)
        self.max_bytes = max_bytes
        self.max_elements = max_elements
        self.chunks: list[bytes] = []
        self.size = 0
        self.tokens = 0
        self.doc: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body."""
        start = self.size
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ProtocolError(f"request body exceeds the limit of {self.max_bytes} bytes", kind="too_large")
        self.chunks.append(chunk)
        json_end = self.size if self.json_len is None else self.json_len
        if start < json_end:
            self.tokens += _json_tokens(memoryview(chunk)[: json_end - start])
            _check_json_budget(self.tokens, self.max_elements)
        if self.doc is None and self.json_len is not None and self.size >= self.json_len:
            self.chunks = [b"".join(self.chunks)]
            self.doc = _load_header(memoryview(self.chunks[0])[: self.json_len], self.max_elements)

    def request(self) -> InferRequest:
        """The complete request, parsed (:func:`parse_infer_request`)."""
        body = b"".join(self.chunks)
        return _parse(body, self.json_len, self.max_elements, self.doc)


def _flatten(data: Any, count: int, name: str, shape: list[int]) -> list[Any]:
    """KServe allows row-major nested lists or a flat list; :class:`ProtocolError` unless it holds ``count`` values
    (stops at the first value too many)."""
    if not isinstance(data, list):
        data = [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if len(out) == count:
                raise ProtocolError(f"input {echo(name)}: more than {count} values for shape {shape}")
            out.append(item)
        else:
            stack.pop()
    if len(out) != count:
        raise ProtocolError(f"input {echo(name)}: {len(out)} values for shape {shape}")
    return out


def _json_bytes_elements(values: list[Any], name: str, encoding: str | None) -> list[bytes]:
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ProtocolError(f"input {echo(name)}: BYTES element {i} must be a JSON string, got {type(v).__name__}")
        if encoding == "base64":
            try:
                out.append(base64.b64decode(v, validate=True))
            except (binascii.Error, ValueError):
                raise ProtocolError(f"input {echo(name)}: BYTES element {i} is not valid base64") from None
        else:
            out.append(v.encode("utf-8", errors="surrogatepass"))
    return out


def _json_numeric(values: list[Any], name: str, datatype: str) -> np.ndarray:
    ok = (bool,) if datatype == "BOOL" else (int, float)
    if not all(isinstance(v, ok) and (datatype == "BOOL" or not isinstance(v, bool)) for v in values):
        raise ProtocolError(f"input {echo(name)}: data must be {datatype} numbers")
    try:
        return np.asarray(values, dtype=DATATYPES[datatype])
    except (OverflowError, ValueError) as exc:
        raise ProtocolError(f"input {echo(name)}: data does not fit {datatype} ({exc})") from None


def parse_infer_request(body: bytes, header_length: str | None, max_elements: int | None = None) -> InferRequest:
    """Parse an inference request body (JSON, or JSON + binary tensor data when ``header_length`` is set).

    ``max_elements`` bounds the elements of all inputs together (413 above) and the JSON header's size in
    values; None parses whatever comes (for trusted callers). :class:`BodyCollector` applies the same limits
    while the body arrives."""
    return _parse(body, _header_length(header_length), max_elements, None)


def _parse(body: bytes, header_length: int | None, max_elements: int | None, doc: dict[str, Any] | None) -> InferRequest:
    """:func:`parse_infer_request` with the header length parsed and, when given, the JSON header already loaded."""
    json_len = len(body) if header_length is None else header_length
    if json_len > len(body):
        raise ProtocolError(f"{HEADER_LENGTH} is {json_len} but the request body has {len(body)} bytes")
    if doc is None:
        doc = _load_header(memoryview(body)[:json_len], max_elements)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    parameters = _check_dict(doc.get("parameters"), "'parameters'")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list")

    binary = memoryview(body)[json_len:]
    pos = 0
    inputs: list[InputTensor] = []
    for k, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise ProtocolError(f"inputs[{k}] must be a JSON object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"inputs[{k}] needs a 'name' string")
        datatype = raw.get("datatype")
        if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in DATATYPES):
            raise ProtocolError(f"input {echo(name)}: unknown datatype {echo(datatype)}")
        shape, count = _shape(raw.get("shape"), name)
        params = _check_dict(raw.get("parameters"), f"input {echo(name)} 'parameters'")
        size = params.get(BINARY_DATA_SIZE)
        if size is not None:
            if "data" in raw:
                raise ProtocolError(f"input {echo(name)} has both 'data' and 'binary_data_size'")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input {echo(name)}: 'binary_data_size' must be a non-negative integer")
            if header_length is None:
                raise ProtocolError(f"input {echo(name)} uses 'binary_data_size' but the request has no {HEADER_LENGTH} header")
            if pos + size > len(binary):
                raise ProtocolError(f"input {echo(name)}: 'binary_data_size' {size} exceeds the {len(binary) - pos} bytes left in the body")
            chunk = binary[pos : pos + size]
            pos += size
            if datatype == "BYTES":
                try:
                    data: list[bytes] | np.ndarray = unpack_bytes(chunk, count, f"input {echo(name)}")
                except WireFormatError as exc:
                    raise ProtocolError(str(exc)) from None
            else:
                dtype = DATATYPES[datatype]
                if size != count * dtype.itemsize:
                    raise ProtocolError(f"input {echo(name)}: {size} bytes for shape {shape} of {datatype}")
                data = np.frombuffer(chunk, dtype=dtype).copy()
        else:
            if "data" not in raw:
                raise ProtocolError(f"input {echo(name)} has neither 'data' nor 'binary_data_size'")
            values = _flatten(raw["data"], count, name, shape)
            if datatype == "BYTES":
                data = _json_bytes_elements(values, name, params.get("content_type"))
            else:
                data = _json_numeric(values, name, datatype)
        inputs.append(InputTensor(name, datatype, shape, params, data))
    if pos != len(binary):
        raise ProtocolError(f"request body has {len(binary) - pos} bytes that no input's 'binary_data_size' accounts for")

    outputs = None
    if "outputs" in doc:
        raw_outputs = doc["outputs"]
        if not isinstance(raw_outputs, list):
            raise ProtocolError("'outputs' must be a list")
        outputs = []
        for k, raw in enumerate(raw_outputs):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise ProtocolError(f"outputs[{k}] must be an object with a 'name' string")
            outputs.append(RequestedOutput(raw["name"], _check_dict(raw.get("parameters"), f"output {echo(raw['name'])} 'parameters'")))
    return InferRequest(request_id, inputs, outputs, parameters)


def _json_data(tensor: OutputTensor) -> list[Any]:
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()


def binary_data(tensor: OutputTensor) -> bytes:
    """``tensor``'s elements in the binary tensor data layout (``codec/WIRE.md``), for HTTP and gRPC answers."""
    if tensor.datatype == "BYTES":
        return pack_bytes([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in tensor.data.reshape(-1)])
    return np.ascontiguousarray(tensor.data, dtype=DATATYPES[tensor.datatype]).tobytes()


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: list[OutputTensor],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Serialise a response; returns ``(body, json_header_length)``, the length None for pure JSON."""
    specs = []
    chunks = []
    for tensor in outputs:
        spec: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.data.shape)}
        if request.binary_output(tensor.name):
            raw = binary_data(tensor)
            spec["parameters"] = {BINARY_DATA_SIZE: len(raw)}
            chunks.append(raw)
        else:
            spec["data"] = _json_data(tensor)
        specs.append(spec)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": specs}
    if request.id is not None:
        doc["id"] = request.id
    if parameters:
        doc["parameters"] = parameters
    head = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
