"""The device install: the mantis-edge wheel, the torch-free .pte runtime (executorch-numpy-runtime) as the
default where it loads the program, its logged fallback, and its pinned compatibility with the exporter."""

from __future__ import annotations

import glob
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from codec.bundle import load_bundle
from export.edge_wheel import EXTRAS, build_wheel
from runtime_edge import models
from runtime_edge.client import EdgeRuntime
from runtime_edge.extras import EXTRAS as EDGE_EXTRAS
from runtime_edge.extras import NUMPY_RUNTIME_PIN, USES, install_command
from runtime_edge.models import NUMPY_RUNTIME_PROGRAMS, EdgeRuntimeError, ExecuTorchModel, NumpyRuntimeMissing, load_pte


def _python312() -> str | None:
    """A CPython 3.12+ interpreter that runs (the project's own is 3.11; executorch-numpy-runtime needs 3.12+)."""
    candidates = [shutil.which(f"python3.{m}") for m in (12, 13)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[23]*/bin/python3.1[23]")))
    for python in filter(None, candidates):
        if subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 12)"], capture_output=True).returncode == 0:
            return python
    return None


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Python 3.12+ venv with ``mantis-edge[pte]`` installed from the wheel: what a device installs."""
    python, uv = _python312(), shutil.which("uv")
    if python is None or uv is None:
        pytest.skip(f"needs a Python 3.12+ interpreter ({python}) and uv ({uv}) to build the device venv")
    root = tmp_path_factory.mktemp("edge_venv")
    wheel = build_wheel(root / "dist")
    venv = root / "venv"
    subprocess.run([uv, "venv", "-q", "-p", python, str(venv)], check=True, timeout=120)
    subprocess.run([uv, "pip", "install", "-q", "-p", str(venv / "bin" / "python"), f"{wheel}[pte]"], check=True, timeout=600)
    return venv


def test_wheel_holds_codec_and_runtime_edge_and_is_reproducible(tmp_path: Path) -> None:
    first, second = build_wheel(tmp_path / "a"), build_wheel(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith("/METADATA"))).decode()
        entry = zf.read(next(n for n in names if n.endswith("/entry_points.txt"))).decode()
    assert {
        "codec/__init__.py",
        "codec/wire.json",
        "codec/kserve_grpc.proto",
        "runtime_edge/run.py",
        "runtime_edge/models.py",
        "runtime_edge/transport/__init__.py",
        "runtime_edge/transport/base.py",
        "runtime_edge/transport/http.py",
        "runtime_edge/transport/grpc.py",
        "runtime_edge/transport/stream.py",
    } <= names
    assert {n.split("/")[0] for n in names if not n.endswith(".dist-info") and ".dist-info/" not in n} == {"codec", "runtime_edge"}
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert f'Requires-Dist: executorch-numpy-runtime=={NUMPY_RUNTIME_PIN}; extra == "pte"' in requires
    assert "Provides-Extra: onnx" in meta and not [r for r in requires if r.split()[1].startswith(("torch", "executorch=", "executorch>"))]
    assert "mantis-edge = runtime_edge.run:main" in entry
    assert EXTRAS is EDGE_EXTRAS and set(EXTRAS) == {"pte", "onnx", "grpc"}
    assert 'Requires-Dist: grpcio>=1.81.1; extra == "grpc"' in requires


def test_exporter_version_is_one_the_numpy_runtime_was_tested_with(executorch_bundle: Path) -> None:
    """Programs come from the project's executorch; a new one must be added to the tested list after this
    module's bit-identity test has run on it."""
    producer = load_bundle(executorch_bundle).manifest.producer["executorch"]
    assert producer == importlib.metadata.version("executorch")
    assert producer in NUMPY_RUNTIME_PROGRAMS, (
        f"programs from executorch {producer} are untested on executorch-numpy-runtime {NUMPY_RUNTIME_PIN}"
    )


def test_auto_falls_back_to_the_official_runtime_with_a_logged_warning(
    executorch_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "executorch_numpy_runtime", None)  # as in a Python 3.12 venv without the pte extra
    monkeypatch.setattr(models, "numpy_runtime_installable", lambda: True)
    path = executorch_bundle / "edge.pte"
    with caplog.at_level(logging.WARNING, logger="runtime_edge.models"):
        model = load_pte(path, "auto", "1.5.1")
    assert isinstance(model, ExecuTorchModel)
    assert "executorch-numpy-runtime is not installed" in caplog.text and "official ExecuTorch runtime instead" in caplog.text
    assert "pip install 'mantis-edge[pte]'" in caplog.text
    with pytest.raises(NumpyRuntimeMissing, match=r"pip install 'mantis-edge\[pte\]'"):
        load_pte(path, "numpy")
    with pytest.raises(EdgeRuntimeError, match=r"unknown \.pte runtime 'fast'"):
        load_pte(path, "fast")


def test_where_the_numpy_runtime_cannot_be_installed_the_official_one_runs_quietly(
    executorch_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On Python < 3.12 (the project's own environment) the official runtime is the only one: no warning, and no
    install command that cannot work on this Python."""
    monkeypatch.setitem(sys.modules, "executorch_numpy_runtime", None)
    monkeypatch.setattr(models, "numpy_runtime_installable", lambda: False)
    path = executorch_bundle / "edge.pte"
    with caplog.at_level(logging.INFO, logger="runtime_edge.models"):
        assert isinstance(load_pte(path, "auto", "1.5.1"), ExecuTorchModel)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "runs on the official ExecuTorch runtime" in caplog.text and "needs Python 3.12+" in caplog.text
    with pytest.raises(NumpyRuntimeMissing, match=r"needs Python 3\.12\+, this is .*a Python 3\.12\+ venv.*or use --pte-runtime official"):
        load_pte(path, "numpy")


def test_with_no_pte_runtime_installed_the_error_names_the_pte_extra(executorch_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a venv with mantis-edge[onnx] only: the torch-free extra, not the official runtime's torch install."""
    monkeypatch.setitem(sys.modules, "executorch_numpy_runtime", None)
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    monkeypatch.setattr(models, "numpy_runtime_installable", lambda: True)
    with pytest.raises(EdgeRuntimeError) as info:
        load_pte(executorch_bundle / "edge.pte", "auto", "1.5.1")
    assert "needs a .pte runtime and none is installed: pip install 'mantis-edge[pte]'" in str(info.value)
    assert "pip install executorch" not in str(info.value)


def _edge(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-P", *args], capture_output=True, text=True, timeout=300, cwd=venv)


def test_numpy_runtime_is_bit_identical_to_the_official_one_without_torch(
    edge_venv: Path,
    executorch_bundle: Path,
    images: list[Path],
    tmp_path: Path,  # noqa: F811
) -> None:
    out = tmp_path / "mtb"
    proc = _edge(edge_venv, "-m", "runtime_edge.run", "--artifacts", str(executorch_bundle), "--save", str(out), *map(str, images))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no fallback, no native log lines: the command prints its results only
    official = EdgeRuntime(executorch_bundle, pte_runtime="official")
    for path in images:
        assert (out / f"{path.stem}.mtb").read_bytes() == official.encode(path).bitstream
    probe = _edge(
        edge_venv,
        "-c",
        "import sys, json\nfrom runtime_edge.client import EdgeRuntime\n"
        f"e = EdgeRuntime({str(executorch_bundle)!r}, pte_runtime='numpy'); e.encode({str(images[0])!r})\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))",
    )
    assert probe.returncode == 0, probe.stderr
    mods = set(json.loads(probe.stdout.splitlines()[-1]))
    assert "executorch_numpy_runtime" in mods and not mods & {"torch", "executorch", "training", "export"}


def test_a_program_the_numpy_runtime_cannot_load_names_both_versions(edge_venv: Path, executorch_bundle: Path, tmp_path: Path) -> None:
    data = bytearray((executorch_bundle / "edge.pte").read_bytes())
    assert data[4:8] == b"ET12"  # the flatbuffer file identifier: the program format version
    data[4:8] = b"ET99"
    bad = tmp_path / "edge.pte"
    bad.write_bytes(bytes(data))
    proc = _edge(
        edge_venv,
        "-c",
        "from pathlib import Path\nfrom runtime_edge.models import load_pte, EdgeRuntimeError\n"
        f"try:\n    load_pte(Path({str(bad)!r}), 'numpy', '9.9.9')\nexcept EdgeRuntimeError as e:\n    print(e)\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"executorch-numpy-runtime {NUMPY_RUNTIME_PIN} (ExecuTorch 1.3.1) cannot load {bad}" in proc.stdout
    assert "a program from executorch 9.9.9" in proc.stdout and "tested: executorch-numpy-runtime" in proc.stdout


def test_device_errors_name_the_program_and_the_extra(edge_venv: Path, executorch_bundle: Path, images: list[Path], tmp_path: Path) -> None:  # noqa: F811
    """The installed ``mantis-edge`` command without the grpc extra: a grpc:// server is an error line naming the
    install command (not a traceback), every message is prefixed by the command's name, and ``--help`` lists the extras."""
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    proc = _edge(
        edge_venv,
        str(edge_venv / "bin" / "mantis-edge"),
        "--artifacts",
        str(executorch_bundle),
        "--server",
        "grpc://127.0.0.1:1",
        str(images[0]),
        str(bad),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("mantis-edge: ") for line in lines), proc.stderr
    assert f"{bad}: not a readable image" in proc.stderr and "pip install 'mantis-edge[grpc]'" in proc.stderr
    help_text = _edge(edge_venv, str(edge_venv / "bin" / "mantis-edge"), "--help").stdout
    assert all(install_command(extra) in help_text for extra in EXTRAS)


@pytest.mark.slow
def test_the_project_environment_runs_a_pte_bundle_quietly(executorch_bundle: Path, images: list[Path], tmp_path: Path) -> None:  # noqa: F811
    """In the project's environment (Python 3.11: the official runtime, which imports the exporter) the command prints its
    results only: no fallback warning, no install command that cannot work here, no exporter notice."""
    if models.numpy_runtime_installable():
        pytest.skip("this Python could have the torch-free runtime: the fallback to the official one is then a warning")
    proc = subprocess.run(
        [sys.executable, "-m", "runtime_edge.run", "--artifacts", str(executorch_bundle), "--save", str(tmp_path / "out"), str(images[0])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "1 image," in proc.stdout


def test_every_extra_says_what_it_is_for() -> None:
    assert set(USES) == set(EDGE_EXTRAS) and all(USES.values())
