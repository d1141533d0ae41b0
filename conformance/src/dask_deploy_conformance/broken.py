"""A catalogue of deliberately broken backends: proof that the suite can fail.

Each is the ``fake`` backend with exactly one defect, and names the check(s) of the suite
that must fail because of it (``BrokenBackend.fails``). ``conformance/tests/test_broken.py``
runs exactly those checks against each one and asserts that they fail (that the in-tree
backends pass every check is the job of their own conformance classes). Most are the
in-process ``fake`` with one defect; those whose defect only shows with real processes
(a stop that does not wait, discovery from memory, an environment dropped) are the
tutorial's ``shell`` backend (:mod:`dask_deploy_conformance._shell`) with one defect.

They are not registered as entry points (``dask-deploy backends`` should not list them).
:func:`install` writes a throw-away distribution that registers them, so that
``PYTHONPATH=DIR pytest -p dask_deploy_conformance --deploy-backend broken-loses-logs``
shows the suite failing.

Not in the catalogue, on purpose: "reports RUNNING before the worker connects". The hook
contract allows it (``deploy_poll``: RUNNING means the process runs, it may not have
connected yet); the core learns about connections from the scheduler. What *is* a defect,
reporting RUNNING for a unit that failed, is ``broken-hides-failures``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dask_deploy import BackendInfo, ClusterSpec, Handle, Phase, SchedulerInfo, Status, Unit, hookimpl

from . import _shell
from ._fake import _WORLD, FakeBackend, FakeUnit
from ._fake import INFO as FAKE

__all__ = ["CATALOGUE", "BrokenBackend", "install"]


class LeaksStartingWorker(FakeBackend):
    """Stops only units that already run: one still starting at close is left behind."""

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        world = _WORLD.get(cluster.name, {})
        await asyncio.gather(*(self._stop(world[h.name]) for h in handles
                               if h.name in world and world[h.name].phase is not Phase.PENDING))

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        return None  # trusts that stop_workers stopped everything


class StartsAfterReturning(FakeBackend):
    """Returns the handles at once and starts the units a moment later; a stop that comes in
    between finds them not started yet and drops them (as a stop that races a create request
    still on the wire). The system knows them all along, so discover lists them."""

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        world = _WORLD.setdefault(cluster.name, {})
        for u in units:
            world[u.name] = FakeUnit(cluster.name, u.name, u.worker_names)  # accepted, not started

        async def later() -> None:
            await asyncio.sleep(0.5)
            await FakeBackend.deploy_start_workers(self, cluster, scheduler_address, units)

        task = asyncio.ensure_future(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return [Handle(cluster.backend, cluster.name, u.name, "later", {"workers": list(u.worker_names)})
                for u in units]

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        world = _WORLD.get(cluster.name, {})
        started = [h for h in handles if h.name in world and world[h.name].task is not None]
        await FakeBackend.deploy_stop_workers(self, cluster, started)

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        # The dropped units stay listed (discover shows the leak), but no start may come
        # later and no in-process worker may outlive the test's event loop.
        for task in list(self._tasks):
            task.cancel()
        for fake in _WORLD.get(cluster.name, {}).values():
            for w in fake.workers:
                with contextlib.suppress(Exception):
                    await w.close(nanny=False, executor_wait=False)
        await super().deploy_teardown(cluster)


class IgnoresScaleDown(FakeBackend):
    """``deploy_stop_workers`` does nothing; only teardown (on close) stops workers.

    Connected workers of units scaled away are still retired by the core's safety net (a
    connected worker that no planned unit runs), so scaling converges anyway; what shows
    is the unit that never connected and is never stopped (start_timeout) and the stop
    that cannot fail (close reports no error)."""

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        return None

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        for fake in list(_WORLD.get(cluster.name, {}).values()):
            await self._stop(fake)
        await super().deploy_teardown(cluster)


class StopsWrongWorker(FakeBackend):
    """Stops the newest units instead of the ones it was given (an off-by-one in a batch API)."""

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        world = _WORLD.get(cluster.name, {})
        newest = sorted(world, key=lambda n: int(n.rpartition("-")[2]))[-len(handles):]
        await asyncio.gather(*(self._stop(world[n]) for n in newest))


class HidesFailures(FakeBackend):
    """``deploy_poll`` never reports FAILED: a crashed or failed unit still "runs"."""

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        statuses = await super().deploy_poll(cluster, handles)
        return [Status(Phase.RUNNING) if s.phase is Phase.FAILED else s for s in statuses]


class PollOutOfOrder(FakeBackend):
    """``deploy_poll`` answers in its own order (by name, descending), not the handles' order."""

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        statuses = await super().deploy_poll(cluster, handles)
        return [s for _, s in sorted(zip([h.name for h in handles], statuses, strict=True),
                                     key=lambda pair: pair[0], reverse=True)]


class LosesLogs(FakeBackend):
    """Reads logs from the live worker only: the log of a unit that ended is gone."""

    def __init__(self, spec: ClusterSpec) -> None:
        super().__init__(spec)
        self.options = dataclasses.replace(self.options, lose_logs=True)


class BlindDiscover(FakeBackend):
    """``deploy_discover`` answers from nothing: it never finds what runs."""

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        return []


class Flaps(FakeBackend):
    """Workers leave on their own (cleanly) a second after they start, again and again."""

    async def _run(self, cluster: ClusterSpec, address: str, unit: Any, fake: FakeUnit,
                   fail: bool) -> None:
        async def leave() -> None:
            await asyncio.sleep(1.0)
            for w in fake.workers:
                await w.close(reason="left on its own", nanny=False, executor_wait=False)

        leaving = asyncio.ensure_future(leave())
        try:
            await super()._run(cluster, address, unit, fake, fail)
        finally:
            leaving.cancel()


class LeaksOnFailedStart(FakeBackend):
    """Opens a per-cluster "agent" in prepare and removes it only if the cluster started."""

    started = False

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        _WORLD.setdefault(cluster.name, {})[f"{cluster.name}-agent"] = FakeUnit(
            cluster.name, f"{cluster.name}-agent", (), phase=Phase.RUNNING)
        await super().deploy_prepare(cluster)
        self.started = True

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        if self.started:
            _WORLD.get(cluster.name, {}).pop(f"{cluster.name}-agent", None)
        await super().deploy_teardown(cluster)


class LeaksScheduler(FakeBackend):
    """``deploy_stop_scheduler`` forgets to stop the remote scheduler (nor does teardown)."""

    @hookimpl
    async def deploy_stop_scheduler(self, cluster: ClusterSpec, handle: Handle) -> None:
        return None


class WrongDashboard(FakeBackend):
    """Reports a dashboard address nobody listens on (a port mapping it got wrong)."""

    @hookimpl
    async def deploy_start_scheduler(self, cluster: ClusterSpec) -> SchedulerInfo:
        info = await super().deploy_start_scheduler(cluster)
        return dataclasses.replace(info, dashboard_address="127.0.0.1:9")  # discard port


class HandlesInWrongOrder(FakeBackend):
    """Returns the handles of a batch in reverse order (built from a dict keyed by job id)."""

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        handles = await super().deploy_start_workers(cluster, scheduler_address, units)
        return handles[::-1]


class WorkersNamedAfterUnit(FakeBackend):
    """Names every worker of a unit after the unit, not ``unit.worker_names`` (invisible
    while each unit runs one worker; here each runs two)."""

    async def _run(self, cluster: ClusterSpec, address: str, unit: Any, fake: FakeUnit,
                   fail: bool) -> None:
        # Only what the workers are called changes: the handle still names the unit.
        renamed = dataclasses.replace(unit, workers=tuple(w.replace(suffix="") for w in unit.workers))
        await super()._run(cluster, address, renamed, fake, fail)


class StopDoesNotWait(_shell.ShellBackend):
    """Sends SIGTERM and returns: no wait, no SIGKILL (a worker that ignores SIGTERM runs on)."""

    async def _kill(self, procs: list[Any]) -> None:
        import signal

        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        await self._kill([p for procs in self.procs.values() for p in procs])
        self.procs.clear()


#: What StartsFromMemory's processes "know": the Popen objects this interpreter started.
_STARTED: dict[str, list[Any]] = {}


class DiscoversFromMemory(_shell.ShellBackend):
    """``deploy_discover`` reads a registry of the processes this interpreter started, so
    that from another process (``dask-deploy gc`` after the client died) it finds nothing."""

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        handles = await super().deploy_start_workers(cluster, scheduler_address, units)
        for h in handles:
            _STARTED.setdefault(cluster.name, []).extend(self.procs.get(h.name, []))
        return handles

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        clusters = [cluster_id] if cluster_id is not None else list(_STARTED)
        return [Handle(cluster.backend, c, f"{c}-pid{p.pid}", str(p.pid))
                for c in clusters for p in _STARTED.get(c, []) if p.returncode is None]


class DropsEnv(_shell.ShellBackend):
    """Starts workers without ``WorkerSpec.env`` (the generic option is silently dropped)."""

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        units = [dataclasses.replace(u, workers=tuple(w.replace(env={}) for w in u.workers))
                 for u in units]
        return await super().deploy_start_workers(cluster, scheduler_address, units)


@dataclass(frozen=True)
class BrokenBackend:
    """One broken backend: its ``BackendInfo``, its defect, and the checks that must fail."""

    info: BackendInfo
    defect: str
    #: Names of the suite's checks (test functions) that this defect must make fail.
    fails: tuple[str, ...]


def _broken(name: str, cls: type[Any], fails: tuple[str, ...],
            defaults: dict[str, Any] | None = None) -> BrokenBackend:
    base = _shell.INFO if issubclass(cls, _shell.ShellBackend) else FAKE
    info = dataclasses.replace(base, name=name, summary=f"BROKEN on purpose: {cls.__doc__}",
                               factory=cls, extra="", defaults={**base.defaults, **(defaults or {})})
    return BrokenBackend(info, str(cls.__doc__), fails)


#: name -> BrokenBackend
CATALOGUE: dict[str, BrokenBackend] = {b.info.name: b for b in [
    _broken("broken-leaks-starting-worker", LeaksStartingWorker,
            ("test_no_leak_after_close", "test_no_leak_after_close_during_start"),
            {"start_delay": 0.5}),
    _broken("broken-starts-after-returning", StartsAfterReturning,
            ("test_no_leak_after_close_at_each_creating_call",)),
    _broken("broken-ignores-scale-down", IgnoresScaleDown,
            ("test_never_connecting_start_fails_after_timeout",)),
    _broken("broken-stops-wrong-worker", StopsWrongWorker, ("test_scale_down_named_workers",)),
    _broken("broken-hides-failures", HidesFailures,
            ("test_crash_loop_limit", "test_dead_worker_is_replaced")),
    _broken("broken-poll-out-of-order", PollOutOfOrder, ("test_dead_worker_is_replaced",)),
    _broken("broken-loses-logs", LosesLogs, ("test_logs_of_dead_worker",)),
    _broken("broken-blind-discover", BlindDiscover, ("test_discover_finds_what_runs",)),
    _broken("broken-flaps", Flaps, ("test_adapt_no_flapping",)),
    _broken("broken-leaks-on-failed-start", LeaksOnFailedStart, ("test_no_leak_after_failed_start",)),
    _broken("broken-leaks-scheduler", LeaksScheduler, ("test_remote_scheduler",)),
    _broken("broken-wrong-dashboard", WrongDashboard, ("test_dashboard_served",)),
    _broken("broken-handles-in-wrong-order", HandlesInWrongOrder, ("test_dead_worker_is_replaced",)),
    _broken("broken-workers-named-after-unit", WorkersNamedAfterUnit,
            ("test_sync_start_compute_close",), {"workers_per_unit": 2}),
    _broken("broken-stop-does-not-wait", StopDoesNotWait,
            ("test_worker_ignoring_sigterm_gone_after_close",), {"stop_grace": 1.0}),
    _broken("broken-discovers-from-memory", DiscoversFromMemory,
            ("test_orphans_of_a_killed_client_are_found_and_collected",), {"stop_grace": 1.0}),
    _broken("broken-drops-env", DropsEnv, ("test_generic_options_reach_the_worker",),
            {"stop_grace": 1.0}),
]}


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [b.info for b in CATALOGUE.values()]


def install(directory: str) -> str:
    """Write a distribution into ``directory`` that registers the catalogue's entry points.

    Put ``directory`` on ``PYTHONPATH`` (or ``sys.path``) of a fresh interpreter and the
    broken backends are installed there. Returns ``directory``.
    """
    dist = os.path.join(directory, "dask_deploy_broken_backends-0.0.0.dist-info")
    os.makedirs(dist, exist_ok=True)
    with open(os.path.join(dist, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: dask-deploy-broken-backends\nVersion: 0.0.0\n")
    with open(os.path.join(dist, "entry_points.txt"), "w") as f:
        f.write("[dask_deploy]\n")
        for name in CATALOGUE:
            f.write(f"{name} = {__name__}\n")
    return directory
