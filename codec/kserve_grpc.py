"""KServe v2 gRPC messages and method paths, built from ``codec/kserve_grpc.proto`` at import.

The .proto is compiled here, when the module is first imported, by grpcio-tools' ``protoc`` into a
descriptor set, and the message classes come from a private descriptor pool: nothing generated is checked
in (so it cannot drift from the .proto), and Triton's own ``inference.*`` messages (tritonclient) can live
in the same process without clashing in protobuf's default pool. The service's method paths are read
from the same descriptors. Both the edge client and serve.py import this module.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from codec.wire import GRPC_PROTO, GRPC_SERVICE


class ProtoError(RuntimeError):
    """The .proto could not be compiled."""


def compile_proto(proto: Path = GRPC_PROTO) -> descriptor_pb2.FileDescriptorSet:
    """``proto`` compiled by grpcio-tools' protoc into a descriptor set."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="mantis-proto-") as tmp:
        out = Path(tmp) / "descriptors.pb"
        code = protoc.main(["protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}", str(proto)])
        if code != 0 or not out.is_file():
            raise ProtoError(f"protoc could not compile {proto} (exit status {code})")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


POOL = descriptor_pool.DescriptorPool()
for _file in compile_proto().file:
    POOL.Add(_file)
_PACKAGE = GRPC_SERVICE.rpartition(".")[0]


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
InferParameter = _message("InferParameter")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
ModelStreamInferResponse = _message("ModelStreamInferResponse")


@dataclass(frozen=True)
class Method:
    """One RPC of the service: its path on the wire and its message classes."""

    name: str
    path: str
    request: Any
    response: Any
    client_streaming: bool
    server_streaming: bool


METHODS: dict[str, Method] = {
    m.name: Method(
        m.name,
        f"/{GRPC_SERVICE}/{m.name}",
        message_factory.GetMessageClass(m.input_type),
        message_factory.GetMessageClass(m.output_type),
        m.client_streaming,
        m.server_streaming,
    )
    for m in POOL.FindServiceByName(GRPC_SERVICE).methods
}


def parameter_value(p: Any) -> bool | int | float | str | None:
    """The Python value of an ``InferParameter`` (None when none of its fields is set)."""
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def set_parameter(p: Any, value: bool | int | float | str) -> None:
    """Set an ``InferParameter`` from a Python value (bool before int: a bool is an int in Python)."""
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    elif isinstance(value, str):
        p.string_param = value
    else:
        raise TypeError(f"parameter values are bool, int, float or str, got {type(value).__name__}")
