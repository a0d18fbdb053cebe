"""Loopback networking for the tests and the benchmarks."""

from __future__ import annotations

import csv
import socket
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (racy, but whoever needs it binds it
    at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def haproxy_show_stat(socket_path: Path) -> list[dict[str, str]]:
    """`show stat` on an HAProxy stats socket, one dict per proxy or server line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).decode().removeprefix("# ")
    return list(csv.DictReader(line for line in text.splitlines() if line))
