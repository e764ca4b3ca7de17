"""Run ``runtime_server/serve.py`` as a child process on loopback for the length of a ``with`` block."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from runtime_edge.transport import KServeClient

REPO = Path(__file__).resolve().parents[1]
SERVE = REPO / "runtime_server" / "serve.py"


class ServerStartError(RuntimeError):
    """serve.py exited or did not become ready in time; the message carries the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ServerProcess:
    """``with ServerProcess(bundle_dir, log_path) as srv: srv.url`` starts serve.py, waits for
    ``/v2/health/ready``, and on exit stops it with SIGTERM (SIGKILL if it does not stop in time)."""

    def __init__(
        self,
        artifacts: str | os.PathLike,
        log_path: str | os.PathLike,
        backend: str = "onnxruntime",
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: list[str] | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        self.artifacts = Path(artifacts)
        self.log_path = Path(log_path)
        self.backend = backend
        self.host = host
        self.port = port or free_port(host)
        self.extra_args = list(extra_args or [])
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, str(SERVE), "--artifacts", str(self.artifacts), "--host", self.host,
            "--port", str(self.port), "--backend", self.backend, *self.extra_args,
        ]

    def start(self) -> "ServerProcess":
        """Start serve.py and block until it reports ready; ``ServerStartError`` otherwise."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + self.ready_timeout
        with KServeClient(self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerStartError(
                        f"serve.py exited with status {self.proc.returncode} before it was ready; log {self.log_path}:\n"
                        + _tail(self.log_path)
                    )
                if client.is_ready():
                    return self
                time.sleep(0.25)
        self.stop()
        raise ServerStartError(
            f"serve.py not ready after {self.ready_timeout:g} s; log {self.log_path}:\n" + _tail(self.log_path)
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        """Ask serve.py to shut down gracefully; kill it if it has not exited after ``timeout`` s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def server_side_ms(self) -> dict[str, float]:
        """Mean milliseconds per image that serve.py itself measured (its ``/metrics``): entropy decoding,
        time in the batching queue, the server half on the backend, and the whole request inside the server."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10.0) as resp:
            text = resp.read().decode("utf-8")
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count", "_total")):
                    sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
        images = sums.get("mantis_infer_images_total", 0.0)
        if not images:
            raise ServerStartError(f"serve.py at {self.url} has answered no images yet; nothing to report")
        return {
            "decode": 1000.0 * sums["mantis_decode_seconds_sum"] / images,
            "queue": 1000.0 * sums["mantis_queue_seconds_sum"] / images,
            "server_half": 1000.0 * sums["mantis_compute_seconds_sum"] / images,
            "request": 1000.0 * sums["mantis_request_seconds_sum"] / images,
        }

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
