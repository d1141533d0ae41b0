"""What ``cluster.status()`` returns: one row per unit, from the core's own state.

The rows are built from what the reconcile loop already keeps (the desired units, the
handles the backend returned, and the last ``deploy_poll`` answer with its reason, e.g.
SLURM's ``PENDING (Priority)`` or Kubernetes' ``Unschedulable: ...``), so asking costs no
backend call. The same table is shown in ``_repr_html_``, the Jupyter widget,
``get_logs()["Status"]`` and ``dask-deploy status NAME``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["REQUESTED", "CallableStatus", "StatusReport", "UnitStatus"]

#: The phase of a unit that is planned but has no handle yet (waiting for its start, or
#: for the backoff after failures); the other phases are :class:`~dask_deploy.Phase` values.
REQUESTED = "requested"


@dataclass(frozen=True)
class UnitStatus:
    """One unit of a cluster as the core last saw it."""

    #: The unit's name (``mycluster-3``): one backend start (a job, a pod, a process group).
    unit: str
    #: The names its workers register with in the scheduler.
    workers: tuple[str, ...]
    #: ``"requested"`` (no start yet), or the backend's last phase: ``pending``,
    #: ``running``, ``failed``, ``gone``.
    phase: str
    #: Why it is in that phase, as the backend says (``PENDING (Priority)``); may be empty.
    reason: str
    #: Seconds since it was started (``None``: not started yet).
    age: float | None
    #: Whether all its workers are connected to the scheduler now.
    connected: bool
    #: The pool it belongs to (``"default"`` on a cluster without pools).
    pool: str = "default"

    @property
    def state(self) -> str:
        """One word for people: ``connected`` once its workers are in, else the phase."""
        return "connected" if self.connected else self.phase


@dataclass(frozen=True)
class StatusReport:
    """The per-unit table of one cluster; iterate it for the :class:`UnitStatus` rows."""

    cluster: str
    backend: str
    rows: tuple[UnitStatus, ...]
    #: Workers connected to the scheduler / workers planned.
    connected_workers: int
    planned_workers: int
    #: Why the cluster stopped starting workers (crash loop, scheduler lost), if it did.
    error: str | None = None
    #: Per pool of a cluster with several: (name, connected workers, planned workers).
    pools: tuple[tuple[str, int, int], ...] = ()

    def __iter__(self) -> Iterator[UnitStatus]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, unit: str) -> UnitStatus:
        for row in self.rows:
            if row.unit == unit:
                return row
        raise KeyError(f"no unit {unit!r} in cluster {self.cluster}")

    def summary(self) -> str:
        """One line: ``3/4 workers connected; 1 pending (PENDING (Priority))``."""
        counts: dict[str, int] = {}
        reasons: dict[str, str] = {}
        for row in self.rows:
            counts[row.state] = counts.get(row.state, 0) + 1
            if row.reason and not row.connected:
                reasons.setdefault(row.state, row.reason)
        parts = [f"{n} {state}" + (f" ({reasons[state]})" if state in reasons else "")
                 for state, n in sorted(counts.items()) if state != "connected"]
        head = f"{self.connected_workers}/{self.planned_workers} workers connected"
        if self.pools:
            head += " (" + ", ".join(f"{p} {c}/{n}" for p, c, n in self.pools) + ")"
        return "; ".join([head, *parts]) + (f"; stopped: {self.error}" if self.error else "")

    def text(self) -> str:
        """A plain-text table (for terminals and logs)."""
        header = ("UNIT", "WORKERS", "STATE", "AGE", "REASON")
        # One line per unit: a reason with line breaks (a backend's message) is folded.
        lines = [header] + [(_line(r.unit), str(len(r.workers)), r.state, _age(r.age),
                             _line(r.reason)) for r in self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(4)]
        out = [_line(f"{self.cluster} on {self.backend}: {self.summary()}")]
        out += ["  ".join(c.ljust(w) for c, w in zip(line[:4], widths, strict=True)) + "  " + line[4]
                for line in lines] if self.rows else ["(no units)"]
        return "\n".join(s.rstrip() for s in out)

    def html(self) -> str:
        """An HTML table (for the notebook repr and the widget)."""
        e = html.escape
        head = "".join(f'<th style="text-align: left;">{h}</th>'
                       for h in ("Unit", "Workers", "State", "Age", "Reason"))
        body = "".join(
            "<tr>" + "".join(f'<td style="text-align: left;">{e(c)}</td>' for c in (
                r.unit, str(len(r.workers)), r.state, _age(r.age), r.reason)) + "</tr>"
            for r in self.rows)
        error = f'<p style="color: #b00;">{e(self.error)}</p>' if self.error else ""
        return (f'<div class="dask-deploy-status"><p>Backend: <b>{e(self.backend)}</b>; '
                f"{e(self.summary())}</p>{error}"
                f"<table><tr>{head}</tr>{body}</table></div>")

    def _repr_html_(self) -> str:
        return self.html()

    def __str__(self) -> str:
        return self.text()


def _line(text: str) -> str:
    return " ".join(text.split())


def _age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 120:
        return f"{age:.0f}s"
    if age < 7200:
        return f"{age / 60:.0f}m"
    return f"{age / 3600:.1f}h"


class CallableStatus:
    """``cluster.status``: the lifecycle state distributed reads and writes, and callable.

    ``distributed`` keeps a cluster's lifecycle (created, running, closing, closed) in the
    attribute ``status`` and compares it with ``==`` / ``in``; this wrapper compares and
    hashes as that enum member (and has its ``name`` and ``value``), and calling it,
    ``cluster.status()``, returns the per-unit :class:`StatusReport`.
    """

    __slots__ = ("_report", "member")

    def __init__(self, member: Any, report: Callable[[], StatusReport]) -> None:
        self.member = member
        self._report = report

    def __call__(self) -> StatusReport:
        return self._report()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CallableStatus):
            other = other.member
        return bool(self.member == other)

    def __hash__(self) -> int:
        return hash(self.member)

    def __getattr__(self, attr: str) -> Any:
        # The rest of the enum member (``cluster.status.closed`` is Status.closed, as on the
        # plain enum value distributed keeps).
        if attr in CallableStatus.__slots__:
            raise AttributeError(attr)
        return getattr(self.member, attr)

    @property
    def name(self) -> str:
        return str(self.member.name)

    @property
    def value(self) -> Any:
        return self.member.value

    def __repr__(self) -> str:
        return repr(self.member)

    def __str__(self) -> str:
        return str(self.member)
