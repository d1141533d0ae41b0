"""The ``fake`` backend: in-process workers, fast, with fault-injection switches.

Every unit is one or more in-process :class:`distributed.Worker` objects started on the
cluster's own event loop, so a cluster of ten workers starts in a fraction of a second and
nothing outlives the test process. It is built on the public hooks only, like
``dask_deploy._local``, and stands in for "a real system": a module-level registry
(:data:`_WORLD`) is what the backend "runs", so ``deploy_discover`` asks that registry, not
the core's records.

Faults are switched on with backend options (``Cluster.from_name("fake", fail_start=True)``)
or at run time on the cluster's plugin object (``cluster.backend.inject(fail_starts=2)``,
``cluster.backend.kill(worker)``, ``cluster.backend.lose(worker)``):

============== ===============================================================
option         effect
============== ===============================================================
start_delay    each unit stays PENDING this many seconds before its workers start
fail_start     every unit reports FAILED right after it was accepted
refuse_start   ``deploy_start_workers`` raises ``BackendError`` (batch refused)
crash_after    each worker dies abruptly this many seconds after it connected
never_connect  units report RUNNING but their workers never connect
fail_stop      ``deploy_stop_workers`` raises and leaves the workers running
               (``deploy_teardown`` still removes them, like a host agent would)
lose_logs      the logs of units that ended are lost (``deploy_get_logs`` raises)
fail_prepare   ``deploy_prepare`` raises: the backend is "unreachable"
workers_per_unit  each unit runs this many workers (``<unit>-0``, ``<unit>-1``, ...), as a
               job with ``processes=2`` or a node with two GPUs does
============== ===============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dask_deploy import (
    BackendError,
    BackendInfo,
    ClusterSpec,
    Handle,
    Phase,
    SchedulerInfo,
    SpecError,
    Status,
    Unit,
    WorkerSpec,
    hookimpl,
)
from dask_deploy.toolkit import worker_kwargs

__all__ = ["INFO", "FakeBackend", "FakeOptions", "FakeUnit", "running"]

#: Attribute that in-process backends set on a ``distributed.Worker`` so that the suite's
#: generic "kill a worker" (run inside the worker) can kill it without ending this process.
KILL_ATTRIBUTE = "dask_deploy_kill"


def _seconds(value: object, option: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SpecError(option, value, "expected a number of seconds >= 0"
                        + (" or None" if allow_none else ""))


def _flag(value: object, option: str) -> None:
    if not isinstance(value, bool):
        raise SpecError(option, value, "expected True or False")


@dataclass(frozen=True)
class FakeOptions:
    """The fake backend's own options: fault-injection switches, all off by default."""

    #: Seconds a unit stays PENDING before its workers start (slow start).
    start_delay: float = 0.0
    #: Every unit fails right after it was accepted (poll reports FAILED).
    fail_start: bool = False
    #: ``deploy_start_workers`` refuses every batch with ``BackendError``.
    refuse_start: bool = False
    #: Each worker dies abruptly this many seconds after it connected (None: never).
    crash_after: float | None = None
    #: Units report RUNNING but their workers never connect to the scheduler.
    never_connect: bool = False
    #: ``deploy_stop_workers`` raises ``BackendError`` and leaves the workers running.
    fail_stop: bool = False
    #: Logs of units that ended are lost (``deploy_get_logs`` raises ``BackendError``).
    lose_logs: bool = False
    #: ``deploy_prepare`` raises ``BackendError`` (the backend is unreachable).
    fail_prepare: bool = False
    #: Workers per unit (resource expansion, like jobqueue's ``processes``).
    workers_per_unit: int = 1

    def __post_init__(self) -> None:
        _seconds(self.start_delay, "start_delay")
        _seconds(self.crash_after, "crash_after", allow_none=True)
        for name in ("fail_start", "refuse_start", "never_connect", "fail_stop", "lose_logs",
                     "fail_prepare"):
            _flag(getattr(self, name), name)
        if isinstance(self.workers_per_unit, bool) or not isinstance(self.workers_per_unit, int) \
                or self.workers_per_unit < 1:
            raise SpecError("workers_per_unit", self.workers_per_unit, "an integer >= 1")


@dataclass
class FakeUnit:
    """What the fake "system" runs for one unit: its workers, phase and log."""

    cluster: str
    name: str
    worker_names: tuple[str, ...]
    phase: Phase = Phase.PENDING
    reason: str = ""
    workers: list[Any] = field(default_factory=list)  # distributed.Worker objects
    log: list[str] = field(default_factory=list)
    stopping: bool = False
    task: asyncio.Task[None] | None = None
    #: Set once every worker's start has returned (or the start gave up).
    up: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, line: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {line}")

    def fail(self, reason: str) -> None:
        if self.phase not in (Phase.FAILED, Phase.GONE):
            self.phase, self.reason = Phase.FAILED, reason
            self.write(f"FAILED: {reason}")


#: What the fake system runs: cluster name -> unit (or scheduler) name -> FakeUnit / Scheduler.
_WORLD: dict[str, dict[str, FakeUnit]] = {}
_SCHEDULERS: dict[str, dict[str, Any]] = {}


def running(cluster_id: str | None = None) -> list[str]:
    """Names of the units and schedulers the fake backend still runs (for leak checks)."""
    clusters = [cluster_id] if cluster_id is not None else list({*_WORLD, *_SCHEDULERS})
    return sorted(n for c in clusters for n in [*_WORLD.get(c, {}), *_SCHEDULERS.get(c, {})])


class FakeBackend:
    """One cluster's fake backend. ``inject`` changes its faults while the cluster runs."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.options: FakeOptions = spec.backend_options or FakeOptions()
        #: How many of the next unit starts fail (see :meth:`inject`).
        self.fail_next = 0
        self._logs: dict[str, list[str]] = {}  # unit name -> log lines, kept after death
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the cluster's, once it starts units
        self._unreachable: list[Any] = []  # workers of lost hosts (see :meth:`lose`)
        self._stop_failed: list[FakeUnit] = []  # units whose stop failed (fail_stop)

    # -- run-time fault injection ----------------------------------------------------------

    def inject(self, *, fail_starts: int = 0, **switches: Any) -> None:
        """Inject faults into a running cluster.

        ``fail_starts=N`` makes the next N unit starts fail; any :class:`FakeOptions` field
        (``crash_after=0.5``, ``never_connect=True``, ...) replaces that switch from now on.
        """
        self.fail_next += fail_starts
        if switches:
            self.options = dataclasses.replace(self.options, **switches)

    def kill(self, worker_name: str, reason: str = "killed") -> None:
        """Kill one worker abruptly (its unit reports FAILED), as a signal would.

        Callable from any thread: the kill happens on the cluster's event loop.
        """
        for unit in _WORLD.get(self.spec.name, {}).values():
            if worker_name in unit.worker_names:
                try:
                    here = asyncio.get_running_loop()
                except RuntimeError:
                    here = None
                if self._loop is not None and here is not self._loop:
                    self._loop.call_soon_threadsafe(self._kill, unit, reason)
                else:
                    self._kill(unit, reason)
                return
        raise KeyError(f"no running fake worker named {worker_name!r}")

    def lose(self, worker_name: str) -> None:
        """Lose the "host" of one worker: its unit reports FAILED, but the worker goes on
        running and stays registered with the scheduler, out of the backend's reach (as on
        a host behind a dropped link): stopping the unit does not stop it.

        Call it on the cluster's event loop (``cluster.sync``). Teardown still removes it.
        """
        for unit in _WORLD.get(self.spec.name, {}).values():
            if worker_name in unit.worker_names:
                unit.fail("host lost: unreachable")
                self._unreachable += unit.workers
                unit.workers = []
                return
        raise KeyError(f"no running fake worker named {worker_name!r}")

    def _kill(self, unit: FakeUnit, reason: str) -> None:
        unit.fail(reason)
        for w in unit.workers:
            task = asyncio.ensure_future(w.close(reason=reason, nanny=False, executor_wait=False))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    # -- hooks ---------------------------------------------------------------------------

    @hookimpl
    def deploy_expand_resources(self, cluster: ClusterSpec, workers: list[WorkerSpec]) -> None:
        n = self.options.workers_per_unit
        if n > 1:
            workers[:] = [w.replace(suffix=f"{w.suffix}-{i}") for w in workers for i in range(n)]

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        if self.options.fail_prepare:
            raise BackendError(f"fake backend unreachable for cluster {cluster.name} "
                               "(fail_prepare=True)")

    @hookimpl
    async def deploy_start_scheduler(self, cluster: ClusterSpec) -> SchedulerInfo:
        from distributed import Scheduler

        s = cluster.scheduler
        kwargs: dict[str, Any] = {
            "host": s.host or "127.0.0.1", "port": s.port, "dashboard": s.dashboard_address is not None,
            "dashboard_address": s.dashboard_address, "idle_timeout": s.idle_timeout, **s.options}
        if cluster.tls is not None:
            kwargs.update(protocol="tls", security=cluster.tls.security())
        name = f"{cluster.name}-scheduler"
        try:
            scheduler = Scheduler(**kwargs)
            await asyncio.wait_for(scheduler.start(), cluster.start_timeout)
        except Exception as e:
            raise BackendError(f"the fake scheduler of {cluster.name} did not start: {e!r}") from e
        _SCHEDULERS.setdefault(cluster.name, {})[name] = scheduler
        self._logs[name] = [f"Scheduler at: {scheduler.address}"]
        handle = Handle(cluster.backend, cluster.name, name, str(id(scheduler)), {"role": "scheduler"})
        dash = None
        if s.dashboard_address is not None and scheduler.http_server is not None:
            dash = f"{s.host or '127.0.0.1'}:{scheduler.http_server.port}"  # type: ignore[attr-defined]
        return SchedulerInfo(handle, scheduler.address, dash)

    @hookimpl
    async def deploy_stop_scheduler(self, cluster: ClusterSpec, handle: Handle) -> None:
        scheduler = _SCHEDULERS.get(cluster.name, {}).pop(handle.name, None)
        if scheduler is not None:
            await scheduler.close()
        if not _SCHEDULERS.get(cluster.name, True):
            del _SCHEDULERS[cluster.name]

    @hookimpl
    async def deploy_dashboard_route(self, cluster: ClusterSpec, scheduler: SchedulerInfo) -> str | None:
        return f"http://{scheduler.dashboard_address}" if scheduler.dashboard_address else None

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        if self.options.refuse_start:
            raise BackendError(f"fake backend refused to start {len(units)} unit(s) (refuse_start=True)")
        self._loop = asyncio.get_running_loop()
        world = _WORLD.setdefault(cluster.name, {})
        handles = []
        for unit in units:
            # One log per unit name, appended to by each start (like a log file would be).
            fake = FakeUnit(cluster.name, unit.name, unit.worker_names,
                            log=self._logs.setdefault(unit.name, []))
            fake.write(f"accepted unit {unit.name}")
            fail = self._options(cluster, unit).fail_start or self.fail_next > 0
            if self.fail_next > 0:
                self.fail_next -= 1
            world[unit.name] = fake
            fake.task = asyncio.ensure_future(self._run(cluster, scheduler_address, unit, fake, fail))
            handles.append(Handle(cluster.backend, cluster.name, unit.name, str(id(fake)),
                                  {"workers": list(unit.worker_names)}))
        return handles

    def _options(self, cluster: ClusterSpec, unit: Unit) -> FakeOptions:
        """The unit's pool's own options where it sets some (``pool_options``), else the
        cluster's with the switches a test flipped."""
        own = cluster.options_of(unit.pool)
        return self.options if own is cluster.backend_options or own is None else own  # type: ignore[no-any-return]

    async def _run(self, cluster: ClusterSpec, address: str, unit: Unit, fake: FakeUnit,
                   fail: bool) -> None:
        from distributed import Worker

        opts = self._options(cluster, unit)
        try:
            if opts.start_delay:
                await asyncio.sleep(opts.start_delay)
            if fake.stopping:
                return
            fake.phase = Phase.RUNNING
            if fail:
                fake.fail("injected start failure (exit code 1)")
                return
            if opts.never_connect:
                fake.write("worker started but never connects (never_connect=True)")
                return
            for name, w in zip(unit.worker_names, unit.workers, strict=True):
                if fake.stopping:  # a stop came while an earlier worker started
                    return
                worker = Worker(**worker_kwargs(cluster, address, name, w, security=True))
                # The memory monitor would measure the whole test process, not this worker.
                worker.periodic_callbacks.pop("memory_monitor", None)
                setattr(worker, KILL_ATTRIBUTE, lambda u=fake: self._kill(u, "killed"))
                fake.workers.append(worker)
                await worker
                fake.write(f"Worker name: {name}")
                fake.write(f"Start worker at: {worker.address}")
            fake.up.set()
            if opts.crash_after is not None:
                asyncio.get_running_loop().call_later(
                    opts.crash_after, self._kill, fake, f"crashed {opts.crash_after:g}s after start")
            await asyncio.gather(*(w.finished() for w in fake.workers))
            if not fake.stopping and fake.phase is Phase.RUNNING:
                fake.phase, fake.reason = Phase.GONE, "worker closed"
                fake.write("worker closed itself (exit code 0)")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            fake.fail(f"worker failed to start: {e!r}")
            for w in fake.workers:
                with contextlib.suppress(Exception):
                    await w.close(nanny=False, executor_wait=False)
        finally:
            fake.up.set()

    async def _stop(self, fake: FakeUnit) -> None:
        fake.stopping = True
        # A worker in the middle of its start would register anyway once closed
        # ("Closed worker has not yet started"): let the start return, then close it.
        if fake.task is not None and not fake.task.done() and fake.workers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fake.up.wait(), self.spec.start_timeout)
        for w in fake.workers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.close(reason="stopped by dask-deploy", nanny=False,
                                               executor_wait=False), 10)
        if fake.task is not None and not fake.task.done():
            fake.task.cancel()
            with contextlib.suppress(BaseException):
                await fake.task
        if fake.phase is not Phase.FAILED:
            fake.phase = Phase.GONE
        fake.write("stopped")
        _WORLD.get(fake.cluster, {}).pop(fake.name, None)
        if not _WORLD.get(fake.cluster, True):
            del _WORLD[fake.cluster]

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        world = _WORLD.get(cluster.name, {})
        if self.options.fail_stop:
            # The units go at teardown, as a stuck process goes when its agent ends
            # (in-process workers cannot outlive the test's event loop).
            self._stop_failed += [world[h.name] for h in handles if h.name in world]
            raise BackendError(f"fake backend failed to stop {[h.name for h in handles]} (fail_stop=True)")
        await asyncio.gather(*(self._stop(world[h.name]) for h in handles if h.name in world))

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        world = _WORLD.get(cluster.name, {})
        out = []
        schedulers = _SCHEDULERS.get(cluster.name, {})
        for h in handles:
            fake = world.get(h.name)
            if h.data.get("role") == "scheduler":
                alive = h.name in schedulers and schedulers[h.name].status.name == "running"
                out.append(Status(Phase.RUNNING if alive else Phase.GONE))
            else:
                out.append(Status(Phase.GONE) if fake is None else Status(fake.phase, fake.reason))
        return out

    @hookimpl
    async def deploy_get_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        lines = self._logs.get(handle.name)
        alive = handle.name in _WORLD.get(cluster.name, {}) or \
            handle.name in _SCHEDULERS.get(cluster.name, {})
        if lines is None or (self.options.lose_logs and not alive):
            raise BackendError(f"the log of {handle.name} in {cluster.name} is lost")
        return "\n".join(lines)

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        import os

        from dask_deploy import owner_tag

        clusters = [cluster_id] if cluster_id is not None else sorted({*_WORLD, *_SCHEDULERS})
        # What the fake runs lives in this process: its owner is this process, alive.
        tags: dict[str, Any] = {"owner": owner_tag(), "owner_pid": os.getpid(), "owner_alive": True}
        found = []
        for cid in clusters:
            for name, fake in _WORLD.get(cid, {}).items():
                created = {"created": fake.created} if hasattr(fake, "created") else {}
                found.append(Handle(cluster.backend, cid, name, str(id(fake)),
                                    {"workers": list(fake.worker_names), "phase": fake.phase.value,
                                     **tags, **created}))
            for name, sched in _SCHEDULERS.get(cid, {}).items():
                found.append(Handle(cluster.backend, cid, name, str(id(sched)),
                                    {"role": "scheduler", **tags}))
        return found

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        # No safety net for units or schedulers: the core stops every handle it was given,
        # and the leak checks must see it when it does not. Only workers of "lost hosts"
        # (out of the backend's reach by design, see lose()) go here.
        for worker in self._unreachable:
            with contextlib.suppress(Exception):
                await worker.close(nanny=False, executor_wait=False)
        for fake in self._stop_failed:
            with contextlib.suppress(Exception):
                await self._stop(fake)


INFO = BackendInfo(
    name="fake",
    summary="In-process workers with fault-injection switches (dask-deploy-conformance)",
    factory=FakeBackend,
    options=FakeOptions,
    capabilities=frozenset({"scale", "logs_after_death", "dashboard", "loopback"}),
    extra="conformance",
    defaults={"n_workers": 0, "threads_per_worker": 1, "poll_interval": 0.1},
    # Per pool: one pool's units can start slowly or fail while another's are fine.
    pool_options=frozenset({"start_delay", "fail_start"}),
)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [INFO]
