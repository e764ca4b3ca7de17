"""Install Triton Inference Server and the Python environment its Python-backend models run in.

    uv run python -m runtime_server.triton_serving.install [--dest runs/triton]

Triton Inference Server 2.51 comes from PyPI's ``nvidia-pytriton`` wheel, which carries the
``tritonserver`` binary, its libraries, the Python backend and one backend stub per Python version (it has
no ONNX Runtime or TensorRT backend). Under ``DEST``:

- ``server/``: the wheel's files (``pytriton/tritonserver/bin/tritonserver``, ``nvidia_pytriton.libs/``);
- ``backends/python/``: the Python backend with the stub for this Python (``--backend-directory``);
- ``env/``: a virtual environment of this Python with what the models import besides the repository's own
  copy of the project's code: numpy < 2 (numpy 2 crashes the 2.51 stub on BYTES inputs), ONNX Runtime and
  CompressAI's C++ rANS coder (``--no-deps``: the coder loads without torch, as ``codec.rans`` loads it);
- ``installed.json``: the versions, written last, so a broken install is redone on the next call.

The Python must be a shared-library build (pyenv's, Debian's): the stub links ``libpython3.X.so``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from codec.files import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO / "runs" / "triton"
PYTRITON = "nvidia-pytriton==0.7.0"
TRITON_VERSION = "2.51.0"
ENV_PACKAGES = ("numpy==1.26.4", "onnxruntime==1.31.1")
ENV_NO_DEPS = ("compressai==1.2.8",)
STAMP = "installed.json"


class TritonInstallError(RuntimeError):
    """Triton or its model environment could not be installed; the message says which step failed."""


@dataclass(frozen=True)
class TritonInstall:
    """Where an installed Triton lives and what starting it needs."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "server" / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backend_directory(self) -> Path:
        return self.root / "backends"

    @property
    def execution_env(self) -> Path:
        """The Python environment named by the models' ``EXECUTION_ENV_PATH``."""
        return self.root / "env"

    def library_path(self) -> str:
        """``LD_LIBRARY_PATH`` for ``tritonserver``: the wheel's libraries and this Python's ``libpython``
        (without the latter the stub may load another build of libpython against this Python's stdlib)."""
        return f"{self.root / 'server' / 'nvidia_pytriton.libs'}:{sysconfig.get_config_var('LIBDIR')}"


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _run(cmd: list[str], step: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TritonInstallError(f"{step} failed ({' '.join(cmd)}):\n{(proc.stdout + proc.stderr)[-3000:]}")


def _uv() -> str:
    """The uv that runs this process (``uv run`` sets ``$UV``), else the one on PATH."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise TritonInstallError("uv is not on PATH and this process was not started by `uv run`; ./mantis installs uv (pip install uv)")
    return uv


def installed(dest: Path = DEFAULT_DEST) -> TritonInstall | None:
    """The install under ``dest`` when it is complete and matches this code's versions, else None."""
    stamp = dest / STAMP
    try:
        doc = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    want = {"pytriton": PYTRITON, "python": _python_tag(), "env": list(ENV_PACKAGES + ENV_NO_DEPS)}
    install = TritonInstall(dest)
    if doc != want or not install.binary.is_file():
        return None
    return install


def install(dest: Path = DEFAULT_DEST) -> TritonInstall:
    """Install (or find already installed) Triton and its model environment under ``dest``."""
    dest = Path(dest).resolve()
    found = installed(dest)
    if found is not None:
        return found
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise TritonInstallError(
            f"{sys.executable} is not a shared-library Python build; Triton's Python backend stub needs libpython{_python_tag()}.so"
        )
    (dest / STAMP).unlink(missing_ok=True)
    uv = _uv()
    server = dest / "server"
    shutil.rmtree(server, ignore_errors=True)
    _run([uv, "pip", "install", "--quiet", "--no-config", "--no-deps", "--target", str(server), PYTRITON], f"installing {PYTRITON}")
    triton = server / "pytriton" / "tritonserver"
    stub = triton / "python_backend_stubs" / _python_tag() / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonInstallError(f"{PYTRITON} has no Python backend stub for Python {_python_tag()} ({stub} is missing)")
    backend = dest / "backends" / "python"
    shutil.rmtree(backend, ignore_errors=True)
    shutil.copytree(triton / "backends" / "python", backend)
    shutil.copy2(stub, backend / "triton_python_backend_stub")
    env = dest / "env"
    shutil.rmtree(env, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)], "creating the model environment")
    python = str(env / "bin" / "python")
    _run([uv, "pip", "install", "--quiet", "--no-config", "--python", python, *ENV_PACKAGES], f"installing {ENV_PACKAGES} into {env}")
    _run(
        [uv, "pip", "install", "--quiet", "--no-config", "--no-deps", "--python", python, *ENV_NO_DEPS],
        f"installing {ENV_NO_DEPS} into {env}",
    )
    atomic_write_json(dest / STAMP, {"pytriton": PYTRITON, "python": _python_tag(), "env": list(ENV_PACKAGES + ENV_NO_DEPS)})
    return TritonInstall(dest)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="install Triton Inference Server (nvidia-pytriton wheel) and its model environment")
    p.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"install directory (default {DEFAULT_DEST.relative_to(REPO)})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        found = install(args.dest)
    except TritonInstallError as exc:
        print(f"install: {exc}", file=sys.stderr)
        return 1
    print(f"Triton {TRITON_VERSION}: {found.binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
