"""Writing a bundle directory atomically.

Everything is built in a staging directory beside the destination (``.<name>.<random>.tmp`` in the same
parent, so the final move is a rename on one file system). Only when every half has been checked is the
manifest written and the staging directory renamed to the destination. A failure at any point removes the
staging directory, so a failed export leaves nothing behind and never touches an existing bundle.

An existing destination is replaced only when it is empty, or when it holds a bundle exported from the same
checkpoint for the same target (re-running an export), or with ``force=True`` when it holds any other bundle.
A non-empty directory that is not a bundle is never replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from codec.files import atomic_write_json, directory_kept_on_success
from codec.bundle import BundleError, path_sha256, read_manifest
from codec.manifest import MANIFEST_NAME, Manifest, ManifestError
from export.errors import ExportError


def check_destination(out: Path, source_sha256: str, target: str, force: bool) -> None:
    """Refuse to write over ``out`` unless it is absent, empty, or a bundle that may be replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"output directory {out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    try:
        manifest = read_manifest(out)
    except BundleError as exc:
        raise ExportError(
            f"output directory {out} is not empty and is not a bundle ({exc}); refusing to replace it, choose another --out"
        ) from None
    old_sha = manifest.source_checkpoint["sha256"]
    old_target = manifest.edge.target
    if (old_sha, old_target) == (source_sha256, target) or force:
        return
    raise ExportError(
        f"output directory {out} holds a different bundle (checkpoint {manifest.source_checkpoint['path']!r}, "
        f"target {old_target!r}); choose another --out, or pass --force to replace it"
    )


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh directory beside ``out``; removed on any exception, together with the parent directories
    of ``out`` that it created."""
    with directory_kept_on_success(out.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every top-level entry of ``root`` except the manifest (directories hashed as trees)."""
    return {p.name: path_sha256(p) for p in sorted(root.iterdir()) if p.name != MANIFEST_NAME}


def finalize(staging: Path, out: Path, manifest: Manifest) -> Manifest:
    """Hash the staged files into the manifest's ``files``, check and write the manifest, and move the
    bundle to ``out``; returns the manifest as written.

    An existing ``out`` (already cleared by :func:`check_destination`) is first renamed aside and removed
    only after the new bundle is in place; if the final rename fails it is put back.
    """
    manifest = dataclasses.replace(manifest, files=file_hashes(staging))
    try:
        manifest.validate()
    except ManifestError as exc:
        raise ExportError(f"the bundle's manifest is inconsistent: {exc}") from None
    atomic_write_json(staging / MANIFEST_NAME, manifest.to_dict())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    os.chmod(staging / MANIFEST_NAME, 0o666 & ~umask)
    if not out.exists():
        os.rename(staging, out)
        return manifest
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rmdir(aside)
    os.rename(out, aside)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return manifest
