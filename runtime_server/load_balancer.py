"""HAProxy in front of two replicas, with ``runtime_server/deploy/haproxy.cfg``, as a child process.

    with LoadBalancer([(http1, grpc1), (http2, grpc2)], log_path) as lb:
        ... lb.url (http://127.0.0.1:P), lb.grpc_url (grpc://127.0.0.1:Q) ...

The configuration file is the one a deployment uses; this module only fills its addresses (environment
variables) and runs ``haproxy`` in the foreground. Ready when both replicas pass their health checks
(HAProxy's stats socket says ``UP``). ``haproxy`` is Debian's package (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from runtime_server.process import LOOPBACK, ServerStartError, free_port

DEPLOY = Path(__file__).resolve().with_name("deploy")
CONFIG = DEPLOY / "haproxy.cfg"
REPLICAS = 2
"""Replicas the configuration names (``MANTIS_REPLICA1_*``, ``MANTIS_REPLICA2_*``)."""


def haproxy_binary() -> str | None:
    """Path of ``haproxy``, or None when it is not installed (``/usr/sbin`` is searched too)."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def _hostport(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


class LoadBalancer:
    """haproxy with :data:`CONFIG` in front of ``replicas``: ``(http_url, grpc_url)`` pairs."""

    def __init__(self, replicas: list[tuple[str, str]], log_path: str | os.PathLike, ready_timeout: float = 30.0) -> None:
        if len(replicas) != REPLICAS:
            raise ValueError(f"{CONFIG.name} names {REPLICAS} replicas, got {len(replicas)}")
        self.replicas = replicas
        self.log_path = Path(log_path)
        self.ready_timeout = ready_timeout
        self.http_port = free_port()
        self.grpc_port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="mantis-haproxy-")
        self.stats_socket = Path(self._dir.name) / "stats.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{LOOPBACK}:{self.grpc_port}"

    def environment(self) -> dict[str, str]:
        env = {
            "MANTIS_LB_HTTP": f"{LOOPBACK}:{self.http_port}",
            "MANTIS_LB_GRPC": f"{LOOPBACK}:{self.grpc_port}",
            "MANTIS_LB_ERRORS": str(DEPLOY),
        }
        for i, (http, grpc) in enumerate(self.replicas, 1):
            env[f"MANTIS_REPLICA{i}_HTTP"] = _hostport(http)
            env[f"MANTIS_REPLICA{i}_GRPC"] = _hostport(grpc)
        return env

    def _stats(self) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(self.stats_socket))
            s.sendall(b"show stat\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def server_states(self) -> dict[str, str]:
        """``{"backend/server": status}`` from HAProxy's stats (``UP``, ``DOWN``, ...)."""
        states = {}
        for line in self._stats().splitlines():
            cols = line.split(",")
            if len(cols) > 17 and not line.startswith("#") and cols[1] not in ("FRONTEND", "BACKEND"):
                states[f"{cols[0]}/{cols[1]}"] = cols[17]
        return states

    def start(self) -> "LoadBalancer":
        """Start haproxy and wait until every replica is ``UP``; ``ServerStartError`` otherwise."""
        binary = haproxy_binary()
        if binary is None:
            raise ServerStartError("haproxy is not installed (Debian package haproxy; .ci/run installs it)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stats = Path(self._dir.name) / "stats.cfg"
        stats.write_text(f'global\n    stats socket "{self.stats_socket}" mode 600 level admin\n')
        env = {**os.environ, **self.environment()}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(CONFIG), "-f", str(stats)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.wait_all_up()
        return self

    def wait_all_up(self) -> None:
        """Block until HAProxy's health checks have every replica ``UP``; ``ServerStartError`` otherwise."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc is not None else None
                self.proc = None
                raise ServerStartError(
                    f"haproxy exited with status {code}; log {self.log_path}:\n{self.log_path.read_text(errors='replace')[-3000:]}"
                )
            try:
                states = self.server_states()
            except OSError:
                states = {}
            if len(states) == 2 * REPLICAS and all(s == "UP" for s in states.values()):
                return
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"haproxy's replicas not all UP after {self.ready_timeout:g} s; log {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        self._dir.cleanup()

    def __enter__(self) -> "LoadBalancer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
