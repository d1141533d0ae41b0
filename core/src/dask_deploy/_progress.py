"""Live progress while a user waits for workers (``wait_for_workers``, ``dask-deploy up``).

On a terminal (stderr is a TTY) a tqdm bar counts connected workers and shows why the
others wait (the backend's reasons, ``PENDING (Priority)``); elsewhere (a pipe, a log file,
a notebook, whose widget shows the same) no bar, as its redrawing would only fill logs with
carriage returns: the cluster logs one line per change of a unit's reason instead, and the
CLI prints one line per change. ``quiet=True`` shows nothing.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from ._status import StatusReport

__all__ = ["WaitProgress", "is_terminal", "waiting_line"]

#: The bar: how far, how many of how many, how long, and (postfix) why the rest wait.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} workers [{elapsed}]{postfix}"


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced stream without isatty, or closed
        return False


def _size(stream: IO[str]) -> tuple[int, int]:
    try:
        return tuple(os.get_terminal_size(stream.fileno()))  # type: ignore[return-value]
    except (AttributeError, OSError, ValueError):
        return 0, 0


def _reasons(report: StatusReport) -> list[str]:
    return sorted({r.reason for r in report.rows if r.reason and not r.connected})


def waiting_line(report: StatusReport, connected: int, total: int) -> str:
    """The one-line form (no terminal): ``Waiting for workers: 1/4 connected, 4 started
    (PENDING (Priority))``."""
    started = sum(1 for r in report.rows if r.age is not None)
    line = f"Waiting for workers: {connected}/{total} connected, {started} started"
    reasons = _reasons(report)
    if reasons:  # why they wait, as the backend says
        line += f" ({'; '.join(reasons[:3])})"
    return line


class WaitProgress:
    """A progress bar for ``total`` workers on ``stream`` (default ``sys.stderr``), or
    nothing when ``quiet`` or when the stream is not a terminal (:attr:`active` says which).

    Call :meth:`update` with each new :class:`StatusReport` and :meth:`close` at the end
    (also a context manager). Only redraws when something changed.
    """

    def __init__(self, total: int, *, quiet: bool = False, stream: IO[str] | None = None,
                 desc: str = "Waiting for workers") -> None:
        self.total = total
        self._bar: Any = None
        self._last: tuple[int, str] | None = None
        stream = sys.stderr if stream is None else stream
        if not quiet and total > 0 and is_terminal(stream):
            from tqdm import tqdm  # imported only when a bar is shown

            # A terminal nobody sized (a fresh pty: 0x0) would get no bar at all from tqdm.
            sized = min(_size(stream)) > 0
            self._bar = tqdm(total=total, desc=desc, file=stream, bar_format=BAR_FORMAT,
                             dynamic_ncols=sized, ncols=None if sized else 80,
                             nrows=None if sized else 24, leave=True)

    @property
    def active(self) -> bool:
        """Whether a bar is shown."""
        return self._bar is not None

    def update(self, report: StatusReport, connected: int | None = None) -> None:
        """Show ``connected`` workers (default: the report's) and why the others wait."""
        if self._bar is None:
            return
        have = min(report.connected_workers if connected is None else connected, self.total)
        why = "; ".join(_reasons(report)[:3]) if have < self.total else ""
        if (have, why) == self._last:
            self._bar.refresh()  # the elapsed time still moves
            return
        self._last = (have, why)
        self._bar.n = have
        self._bar.set_postfix_str(why, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> WaitProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def watch(cluster: Any, total: int, *, quiet: bool, interval: float = 0.2) -> None:
    """Show a bar for ``cluster`` (a :class:`~dask_deploy.SpecCluster`) until cancelled:
    what ``wait_for_workers`` runs beside its wait. Returns at once without a terminal."""
    import asyncio

    bar = WaitProgress(total, quiet=quiet)
    if not bar.active:
        return
    try:
        while True:
            bar.update(cluster.status())
            await asyncio.sleep(interval)
    finally:
        bar.update(cluster.status())  # the state it ended in (e.g. all connected)
        bar.close()
