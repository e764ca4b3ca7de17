"""codec.files: the atomic writes every package uses for checkpoints, bundles, reports and bitstreams."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from codec.files import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text, directory_kept_on_success
from codec.wire import TOKEN_ENV, read_token


def test_replaces_the_file_with_plain_permissions(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_text(path, "new \u00e9")
    assert path.read_text(encoding="utf-8") == "new \u00e9"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]


def test_json_reports_are_indented_and_end_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    atomic_write_json(path, {"b": [1, 2], "a": "\u00e9"})
    assert path.read_text(encoding="utf-8") == '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "\\u00e9"\n}\n'
    atomic_write_json(path, {"x": 1}, indent=1)
    assert path.read_text(encoding="utf-8") == '{\n "x": 1\n}\n'


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.png"
    atomic_write_bytes(path, b"old")

    def half_then_fail(tmp: str) -> None:
        assert tmp.endswith(".png")
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail, suffix=".png")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]


def test_read_token_from_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token the edge runtime sends and the server expects, read one way on both sides."""
    monkeypatch.setenv(TOKEN_ENV, "  from-env \n")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    assert read_token(token_file) == "s3cret"
    assert read_token(None) == "from-env"
    monkeypatch.delenv(TOKEN_ENV)
    assert read_token(None) is None
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(ValueError, match="token file .*empty.* is empty"):
        read_token(empty)
    with pytest.raises(ValueError, match="cannot read token file .*missing"):
        read_token(tmp_path / "missing")


def test_directory_kept_on_success_removes_only_what_a_failed_block_created(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(RuntimeError):
        with directory_kept_on_success(mine / "a" / "b" / "out") as out:
            assert out.is_dir()
            raise RuntimeError("failed run")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    with pytest.raises(RuntimeError):
        with directory_kept_on_success(mine / "c" / "out") as out:
            (out.parent / "written.txt").write_text("a result the run kept")
            raise RuntimeError("failed later")
    assert (mine / "c" / "written.txt").is_file() and not (mine / "c" / "out").exists()
    with directory_kept_on_success(mine / "d") as out:
        pass
    assert out.is_dir()
