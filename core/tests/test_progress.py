"""Progress while waiting for workers: a bar on a terminal, nothing when piped or quiet."""

from __future__ import annotations

import io
import sys

from dask_deploy._progress import WaitProgress, waiting_line
from dask_deploy._status import StatusReport, UnitStatus
from dask_deploy_testing.terminal import on_a_terminal


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _report(connected: int) -> StatusReport:
    return StatusReport("c", "slurm", (
        UnitStatus("c-0", ("c-0",), "running", "", 3.0, connected > 0),
        UnitStatus("c-1", ("c-1",), "pending", "PENDING (Priority)", 2.0, False),
        UnitStatus("c-2", ("c-2",), "requested", "waiting to be started", None, False),
    ), connected_workers=connected, planned_workers=3)


def test_bar_on_a_terminal_shows_count_and_reasons() -> None:
    out = _Terminal()
    with WaitProgress(3, stream=out) as bar:
        assert bar.active
        bar.update(_report(1))
    text = out.getvalue()
    assert "Waiting for workers:  33%|" in text and "1/3 workers" in text
    assert "], PENDING (Priority); waiting" in text  # why (cut to the 80 columns)


def test_no_bar_when_piped_or_quiet() -> None:
    for bar in (WaitProgress(3, stream=io.StringIO()), WaitProgress(3, stream=_Terminal(), quiet=True)):
        assert not bar.active
        bar.update(_report(1))
        bar.close()
    assert waiting_line(_report(1), 1, 3) == ("Waiting for workers: 1/3 connected, 2 started "
                                             "(PENDING (Priority); waiting to be started)")


#: Two clusters: the first quiet (no output at all), the second not.
_SCRIPT = """
import sys
from dask_deploy import from_name
with from_name("local", n_workers=1, name="t-progress-q", quiet=True) as c:
    c.wait_for_workers(1, timeout=120)
print("QUIET-DONE", file=sys.stderr, flush=True)
with from_name("local", n_workers=1, name="t-progress") as c:
    c.wait_for_workers(1, timeout=120)
print("ALL-DONE", file=sys.stderr, flush=True)
"""


def test_wait_for_workers_on_a_terminal(no_leaked_processes: None) -> None:
    text, _ = on_a_terminal([sys.executable, "-c", _SCRIPT], b"ALL-DONE")
    quiet, loud = text.split("QUIET-DONE")
    assert quiet.strip() == "", quiet  # quiet=True: nothing at all
    assert "Waiting for workers: 100%|" in loud and "1/1 workers" in loud, loud
