"""Run a command on a pseudo-terminal, as a user at a terminal would see it."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Sequence

__all__ = ["on_a_terminal"]


def on_a_terminal(argv: Sequence[str], until: bytes, *, interrupt: bool = False,
                  timeout: float = 180.0) -> tuple[str, int]:
    """Run ``argv`` with a new pty as its stdin, stdout and stderr until it has printed
    ``until`` (fails if it exits first or ``timeout`` passes); then Ctrl-C it if
    ``interrupt``, and wait for it. Returns what it printed up to then, and its exit code."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(list(argv), stdin=follower, stdout=follower, stderr=follower,
                            close_fds=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while until not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
            if select.select([leader], [], [], 1.0)[0]:
                seen += os.read(leader, 65536)
    finally:
        if interrupt:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        os.close(leader)
    return seen.decode(errors="replace"), code
