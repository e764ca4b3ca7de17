"""``serve.py`` as a child process on loopback, for the demo, the throughput benchmark and the tests.

    with ServerProcess(bundle_dir, log_path, ["--backend", "torch"]) as srv:
        ... srv.url ...
        times = scrape_metrics(srv.url)

Readiness is ``GET /v2/health/ready``; stopping is SIGTERM (serve.py finishes in-flight requests), then
SIGKILL if it has not exited in time. Only the standard library and prometheus-client are needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

SERVE = Path(__file__).resolve().with_name("serve.py")
LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """A serve.py child process failed to start or to report what it measured."""


class ServerStartError(ServerError):
    """serve.py exited or did not become ready in time; the message carries the end of its log."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def scrape_metrics(url: str) -> dict[str, float]:
    """Every counter and histogram total of the server's ``/metrics`` (``*_total``, ``*_sum``, ``*_count``),
    summed over labels: e.g. ``mantis_batch_size_count`` (batches) or ``mantis_decode_seconds_sum``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10.0) as resp:
        text = resp.read().decode("utf-8")
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count", "_total")):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


class ServerProcess:
    """serve.py for the length of a ``with`` block. ``args`` are further serve.py options (backend,
    batching, ...); its output goes to ``log_path``."""

    def __init__(
        self,
        artifacts: str | os.PathLike,
        log_path: str | os.PathLike,
        args: list[str] | None = None,
        host: str = LOOPBACK,
        port: int | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        self.artifacts = Path(artifacts)
        self.log_path = Path(log_path)
        self.args = list(args or [])
        self.host = host
        self.port = port or free_port(host)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, str(SERVE), "--artifacts", str(self.artifacts), "--host", self.host, "--port", str(self.port), *self.args]

    def start(self) -> "ServerProcess":
        """Start serve.py and block until it reports ready; ``ServerStartError`` otherwise."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"serve.py exited with status {self.proc.returncode} before it was ready; log {self.log_path}:\n" + _tail(self.log_path)
                )
            if _is_ready(self.url):
                return self
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(f"serve.py not ready after {self.ready_timeout:g} s; log {self.log_path}:\n" + _tail(self.log_path))

    def stop(self, timeout: float = 30.0) -> int | None:
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
        """Mean milliseconds per image that serve.py itself measured: entropy decoding, time in the batching
        queue, the server half on the backend, and the whole request inside the server."""
        totals = scrape_metrics(self.url)
        images = totals.get("mantis_infer_images_total", 0.0)
        if not images:
            raise ServerError(f"serve.py at {self.url} has answered no images yet; nothing to report")
        return {
            "decode": 1000.0 * totals["mantis_decode_seconds_sum"] / images,
            "queue": 1000.0 * totals["mantis_queue_seconds_sum"] / images,
            "server_half": 1000.0 * totals["mantis_compute_seconds_sum"] / images,
            "request": 1000.0 * totals["mantis_request_seconds_sum"] / images,
        }

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
