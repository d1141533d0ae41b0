"""Network helpers shared by the test servers."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (loopback by default)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
