"""``tritonserver`` as a child process on loopback, for the tests and the benchmarks.

    with TritonProcess(install, repository, log_path) as triton:
        ... triton.url (http://127.0.0.1:P), triton.grpc_url (grpc://127.0.0.1:Q) ...

Readiness is ``GET /v2/health/ready``; stopping is SIGTERM (Triton finishes in-flight requests), then
SIGKILL. Both ports bind 127.0.0.1 and the metrics port is off. The Python backend's processes and
shared-memory regions (``/dev/shm/triton_python_backend_shm_region_*``) are Triton's to remove on a normal
exit; after a SIGKILL or a crash, what is left of the process group is killed and the regions that appeared
while this server ran and that no process still maps are removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from runtime_server.process import LOOPBACK, ServerStartError, free_port
from runtime_server.triton_serving.install import TritonInstall

EXIT_TIMEOUT_S = 5
"""Seconds Triton waits on SIGTERM for in-flight requests (and open client connections) before it exits."""


SHM = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"


def _shm_regions() -> set[str]:
    try:
        return {p.name for p in SHM.iterdir() if p.name.startswith(SHM_PREFIX)}
    except OSError:
        return set()


def _mapped_regions() -> set[str]:
    """Names of the shared-memory regions some live process maps."""
    names = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue
        names |= {line.rsplit("/", 1)[-1].split()[0] for line in text.splitlines() if SHM_PREFIX in line}
    return names


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class TritonProcess:
    """tritonserver on ``repository`` for the length of a ``with`` block; its output goes to ``log_path``."""

    def __init__(
        self,
        install: TritonInstall,
        repository: str | os.PathLike,
        log_path: str | os.PathLike,
        ready_timeout: float = 120.0,
        args: list[str] | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
    ) -> None:
        self.install = install
        self.repository = Path(repository).resolve()
        self.log_path = Path(log_path)
        self.ready_timeout = ready_timeout
        self.args = list(args or [])
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.proc: subprocess.Popen | None = None
        self._regions_before: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{LOOPBACK}:{self.grpc_port}"

    def command(self) -> list[str]:
        return [
            str(self.install.binary),
            "--model-repository",
            str(self.repository),
            "--backend-directory",
            str(self.install.backend_directory),
            "--http-address",
            LOOPBACK,
            "--http-port",
            str(self.http_port),
            "--grpc-address",
            LOOPBACK,
            "--grpc-port",
            str(self.grpc_port),
            "--allow-metrics",
            "false",
            "--log-verbose",
            "0",
            "--exit-timeout-secs",
            str(EXIT_TIMEOUT_S),
            *self.args,
        ]

    def start(self) -> "TritonProcess":
        """Start tritonserver and block until every model is ready; ``ServerStartError`` otherwise."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LD_LIBRARY_PATH": self.install.library_path()}
        self._regions_before = _shm_regions()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._clean_up(self.proc.pid)
                self.proc = None
                raise ServerStartError(
                    f"tritonserver exited with status {code} before it was ready; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2.0) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(f"tritonserver not ready after {self.ready_timeout:g} s; log {self.log_path}:\n{_tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL to tritonserver and its Python backend processes (its process group), as a machine failure would."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._clean_up(self.proc.pid)
            self.proc = None

    def _clean_up(self, group: int) -> None:
        """After tritonserver has exited: SIGKILL what is left of its process group (Python backend stubs
        outlive a tritonserver that crashed) and remove the shared-memory regions nothing maps any more."""
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for name in _shm_regions() - self._regions_before - _mapped_regions():
            (SHM / name).unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL to the process group (the Python backend's stubs too) after ``timeout`` s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        code = self.proc.returncode
        if code != 0:
            self._clean_up(self.proc.pid)
        self.proc = None
        return code

    def __enter__(self) -> "TritonProcess":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
