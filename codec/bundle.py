"""Reading an exported artifact bundle (``manifest.json`` + model files + entropy tables).

A bundle directory is written by ``export/split.py`` and read by both runtimes. It holds ``manifest.json``
(format ``mantis-bundle/1``), ``tables.safetensors`` (the codec's entropy tables), the edge client
(``edge.pte``, ``edge.onnx`` or ``edge.mlpackage/``), the server half (``server.onnx``, ``server.pt2`` and,
where TensorRT exists, ``server.plan``). ``manifest["files"]`` maps every file's path, relative to the
bundle, to its SHA-256; a directory entry (``edge.mlpackage``) is hashed with :func:`tree_sha256`.

This module is pure Python + numpy (+ Pillow for :meth:`Bundle.preprocess`): a device reading a bundle
needs neither torch nor the training code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

BUNDLE_FORMAT = "mantis-bundle/1"
MANIFEST_NAME = "manifest.json"
TASK_MASK_RULE = "active = task_logit > 0; if none, argmax"
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


def task_mask_from_logits(task_logits: np.ndarray) -> int:
    """Bit ``t`` set when task ``t`` is active: every task whose logit is above 0, else the argmax."""
    logits = np.asarray(task_logits, dtype=np.float64).reshape(-1)
    if logits.size == 0 or logits.size > 32 or not np.all(np.isfinite(logits)):
        raise ValueError(f"task logits must be 1..32 finite values, got {logits.size} values: {logits!r}")
    active = np.flatnonzero(logits > 0)
    if active.size == 0:
        active = np.array([int(np.argmax(logits))])
    return int(sum(1 << int(t) for t in active))


class Bundle:
    """A verified bundle. Build it with :func:`load_bundle`."""

    def __init__(self, root: Path, manifest: dict[str, Any], tables: Any) -> None:
        self.root = root
        self.manifest = manifest
        self.tables = tables

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.manifest["tasks"]]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.manifest["preprocessing"]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image's latent."""
        lat = self.manifest["latent"]
        return int(lat["channels"]), int(lat["height"]), int(lat["width"])

    @property
    def edge(self) -> dict[str, Any]:
        return self.manifest["edge"]

    @property
    def server(self) -> dict[str, Any]:
        return self.manifest["server"]

    def labels(self, task: str) -> list[str]:
        """Label names of ``task``; ``KeyError`` naming the known tasks otherwise."""
        for t in self.manifest["tasks"]:
            if t["name"] == task:
                return list(t["labels"])
        raise KeyError(f"unknown task {task!r}; bundle {self.root} has tasks {self.task_names}")

    def path(self, name: str) -> Path:
        """Absolute path of a file listed in the manifest."""
        if name not in self.manifest["files"]:
            raise BundleError(f"bundle {self.root}: {name!r} is not one of its files {sorted(self.manifest['files'])}")
        return self.root / name

    def task_mask(self, task_logits: np.ndarray) -> int:
        """Task mask for one image's detector logits, shape ``(T,)``, by the manifest's rule."""
        logits = np.asarray(task_logits).reshape(-1)
        if logits.size != len(self.task_names):
            raise ValueError(f"expected {len(self.task_names)} task logits, got {logits.size}")
        return task_mask_from_logits(logits)

    def preprocess(self, image: Any) -> np.ndarray:
        """PIL image -> float32 ``(1, 3, H, W)``: RGB, bilinear resize to the input size, /255, (x-mean)/std."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(f"preprocess expects a PIL image, got {type(image).__name__}")
        pre = self.preprocessing
        h, w = (int(v) for v in pre["input_size"])
        img = image.convert("RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        x = np.asarray(img, dtype=np.float32) / 255.0
        x = (x - np.asarray(pre["mean"], dtype=np.float32)) / np.asarray(pre["std"], dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


_REQUIRED = ("format", "bitstream_version", "preprocessing", "tasks", "latent", "tables", "edge", "server", "files")


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Parse and structurally check ``root/manifest.json`` (no hashing, no table loading)."""
    root = Path(root)
    mpath = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle {root}: no such directory")
    if not mpath.is_file():
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} is missing (not an exported bundle?)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} must hold a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle {root}: unknown format {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise BundleError(f"bundle {root}: {MANIFEST_NAME} lacks {missing}")
    if not isinstance(manifest["files"], dict) or not manifest["files"]:
        raise BundleError(f"bundle {root}: manifest 'files' must map file names to SHA-256 hashes")
    for name in manifest["files"]:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise BundleError(f"bundle {root}: file entry {name!r} points outside the bundle")
    return manifest


def verify_files(root: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check that every file the manifest lists exists and has the recorded hash."""
    root = Path(root)
    for name, digest in manifest["files"].items():
        p = root / name
        if not p.exists():
            raise BundleError(f"bundle {root}: file {name} is missing")
        actual = path_sha256(p)
        if actual != digest:
            raise BundleError(f"bundle {root}: file {name} is corrupted or was replaced (sha256 {actual}, manifest says {digest})")
    referenced = [manifest["tables"]["file"], manifest["edge"]["file"], manifest["server"]["onnx"]["file"]]
    for name in referenced:
        if name not in manifest["files"]:
            raise BundleError(f"bundle {root}: {name} is referenced but not listed (and hashed) in manifest 'files'")


def load_bundle(root: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read ``root/manifest.json``, verify every file's hash, and load the entropy tables.

    Raises :class:`BundleError` naming the file for a missing file, a hash mismatch, an unknown format,
    a bitstream version this codec does not read, or tables whose ``table_id`` differs from the manifest's.
    """
    import codec
    from codec.format import FORMAT_VERSION

    root = Path(root).resolve()
    manifest = read_manifest(root)
    if manifest["bitstream_version"] != FORMAT_VERSION:
        raise BundleError(
            f"bundle {root}: bitstream version {manifest['bitstream_version']!r}, this codec reads version {FORMAT_VERSION}"
        )
    if verify:
        verify_files(root, manifest)
    tables_file = root / manifest["tables"]["file"]
    try:
        tables = codec.EntropyTables.load(tables_file)
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {root}: cannot load entropy tables {tables_file.name} ({exc})") from None
    if tables.table_id.hex() != manifest["tables"].get("table_id"):
        raise BundleError(
            f"bundle {root}: {tables_file.name} has table_id {tables.table_id.hex()}, "
            f"manifest says {manifest['tables'].get('table_id')}"
        )
    if int(tables.num_channels) != int(manifest["latent"]["channels"]):
        raise BundleError(
            f"bundle {root}: {tables_file.name} has {tables.num_channels} channels, latent has {manifest['latent']['channels']}"
        )
    return Bundle(root, manifest, tables)
