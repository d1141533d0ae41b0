"""The status table's rendering, for any unit name and backend reason (pure, no processes)."""

from __future__ import annotations

import html
import re

from dask_deploy._status import StatusReport, UnitStatus
from hypothesis import given
from hypothesis import strategies as st

rows = st.builds(
    UnitStatus, unit=st.text(min_size=1, max_size=30), workers=st.tuples(st.text(max_size=10)),
    phase=st.sampled_from(["requested", "pending", "running", "failed", "gone"]),
    reason=st.text(max_size=80), age=st.none() | st.floats(0, 1e6), connected=st.booleans())


@given(st.lists(rows, max_size=6), st.text(max_size=20), st.none() | st.text(max_size=40))
def test_any_reason_renders_as_one_line_and_escaped_html(units: list[UnitStatus], name: str,
                                                         error: str | None) -> None:
    report = StatusReport(name, "slurm", tuple(units), connected_workers=0,
                          planned_workers=len(units), error=error)
    text = report.text()
    # a header line, a column line, then exactly one line per unit: no reason breaks the table
    assert len(text.splitlines()) == 2 + len(units) or (not units and len(text.splitlines()) == 2)
    page = report.html()
    # Whatever a backend or a user put in a reason, no tag of theirs reaches the page.
    stripped = re.sub(r"</?(div|p|b|table|tr|th|td)( style=\"[^\"]*\"| class=\"[^\"]*\")?>", "", page)
    assert "<" not in stripped and ">" not in stripped
    for u in units:
        assert html.escape(u.unit) in page


def test_table_and_summary() -> None:
    report = StatusReport("c", "slurm", (
        UnitStatus("c-0", ("c-0",), "running", "", 12.0, True),
        UnitStatus("c-1", ("c-1",), "pending", "PENDING (Priority)", 130.0, False),
        UnitStatus("c-2", ("c-2",), "requested", "waiting to be started", None, False),
    ), connected_workers=1, planned_workers=3)
    assert report.summary() == ("1/3 workers connected; 1 pending (PENDING (Priority)); "
                                "1 requested (waiting to be started)")
    lines = report.text().splitlines()
    assert lines[1].split() == ["UNIT", "WORKERS", "STATE", "AGE", "REASON"]
    assert lines[3].split() == ["c-1", "1", "pending", "2m", "PENDING", "(Priority)"]
    assert lines[4].split()[:4] == ["c-2", "1", "requested", "-"]
    assert report["c-1"].state == "pending" and report["c-0"].state == "connected"
    assert [r.unit for r in report] == ["c-0", "c-1", "c-2"] and len(report) == 3
