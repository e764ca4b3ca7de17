"""What the Python-backend models of a MANTiS Triton repository share (copied into every model version
with the rest of the project code they import; ``export/triton_repository.py`` writes the repository).

Each model version directory holds ``model.py``, ``bundle/`` (the bundle's manifest and the files that
model needs, checked against the manifest's hashes) and copies of ``codec/`` and the server's answer
logic. The models refuse a request with the wire contract's message; Triton has fewer status codes
than the contract has kinds, so :func:`triton_code` maps every client error to ``INVALID_ARG`` (HTTP 400,
gRPC ``INVALID_ARGUMENT``) and puts the kind in front of the message (``table_mismatch: bitstream[0]: ...``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from codec.bundle import Bundle, BundleError, file_sha256, read_manifest
from codec.tables import EntropyTables
from codec.wire import ProtocolError

BUNDLE_DIR = "bundle"
"""The folder of a model version that holds the bundle's files."""
SERVER_OUTPUT_PREFIX = "server_"
"""The answer model's inputs are the server half's outputs under this prefix: an ensemble output that is
also another step's input deadlocks Triton 2.51's ensemble scheduler when a client asks for a subset of the
outputs, so the answer step hands the logits on as its own outputs."""
LATENT = "latent"
"""The decode step's latent output, the server half's input (``codec.manifest.SERVER_INPUT``)."""
TASK_MASK = "task_mask"
"""The decode step's int64 task masks, the answer step's input."""
COMPUTE_THREADS = "compute_threads"
"""The Python server half's configuration parameter: ONNX Runtime intra-op threads per instance (0: its default)."""
MAX_REQUEST_IMAGES = "max_request_images"
"""The decode model's configuration parameter: bitstreams per request at most (the server half's max batch size)."""


def load_version_bundle(version_dir: str | Path, server_files: Sequence[str] = ()) -> Bundle:
    """The bundle copied into ``version_dir/bundle``: its manifest, the entropy tables and the files of the
    manifest's ``server`` entries named in ``server_files`` (e.g. ``onnx``), each checked against the
    manifest's hash; :class:`BundleError` naming what is wrong."""
    root = Path(version_dir) / BUNDLE_DIR
    manifest = read_manifest(root)
    missing = [k for k in server_files if k not in manifest.server]
    if missing:
        raise BundleError(f"bundle {root}: manifest has no server entries {missing}")
    for name in dict.fromkeys([manifest.tables["file"], *(manifest.server[k].file for k in server_files)]):
        if name not in manifest.files:
            raise BundleError(f"bundle {root}: {name!r} is not one of its files {sorted(manifest.files)}")
        path = root / name
        if not path.is_file():
            raise BundleError(f"bundle {root}: file {name} is missing")
        if file_sha256(path) != manifest.files[name]:
            raise BundleError(f"bundle {root}: file {name} is corrupted or was replaced (its sha256 differs from the manifest's)")
    tables = EntropyTables.load(root / manifest.tables["file"])
    if tables.table_id.hex() != manifest.tables["table_id"]:
        raise BundleError(
            f"bundle {root}: {manifest.tables['file']} has table_id {tables.table_id.hex()}, manifest says {manifest.tables['table_id']}"
        )
    return Bundle(root.resolve(), manifest, tables)


def model_parameter(model_config: dict[str, Any], key: str) -> str:
    """A ``parameters`` entry of a model's configuration; ``KeyError`` naming the key when it is missing."""
    try:
        return str(model_config["parameters"][key]["string_value"])
    except KeyError:
        raise KeyError(f"model {model_config.get('name')!r}: configuration parameter {key!r} is missing") from None


def request_parameters(request: Any) -> dict[str, Any]:
    """A Triton request's parameters (JSON in the Python backend) as a dict."""
    doc = json.loads(request.parameters() or "{}")
    if not isinstance(doc, dict):
        raise ProtocolError("request parameters must be an object")
    return doc


def triton_code(kind_http: int) -> str:
    """The Python backend's ``TritonError`` code name for a refusal with HTTP status ``kind_http``."""
    if kind_http < 500:
        return "INVALID_ARG"
    return "UNAVAILABLE" if kind_http == 503 else "INTERNAL"


def refusal_message(exc: ProtocolError) -> str:
    """The message of a refusal: its kind, then what the server would say."""
    return f"{exc.kind}: {exc}"
