"""A bundle directory: its files and their hashes, reading ``manifest.json`` from it, and loading it whole.

A bundle directory holds ``manifest.json`` (the schema of :mod:`codec.manifest`, ``codec/MANIFEST.md``),
``tables.safetensors`` (the codec's entropy tables), the edge client (``edge.pte``, ``edge.onnx`` or
``edge.mlpackage/``) and the server half (``server.onnx``, ``server.pt2`` and, where TensorRT exists,
``server.plan``). :func:`load_bundle` reads the manifest, checks every listed file against its SHA-256 and
loads the entropy tables; every failure is a :class:`BundleError` naming the bundle and the file. Pure
Python + numpy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codec.format import FORMAT_VERSION
from codec.manifest import MANIFEST_NAME, Manifest, ManifestError, task_mask_from_logits
from codec.tables import EntropyTables

TABLES_FILE = "tables.safetensors"
"""The entropy tables' file name in a bundle directory."""
_CHUNK = 1 << 20


class BundleError(ValueError):
    """A bundle is missing, incomplete, corrupted, or was written in a format this code does not read."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of one file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 over a directory: for every file (sorted by relative POSIX path), its path, a NUL byte,
    and the raw SHA-256 of its contents. Empty directories do not contribute."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix()):
        h.update(f.relative_to(root).as_posix().encode("utf-8") + b"\0")
        h.update(bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def path_sha256(path: str | os.PathLike) -> str:
    """:func:`file_sha256` for a file, :func:`tree_sha256` for a directory."""
    return tree_sha256(path) if Path(path).is_dir() else file_sha256(path)


def read_manifest(root: str | os.PathLike) -> Manifest:
    """Parse and check ``root/manifest.json`` (no hashing, no table loading); :class:`BundleError`."""
    root = Path(root)
    mpath = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle {root}: no such directory")
    if not mpath.is_file():
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} is missing (not an exported bundle?)")
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    try:
        return Manifest.from_dict(doc)
    except ManifestError as exc:
        raise BundleError(f"bundle {root}: {exc}") from None


def verify_files(root: str | os.PathLike, manifest: Manifest) -> None:
    """Check that every file the manifest lists exists and has the recorded hash."""
    root = Path(root)
    if not manifest.files:
        raise BundleError(f"bundle {root}: manifest 'files' lists no files")
    for name, digest in manifest.files.items():
        p = root / name
        if not p.exists():
            raise BundleError(f"bundle {root}: file {name} is missing")
        actual = path_sha256(p)
        if actual != digest:
            raise BundleError(f"bundle {root}: file {name} is corrupted or was replaced (sha256 {actual}, manifest says {digest})")


@dataclass
class Bundle:
    """A verified bundle: its directory, manifest and entropy tables. Build it with :func:`load_bundle`."""

    root: Path
    manifest: Manifest
    tables: EntropyTables

    @property
    def task_names(self) -> list[str]:
        return self.manifest.task_names

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image's latent."""
        return self.manifest.latent

    def labels(self, task: str) -> list[str]:
        return self.manifest.labels(task)

    def path(self, name: str) -> Path:
        """Absolute path of a file listed in the manifest."""
        if name not in self.manifest.files:
            raise BundleError(f"bundle {self.root}: {name!r} is not one of its files {sorted(self.manifest.files)}")
        return self.root / name

    @property
    def edge_tasks(self) -> int:
        return self.manifest.edge_tasks

    def task_mask(self, task_logits: np.ndarray) -> int:
        """Task mask for one image's detector logits, shape ``(edge_tasks,)``, by the manifest's rule."""
        logits = np.asarray(task_logits).reshape(-1)
        if logits.size != self.edge_tasks:
            raise ValueError(f"expected {self.edge_tasks} task logits, got {logits.size}")
        return task_mask_from_logits(logits)


def load_bundle(root: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read ``root/manifest.json``, verify every file's hash, and load the entropy tables.

    Raises :class:`BundleError` naming the file for a missing file, a hash mismatch, an unknown format or
    value, a bitstream version this codec does not read, or tables whose ``table_id`` differs from the
    manifest's.
    """
    root = Path(root).resolve()
    manifest = read_manifest(root)
    if manifest.bitstream_version != FORMAT_VERSION:
        raise BundleError(f"bundle {root}: bitstream version {manifest.bitstream_version!r}, this codec reads version {FORMAT_VERSION}")
    if verify:
        verify_files(root, manifest)
    tables_file = root / manifest.tables["file"]
    try:
        tables = EntropyTables.load(tables_file)
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {root}: cannot load entropy tables {tables_file.name} ({exc})") from None
    if tables.table_id.hex() != manifest.tables["table_id"]:
        raise BundleError(
            f"bundle {root}: {tables_file.name} has table_id {tables.table_id.hex()}, manifest says {manifest.tables['table_id']}"
        )
    if int(tables.num_channels) != manifest.latent[0]:
        raise BundleError(f"bundle {root}: {tables_file.name} has {tables.num_channels} channels, latent has {manifest.latent[0]}")
    return Bundle(root, manifest, tables)
