"""Atomic file writing: how the codec writes its table files and bitstreams, and how every other package
(lower ones import nothing above ``codec``) writes checkpoints, manifests, reports and metrics.

A file is written to a temporary name in its own directory, flushed to disk, given the permissions a
plain ``open()`` would give it, and moved over the destination with ``os.replace``: a reader sees the
old file or the new one, never a half-written one, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def directory_kept_on_success(path: str | os.PathLike) -> Iterator[Path]:
    """Create the directory ``path`` (and missing parents) for the ``with`` block; if the block raises,
    remove again every directory it created that is still empty, deepest first. Directories that
    existed before, and anything written into them, are never touched."""
    path = Path(path)
    created = []
    probe = path.absolute()
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()  # only an empty directory goes
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call ``write(tmp_path)`` (it creates the file's content at that path), then move it over ``path``.

    ``suffix`` is the temporary file's extension, for writers that pick a format from it (matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as indented JSON plus a final newline to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
