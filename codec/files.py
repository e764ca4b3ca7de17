"""Files every MANTiS package reads or writes (``codec`` is the one package all of them import): atomic
writes, and the bearer token that the edge runtime and the server share.

A file is written to a temporary name in its own directory, flushed to disk, given the permissions a
plain ``open()`` would give it, and moved over the destination with ``os.replace``: a reader sees the
old file or the new one, never a half-written one, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

TOKEN_ENV = "MANTIS_SERVER_TOKEN"
"""Environment variable holding the bearer token when no token file is given (edge runtime and server)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
