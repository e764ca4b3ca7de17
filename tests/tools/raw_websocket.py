"""A WebSocket client on a bare socket, for tests that must send what a well-behaved client would not
(partial frames, text frames, oversized messages) and read the server's frames as they are."""

from __future__ import annotations

import base64
import os
import socket
from urllib.parse import urlsplit


def open_raw_stream(url: str, token: str | None = None, timeout: float = 10.0) -> socket.socket:
    """A socket on which the WebSocket handshake to ``url`` (``http://host:port/path``) succeeded (101)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(
        f"GET {parts.path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"the server closed during the WebSocket handshake: {head!r}")
        head += byte
    if b" 101 " not in head.split(b"\r\n")[0]:
        status = head.split(b"\r\n")[0]
        raise ConnectionError(f"WebSocket handshake refused: {status!r}")
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The opcode and payload of the next (unmasked, server) frame; ConnectionError if the socket closes first."""

    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("connection closed")
            out += chunk
        return out

    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(exactly(8), "big")
    return b0 & 0x0F, exactly(n)
