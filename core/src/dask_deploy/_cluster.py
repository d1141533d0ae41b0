"""SpecCluster: a ``distributed.deploy.Cluster`` that drives any backend through the hooks."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import datetime
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import dask.config
from dask.utils import parse_bytes
from distributed.core import Status as ClusterStatus
from distributed.core import rpc
from distributed.deploy.cluster import Cluster
from distributed.security import Security
from distributed.utils import Log, Logs, NoOpAwaitable, silence_logging_cmgr

from . import _progress, _state
from ._adaptive import Adaptive
from ._errors import BackendError, CrashLoopError, DeployError, SchedulerLost, SpecError
from ._options import GENERIC_OPTIONS as GENERIC_OPTIONS  # re-exported: merging lives in _options
from ._options import build_spec
from ._options import needs_tls as needs_tls
from ._plugins import backend_info, capabilities, cluster_plugin_manager
from ._proxy import DashboardProxy
from ._reconcile import Failures, Observed, Policy, reconcile
from ._specs import (
    DEFAULT_POOL,
    ClusterSpec,
    Handle,
    Phase,
    Pool,
    SchedulerInfo,
    Status,
    Unit,
    WorkerSpec,
)
from ._status import REQUESTED, CallableStatus, StatusReport, UnitStatus

__all__ = ["SpecCluster", "attach", "from_name"]

#: One line per change of a unit's phase or reason goes here (``quiet=True``: none), so that
#: a user waiting for queued jobs sees why they wait; the logging config decides where it shows.
logger = logging.getLogger("dask_deploy.cluster")


def from_name(backend: str, **options: Any) -> SpecCluster:
    """Start a cluster on ``backend`` (an installed plugin's name), e.g. ``"local"`` or ``"ssh"``.

    ``options`` are the generic ones (``n_workers``, ``threads_per_worker``, ``memory_limit``,
    ``resources``, ``gpus``, ``env``, ``scheduler="local"|"remote"``, ``worker_options``,
    ``scheduler_options``, ``start_timeout``, ``max_failures``, ``name``, ``asynchronous``, ...)
    plus the backend's own. Defaults come from ``dask.config`` under ``deploy.<backend>``.
    Only the named backend's plugin is imported.
    """
    if "name" in options and (record := _state.load(options["name"])) is not None:
        if record.backend != backend:
            raise SpecError("name", options["name"],
                            f"that cluster exists on backend {record.backend!r}, not {backend!r}")
        client_side = {"asynchronous", "loop", "quiet", "silence_logs", "name"}
        if set(options) - client_side:
            raise SpecError(sorted(set(options) - client_side)[0], "...",
                            f"cluster {record.name!r} exists: re-attaching takes no options")
        return attach(record.name, **{k: v for k, v in options.items() if k != "name"})
    spec, client = build_spec(backend, options, stacklevel=2)
    return SpecCluster(spec, **client.as_kwargs())


def attach(name: str, **client_options: Any) -> SpecCluster:
    """Re-attach to a recorded cluster (e.g. a detached one) from any process of this user.

    ``client_options``: ``asynchronous``, ``loop``, ``quiet``, ``silence_logs``. Scale,
    adapt, logs and close then work as on the original; ``close()`` leaves a detached
    cluster running, ``shutdown()`` stops it.
    """
    record = _state.load(name)
    if record is None:
        known = ", ".join(r.name for r in _state.list_clusters()) or "none"
        raise DeployError(f"no recorded cluster named {name!r} (recorded: {known}); "
                          "`dask-deploy list` shows them")
    if not record.detached and record.owner_alive():
        raise DeployError(f"cluster {name!r} belongs to process {record.owner_pid} on "
                          f"{record.owner_host}; only detached clusters (shutdown_on_close=False) "
                          "can be attached from another process")
    # Whether the scheduler answers is checked once the backend reopened the way to it
    # (deploy_reattach: an SSH tunnel, a port-forward), in the start.
    return SpecCluster(record.spec, record=record, **client_options)


class SpecCluster(Cluster):  # type: ignore[misc]
    """A Dask cluster on any backend, driven only through the ``deploy_*`` hooks.

    Works like every ``distributed`` cluster: ``Client(cluster)``, ``scale``, ``adapt``,
    ``wait_for_workers``, ``get_logs``, ``dashboard_link``, the Jupyter widget, ``with`` and
    ``async with``. Inside, a reconciler compares the desired units with what the backend and
    the scheduler report, and starts, replaces and stops units through the hooks, with start
    timeouts, exponential backoff and a crash-loop limit (see :mod:`dask_deploy._reconcile`).
    """

    _instances: ClassVar[weakref.WeakSet[SpecCluster]] = weakref.WeakSet()

    def __init__(self, spec: ClusterSpec, *, asynchronous: bool = False, loop: Any = None,
                 quiet: bool = False, extensions: Mapping[str, Any] | None = None,
                 silence_logs: int | str | bool = logging.WARN,
                 record: _state.ClusterRecord | None = None,
                 dashboard_proxy_address: str = "127.0.0.1:0",
                 dashboard_token: str | None = None) -> None:
        self.spec = spec
        self._attach_to = record  # set when re-attaching to a cluster that already runs
        # An attachment never stops the cluster on close; only shutdown() does.
        self._shutdown = spec.shutdown_on_close and record is None
        proxy_host, _, proxy_port = dashboard_proxy_address.rpartition(":")
        self._proxy = _Proxy(proxy_host or "127.0.0.1", int(proxy_port or 0), dashboard_token)
        self._proxy_server: DashboardProxy | None = None
        self._exit_stack = contextlib.ExitStack()
        if silence_logs:  # like LocalCluster: the in-process scheduler's INFO lines are noise
            self._exit_stack.enter_context(silence_logging_cmgr(level=silence_logs))
        try:
            self._pm, self.backend = cluster_plugin_manager(spec, extensions)
            self._hook = self._pm.hook
            #: What this cluster's backend can do (``remote_scheduler`` read from its hooks).
            self.capabilities = capabilities(backend_info(spec.backend), self._pm)
            _check_pool_options(spec, backend_info(spec.backend).pool_options)
            if spec.scheduler.placement == "remote" and "remote_scheduler" not in self.capabilities:
                raise SpecError("scheduler", "remote", f"backend {spec.backend!r} can only run the "
                                'scheduler in this process: use "local"')
            #: Each pool's expanded workers of one unit; the default pool's first.
            # (each expanded as its own cluster would be: its worker, its backend options)
            self._templates = {p.name: self._expand(dataclasses.replace(
                spec, worker=p.worker, backend_options=spec.options_of(p.name)))
                for p in spec.all_pools}
            self._unit_template = next(iter(self._templates.values()))
            for p in spec.pools:
                _check_whole_units(p, len(self._templates[p.name]))
            self._pools = {p.name: p for p in spec.all_pools}
            # Distinct worker-name suffixes of all pools (for worker -> unit lookups).
            self._suffixes = tuple(dict.fromkeys(w.suffix for t in self._templates.values()
                                                 for w in t))
        except BaseException:
            self._exit_stack.close()
            raise
        self.scheduler: Any = None  # the in-process distributed.Scheduler, if local
        self.scheduler_handle: SchedulerInfo | None = None
        self.units: dict[str, Unit] = {}  # desired
        self.handles: dict[str, Handle] = {}  # started
        self._observed: dict[str, Observed] = {}
        self._failures = Failures()
        self._policy = Policy(start_timeout=spec.start_timeout, queue_timeout=spec.queue_timeout,
                              max_failures=spec.max_failures,
                              **dask.config.get("deploy.backoff", default={}))
        self._counter = 0
        self._kick: asyncio.Event | None = None  # created on the loop in _start
        self._dead: dict[str, Handle] = {}  # stopped units whose logs stay readable
        self._loop_task: asyncio.Task[None] | None = None
        self._start_task: asyncio.Future[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self._torn_down = False  # deploy_teardown ran: no hook is called after it
        #: Hook calls that create something and are still running (see :meth:`_create`).
        self._creating: set[asyncio.Future[Any]] = set()
        #: Units whose lost workers are being removed from the scheduler (see :meth:`_forget`).
        self._forgetting: set[str] = set()
        #: Connected workers of this cluster that no planned unit accounts for -> first seen.
        self._unplanned: dict[str, float] = {}
        #: One Adaptive per pool that adapts, on a cluster with several pools.
        self._pool_adaptives: dict[str, Any] = {}
        self._side_tasks: set[asyncio.Future[Any]] = set()
        #: Whether the "nanny plugins do nothing here" warning was given (once per cluster).
        self._nanny_warned = False
        self._nanny_check_at = 0.0  # next check of a remote scheduler's nanny plugins
        #: Why the cluster stopped starting workers (crash loop, scheduler lost); None: fine.
        self.error: DeployError | None = None
        #: What ``Client(cluster)`` uses to connect (TLS with the cluster's own certificate).
        self.security = spec.tls.security() if spec.tls else Security()
        self._instances.add(self)
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=spec.name)
        self._cluster_info["backend"] = spec.backend
        if not self.called_from_running_loop:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                with contextlib.suppress(BaseException):
                    self.sync(self._close)
                self._loop_runner.stop()
                raise

    @classmethod
    def from_name(cls, backend: str, **options: Any) -> SpecCluster:  # type: ignore[override]
        """Start a cluster on an installed backend; see :func:`dask_deploy.from_name`."""
        return from_name(backend, **options)

    # -- construction -------------------------------------------------------------------

    def _expand(self, spec: ClusterSpec) -> tuple[WorkerSpec, ...]:
        # pluggy calls every implementation in its own order (tryfirst/trylast honoured,
        # the backend before extensions) with the arguments each accepts; they edit the
        # draft in place, as pytest_collection_modifyitems edits its items.
        workers: list[WorkerSpec] = [spec.worker]
        self._hook.deploy_expand_resources(cluster=spec, workers=workers)
        if not workers or not all(isinstance(w, WorkerSpec) for w in workers):
            raise SpecError("worker", spec.worker,
                            f"resource expansion produced no workers or not WorkerSpecs: {workers}")
        if len({w.suffix for w in workers}) != len(workers):
            raise DeployError(f"resource expansion gave workers with clashing suffixes: {workers}")
        return tuple(workers)

    @property
    def workers_per_unit(self) -> int:
        return len(self._unit_template)

    def __await__(self) -> Any:
        async def _() -> SpecCluster:
            if self.status == ClusterStatus.created:
                try:
                    await self._start()
                except BaseException:
                    await self._close()
                    raise
            return self

        return _().__await__()

    async def _start(self) -> None:
        if self.status != ClusterStatus.created:
            if self._start_task is not None:  # a second await of a starting cluster
                await asyncio.shield(self._start_task)
            return
        self.status = ClusterStatus.starting
        # The start runs as a task of its own so that close() can cancel it (close during
        # start must not leave a half-started cluster behind).
        self._start_task = asyncio.ensure_future(self._start_inner())
        try:
            await self._start_task
        except asyncio.CancelledError:
            if self._start_task.cancelled() and self.status in (ClusterStatus.closing,
                                                                ClusterStatus.closed):
                raise DeployError(f"cluster {self.name} was closed while it was starting") from None
            raise

    async def _start_inner(self) -> None:
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        if self._attach_to is not None:
            # First make sure the recorded scheduler is there: prepare may start things
            # (a detached agent) that a cluster which is gone must not get.
            address = await self._reattach(self._adopt(self._attach_to))
        prepare = self._create("deploy_prepare")
        try:
            # Let it begin (e.g. spawn the local agent) before the in-process scheduler's
            # constructor holds the loop: the two then boot side by side.
            await asyncio.sleep(0)
            if self._attach_to is not None:
                await prepare
            else:
                address = await self._start_scheduler(prepare)
        except BaseException:
            # The prepare call itself goes on (close() waits for it); only stop waiting.
            prepare.cancel()
            raise
        self.scheduler_comm = rpc(
            address, connection_args=self.security.get_connection_args("client"))
        await super()._start()
        if self.scheduler_handle is not None:
            await self._start_proxy(self.scheduler_handle)
        self._save_record()
        self._loop_task = asyncio.ensure_future(self._reconcile_loop())
        if self._attach_to is None:
            for pool in self.spec.all_pools:
                if pool.n_workers:
                    self.scale(pool.n_workers, pool=pool.name)

    def _adopt(self, record: _state.ClusterRecord) -> str:
        """Take over the units and scheduler of a recorded cluster."""
        if record.scheduler_handle is not None:
            self.scheduler_handle = SchedulerInfo(record.scheduler_handle, record.scheduler_address,
                                                  record.dashboard_address)
        now = time.monotonic()
        for name, handle in record.handles.items():
            pool = self._pool_of_unit(name)
            self.units[name] = Unit(name, self._templates[pool], pool)
            self.handles[name] = handle
            self._observed[name] = Observed(Phase.PENDING, now)
            self._counter = max(self._counter, _index(name) + 1)
        return record.scheduler_address

    async def _reattach(self, address: str) -> str:
        """Reopen what this process needs to reach a recorded remote scheduler, and check
        that it answers there."""
        if self.scheduler_handle is not None:
            reached = await self._call("deploy_reattach", scheduler=self.scheduler_handle)
            address = str(reached) if reached else address
        from distributed.comm.core import connect

        try:
            comm = await connect(address, timeout=min(10.0, self.spec.start_timeout),
                                 **self.security.get_connection_args("client"))
        except Exception:
            raise DeployError(f"cluster {self.name!r} is recorded but its scheduler at {address} "
                              "does not answer; `dask-deploy gc` removes it") from None
        await comm.close()
        return address

    def _save_record(self) -> None:
        sched = self.scheduler_handle
        # The backend's address of a remote scheduler, not the local end of a tunnel that
        # only this process holds (deploy_reattach opens a new one for the next process).
        _state.save(_state.new_record(
            self.spec, scheduler_address=sched.address if sched else self.scheduler_address,
            dashboard_address=sched.dashboard_address if sched else None,
            scheduler_handle=sched.handle if sched else None, handles=dict(self.handles)))

    async def _start_proxy(self, sched: SchedulerInfo) -> None:
        route = await self._call("deploy_dashboard_route", scheduler=sched)
        if route is None and sched.dashboard_address:
            route = f"http://{sched.dashboard_address}"
        if route:
            self._proxy_server = DashboardProxy(route, *self._proxy)
            await self._proxy_server.start()

    async def _start_scheduler(self, prepare: asyncio.Future[Any]) -> str:
        sched = self.spec.scheduler
        if sched.placement == "local":
            from distributed import Scheduler

            tls: dict[str, Any] = {"protocol": "tls", "security": self.security} if self.spec.tls else {}
            self.scheduler = Scheduler(
                **tls, host=sched.host, port=sched.port, dashboard_address=sched.dashboard_address,
                dashboard=sched.dashboard_address is not None, idle_timeout=sched.idle_timeout,
                **sched.options)
            await self.scheduler
            address = self.scheduler.address
        else:
            await prepare
            self._log(f"Starting the scheduler on {self.spec.backend}")
            info = await self._create("deploy_start_scheduler", keep=self._keep_scheduler)
            address = info.address
        await prepare
        return str(address)

    async def _call(self, hook: str, **kwargs: Any) -> Any:
        """Call a backend hook and await its result (None: not implemented).

        Never after ``deploy_teardown``: a backend may release its clients there for good.
        """
        if self._torn_down:
            raise DeployError(f"cluster {self.name} is closed: {hook} is not called any more")
        result = getattr(self._hook, hook)(cluster=self.spec, **kwargs)
        return await result if result is not None else None

    def _create(self, hook: str, keep: Callable[[Any], None] | None = None,
                **kwargs: Any) -> asyncio.Future[Any]:
        """Call a hook that creates something, so that a racing close() cannot lose it.

        The call runs as a task of its own, started now, that close() does not cancel:
        close() waits for it, and ``keep`` records what it returned (a handle) before
        anybody else runs, so close() then stops it. Await the returned future; whoever
        awaits it may be cancelled meanwhile, the call goes on. This is the one place where
        "close during start" is handled: backends only create, stop, poll and describe.
        """
        async def run() -> Any:
            result = await self._call(hook, **kwargs)
            if keep is not None:
                keep(result)
            return result

        task = asyncio.ensure_future(run())
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        return asyncio.shield(task)

    def _keep_scheduler(self, info: SchedulerInfo | None) -> None:
        if info is None:
            raise SpecError("scheduler", "remote",
                            f"backend {self.spec.backend!r} cannot place the scheduler remotely")
        self.scheduler_handle = info
        if info.security is not None:
            self.security = info.security

    async def _settle(self) -> None:
        """Wait for the creating calls in flight (close() stops what they created).

        Each is bounded by the backend's own start timeouts; one that is still running
        ``start_timeout`` seconds later is cancelled, as a last resort (the hookspecs ask
        a cancelled call to remove what it started).
        """
        pending = set(self._creating)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=self.spec.start_timeout)
        for task in late:
            self._log(f"a backend call that creates something did not return within "
                      f"start_timeout={self.spec.start_timeout:g}s of close(); cancelling it")
            task.cancel()
        if late:
            await asyncio.wait(late)

    # -- scaling ------------------------------------------------------------------------

    def _pool(self, pool: str | None) -> Pool:
        """The pool named ``pool`` (None: the default pool)."""
        if pool is None:
            return next(iter(self._pools.values()))
        try:
            return self._pools[pool]
        except (KeyError, TypeError):
            raise SpecError("pool", pool, f"cluster {self.name} has the pools "
                            f"{sorted(self._pools)}") from None

    def _pool_of_unit(self, name: str) -> str:
        """The pool of a unit, from its name (``<cluster>-<pool>-<i>``; ``<cluster>-<i>``:
        the default pool)."""
        head = name[len(self.spec.name) + 1:].rpartition("-")[0]
        return head if head in self._pools else next(iter(self._pools))

    def _general_pools(self) -> set[str]:
        """Pools that take tasks without resource restrictions: those whose (expanded)
        workers have no resources of their own (kept for the work that asks for them), else
        the default."""
        plain = {p for p, t in self._templates.items() if not any(w.resources for w in t)}
        return plain or {next(iter(self._pools))}

    def pool_workers(self, pool: str | None = None) -> set[str]:
        """The planned workers of one pool (of the default pool when ``pool`` is None)."""
        name = self._pool(pool).name
        return {w for u in self.units.values() if u.pool == name for w in u.worker_names}

    def _per_worker(self, what: str, pool: str | None = None) -> float:
        w = self._templates[self._pool(pool).name][0]
        if what == "cores":
            return w.nthreads
        if not isinstance(w.memory_limit, int):
            raise SpecError("memory_limit", w.memory_limit,
                            "scaling by memory needs a memory_limit in bytes or a size string")
        return w.memory_limit

    def scale(self, n: int | None = None, jobs: int = 0, memory: str | None = None,
              cores: int | None = None, pool: str | None = None) -> Any:
        """Ask for ``n`` workers, or ``jobs`` units (dask-jobqueue's jobs: a unit runs
        ``workers_per_unit`` workers), or enough for ``memory`` / ``cores``; returns at once.

        ``pool``: which pool to scale (default: the first); the others keep their units.
        """
        p = self._pool(pool)
        template = self._templates[p.name]
        per_unit = len(template)
        if n is None:
            n = _count(jobs, "jobs") * per_unit
        if memory is not None:
            n = max(n, math.ceil(parse_bytes(memory) / self._per_worker("memory", p.name)))
        if cores is not None:
            n = max(n, math.ceil(cores / self._per_worker("cores", p.name)))
        want = math.ceil(n / per_unit)
        if self.spec.pools and not p.allows(want * per_unit):
            raise SpecError("n", n, f"pool {p.name!r} takes from {p.minimum} to "
                            f"{'any number of' if p.maximum is None else p.maximum} workers")
        # One pool: all units are its own (no scan of 100,000 units to find them).
        mine = self.units if len(self._pools) == 1 else \
            {k: u for k, u in self.units.items() if u.pool == p.name}
        if want == 0 and mine is self.units:
            self.units.clear()
        elif want < len(mine):
            # Drop units that have not connected first, then the newest.
            seen = {w["name"] for w in self.scheduler_info["workers"].values()}
            order = sorted(mine, key=lambda u: (all(w in seen for w in mine[u].worker_names),
                                                -_index(u)))
            for name in order[: len(mine) - want]:
                del self.units[name]
        have = len(mine)
        if self.status not in (ClusterStatus.closing, ClusterStatus.closed) and want > have:
            first, more = self._counter, want - have
            self._counter += more
            prefix = f"{self.spec.name}-" + ("" if p.name == DEFAULT_POOL else f"{p.name}-")
            self.units.update((n, Unit(n, template, p.name))
                              for n in (f"{prefix}{i}" for i in range(first, first + more)))
        self._wake()
        return NoOpAwaitable() if self.asynchronous else None

    scale_up = scale

    async def scale_down(self, workers: Iterable[str]) -> None:
        """Stop the units of these workers (names or addresses), e.g. for ``Adaptive``."""
        by_addr = {a: w["name"] for a, w in self.scheduler_info["workers"].items()}
        for w in workers:
            name = str(by_addr.get(w, w))
            unit = self._unit_of(name) or (name if name in self.units else None)
            if unit is not None:
                del self.units[unit]
        self._wake()
        await self._reconcile_once()

    def _unit_of(self, worker: str) -> str | None:
        """The planned unit that runs the worker named ``worker`` (None: no planned unit).

        Every unit's workers are ``unit.name + suffix`` with the template's suffixes, so this
        is a few dict lookups, not a scan of all units (scale-down of many units stays linear).
        """
        for suffix in self._suffixes:
            if worker.endswith(suffix):
                unit = worker[: len(worker) - len(suffix)] if suffix else worker
                if unit in self.units:
                    return unit
        return None

    @property
    def plan(self) -> set[str]:
        return {w for u in self.units.values() for w in u.worker_names}

    @property
    def requested(self) -> set[str]:
        return {w for n in self.handles if n in self.units for w in self.units[n].worker_names}

    @property
    def worker_spec(self) -> dict[str, dict[str, tuple[str, ...]]]:
        # What distributed's widget counts: it does ``"group" in spec`` on each value (as in
        # its own SpecCluster), so each unit is a dict whose "group" holds its worker names.
        return {name: {"group": unit.worker_names} for name, unit in self.units.items()}

    def adapt(self, Adaptive: type[Any] = Adaptive, *, minimum_jobs: int | None = None,
              maximum_jobs: int | None = None, minimum_memory: str | int | None = None,
              maximum_memory: str | int | None = None, minimum_cores: int | None = None,
              maximum_cores: int | None = None, pool: str | None = None, **kwargs: Any) -> Any:
        """Scale with the load: ``minimum``, ``maximum``, ``cooldown``, ``min_lifetime``,
        ``interval``, ``target_duration``, ...

        Bounds may also be given as dask-jobqueue's units and distributed's totals:
        ``minimum_jobs``/``maximum_jobs`` (units, each running ``workers_per_unit``
        workers), ``minimum_memory``/``maximum_memory`` and ``minimum_cores``/
        ``maximum_cores`` (converted with one worker's ``memory_limit`` / threads). The
        tightest of the bounds given wins.

        Uses :class:`dask_deploy._adaptive.Adaptive`: idle workers are retired gracefully
        after a cooldown (by default learned from how long this cluster's idle spells
        lasted: a step while work never came back within a boot, up to the units' measured
        boot time when it does), never one younger than ``min_lifetime``; scale-up counts
        starting units and asks only for units that can connect before the waiting work
        is done, and units that would come too late are cancelled (see its docstring);
        pass ``Adaptive=`` to use another policy.

        Pools: ``pool=`` scales that pool only, within its own ``minimum``/``maximum`` unless
        given here, from the work its workers can take (tasks whose resource restrictions
        its ``resources`` meet; unrestricted tasks go to the pools without resources).
        Without ``pool=`` on a cluster with several pools, every pool adapts within its own
        bounds (returns ``{pool: Adaptive}``).
        """
        if pool is None and len(self._pools) > 1:
            if {"minimum", "maximum"} & set(kwargs) or any(v is not None for v in (
                    minimum_jobs, maximum_jobs, minimum_memory, maximum_memory,
                    minimum_cores, maximum_cores)):
                raise SpecError("pool", None, "bounds given for a cluster with several pools: "
                                f"name one of {sorted(self._pools)} with pool=")
            return {p: self.adapt(Adaptive, pool=p, **kwargs) for p in self._pools}
        p = self._pool(pool)
        low = kwargs.pop("minimum", p.minimum if self.spec.pools else None)
        high = kwargs.pop("maximum", p.maximum if self.spec.pools else None)
        lows = [] if low is None else [low]
        highs = [] if high is None else [high]
        per_unit = len(self._templates[p.name])
        if minimum_jobs is not None:
            lows.append(_count(minimum_jobs, "minimum_jobs") * per_unit)
        if maximum_jobs is not None:
            highs.append(_count(maximum_jobs, "maximum_jobs") * per_unit)
        for option, value, what, up in (("minimum_memory", minimum_memory, "memory", True),
                                        ("maximum_memory", maximum_memory, "memory", False),
                                        ("minimum_cores", minimum_cores, "cores", True),
                                        ("maximum_cores", maximum_cores, "cores", False)):
            if value is None:
                continue
            amount = _amount(value, option, what)
            workers = amount / self._per_worker(what, p.name)
            (lows if up else highs).append(math.ceil(workers) if up else math.floor(workers))
        if lows:
            kwargs["minimum"] = max(lows)
        if highs:
            kwargs["maximum"] = min(highs)
        if lows and highs and kwargs["minimum"] > kwargs["maximum"]:
            raise SpecError("minimum", kwargs["minimum"],
                            f"the bounds given ask for at least {kwargs['minimum']} and at most "
                            f"{kwargs['maximum']} workers: widen them")
        if len(self._pools) == 1:
            return super().adapt(Adaptive=Adaptive, **kwargs)
        old = self._pool_adaptives.pop(p.name, None)
        if old is not None:
            old.stop(reason="adapt called again")
        self._pool_adaptives[p.name] = adaptive = Adaptive(self, pool=p.name, **kwargs)
        self._adaptive = adaptive  # what the widget and _scaling_status look at
        return adaptive

    def job_script(self) -> str:
        """What the backend submits for one unit (batch-system backends), for inspection."""
        show = getattr(self.backend, "job_script", None)
        if show is None:
            raise DeployError(f"backend {self.spec.backend!r} submits no job script")
        return str(show())

    def retry(self) -> None:
        """Clear the crash-loop stop after fixing its cause, so that starts resume."""
        self._failures = Failures()
        self.error = None
        self._wake()

    # -- the reconcile loop -------------------------------------------------------------

    def _wake(self) -> None:
        if self._kick is not None and self.loop is not None:
            self.loop.add_callback(self._kick.set)

    def _update_worker_status(self, op: str, msg: Any) -> None:
        if op == "add" and isinstance(msg, dict):
            self._name_workers(msg.get("workers") or {})
        super()._update_worker_status(op, msg)
        if self._kick is not None:
            self._kick.set()

    # distributed assigns scheduler_info wholesale (on start, in wait_for_workers): the
    # setter names the workers of every new copy, as _update_worker_status does for updates.
    @property  # type: ignore[override]
    def scheduler_info(self) -> Any:
        return self._scheduler_info

    @scheduler_info.setter
    def scheduler_info(self, info: Any) -> None:
        self._scheduler_info = info
        if getattr(self, "_hook", None) is not None and isinstance(info, dict):
            self._name_workers(info.get("workers") or {})

    def _name_workers(self, workers: dict[str, Any]) -> None:
        """Rename, in this client's view, workers that a backend's system named itself.

        The one place where ``deploy_worker_name`` is asked (see hookspecs): everything
        else in the core reads ``scheduler_info``, which then carries the planned names.
        """
        hook = self._hook.deploy_worker_name
        if not hook.get_hookimpls():
            return
        for address, info in workers.items():
            if isinstance(info, dict) and info.get("name") is not None:
                alias = hook(cluster=self.spec, address=address, name=str(info["name"]))
                if alias is not None:
                    info["name"] = alias

    async def _reconcile_loop(self) -> None:
        assert self._kick is not None
        while self.status in (ClusterStatus.starting, ClusterStatus.running):
            self._kick.clear()
            try:
                await self._reconcile_once()
            except Exception as e:
                self._log(f"reconcile round failed ({type(e).__name__}: {e}); retrying")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.spec.poll_interval)

    async def _reconcile_once(self) -> None:
        async with self._lock:
            if self.status in (ClusterStatus.closing, ClusterStatus.closed):
                return
            await self._observe()
            now = time.monotonic()
            decision = reconcile(self.units.keys(), self._observed, self._failures, now,
                                 self._policy)
            for name, reason in decision.failed:
                self._log(f"Worker unit {name} failed: {reason}")
            self._failures = decision.failures
            try:
                if decision.stop:
                    ended = (Phase.FAILED, Phase.GONE)
                    lost = [n for n in decision.stop if n in self.units and n in self._observed
                            and self._observed[n].phase in ended]
                    await self._stop_units(decision.stop)
                    self._forget(lost)
            finally:
                # Published only after the failed units were stopped: whoever sees the
                # error may look for what still runs, and must not find those.
                if decision.failures.tripped and self.error is None:
                    self.error = CrashLoopError(
                        f"{decision.failures.tripped}. No more workers are started; fix the "
                        "cause, then call cluster.retry(). cluster.get_logs() has each failed "
                        "unit's log.")
                    self._log(str(self.error))
            self._retire_unplanned(now)
            # A lost scheduler takes no workers; a unit whose old workers the scheduler
            # still lists waits until they are forgotten (else: "duplicate name").
            start = [n for n in decision.start if n not in self._forgetting]
            if start and not isinstance(self.error, SchedulerLost):
                await self._start_units(start, now)

    async def _observe(self) -> None:
        # Only units still wanted: the others are stopped this round whatever their phase
        # (polling them made a scale-down of N units poll N handles it was about to stop).
        units = self.units
        handles = [h for n, h in self.handles.items() if n in units]
        sched = self.scheduler_handle
        if sched is not None:  # the remote scheduler is polled in the same batch
            handles.append(sched.handle)
        statuses: list[Status] = []
        if handles:
            statuses = list(await self._call("deploy_poll", handles=handles))
        if len(statuses) != len(handles):
            raise BackendError(f"deploy_poll returned {len(statuses)} statuses for "
                               f"{len(handles)} handles")
        if sched is not None:
            await self._check_scheduler(statuses.pop())
            handles.pop()
        seen = {w["name"] for w in self.scheduler_info["workers"].values()}
        now = time.monotonic()
        for handle, status in zip(handles, statuses, strict=True):
            name = handle.name
            old = self._observed[name]
            unit = units.get(name)
            connected = unit is not None and all(w in seen for w in unit.worker_names)
            if (status.phase, status.reason, connected) == (old.phase, old.reason, old.connected) \
                    and (old.running_at is not None or status.phase is Phase.PENDING) \
                    and (old.connected_at is not None or not connected):
                continue  # nothing changed: keep the record (no copy per unit per round)
            self._observed[name] = dataclasses.replace(
                old, phase=status.phase, reason=status.reason, connected=connected,
                connected_at=old.connected_at or (now if connected else None),
                running_at=old.running_at or (now if status.phase is not Phase.PENDING else None))
            self._note(handle.name, old, self._observed[handle.name])
        if not self._nanny_warned:
            self._in_background(self._check_nanny_plugins())

    def _note(self, name: str, old: Observed, new: Observed) -> None:
        """One log line per change of a unit's phase or reason (not per poll)."""
        if (old.phase, old.reason) == (new.phase, new.reason):
            return
        line = f"Unit {name}: {new.phase.value}" + (f" ({new.reason})" if new.reason else "")
        self._record(line)
        if not self.quiet:
            logger.info("%s: %s", self.name, line)

    async def _check_nanny_plugins(self) -> None:
        """Warn once when nanny plugins are registered but workers run without a nanny.

        ``client.register_plugin(Environ(...))`` (or any ``NannyPlugin``) goes to the nannies
        only; workers started without one (the default: ``nanny=False``) never see it.
        The in-process scheduler is read directly; a remote one is asked at most every 5 s.
        """
        workers = self.scheduler_info.get("workers", {}).values()
        if self._nanny_warned or not any(w.get("nanny") is None for w in workers):
            return
        if self.scheduler is not None:
            names = sorted(self.scheduler.nanny_plugins)
        else:
            now = time.monotonic()
            comm = self.scheduler_comm
            if comm is None or now < self._nanny_check_at:
                return
            self._nanny_check_at = now + 5.0
            from distributed.protocol.pickle import dumps

            try:  # pickled by value: the remote scheduler need not import dask_deploy
                reply = await asyncio.wait_for(comm.run_function(
                    function=dumps(lambda dask_scheduler: sorted(dask_scheduler.nanny_plugins)),
                    args=dumps(()), kwargs=dumps({})), 5)
            except Exception:  # e.g. distributed.scheduler.pickle off: nothing to check with
                return
            names = reply.get("result") or [] if reply.get("status") == "OK" else []
        if names and not self._nanny_warned:
            self._nanny_warned = True
            line = (f"nanny plugin(s) {names} do nothing on cluster {self.name}: its workers run "
                    "without a nanny. Start the cluster with nanny=True (slower starts) to use them.")
            self._record(line)
            logger.warning(line)

    async def _check_scheduler(self, status: Status) -> None:
        """A remote scheduler the backend reports ended, and that does not answer, is lost."""
        if status.phase not in (Phase.FAILED, Phase.GONE) or isinstance(self.error, SchedulerLost):
            return
        comm = self.scheduler_comm
        with contextlib.suppress(Exception):
            if comm is not None:  # bounded so that the loss is known within two rounds
                await asyncio.wait_for(comm.identity(), min(2.0, self.spec.poll_interval))
                return  # it answers: the backend's view is stale
        assert self.scheduler_handle is not None
        try:
            log = await self.logs_of(self.scheduler_handle.handle.name)
        except Exception as e:
            log = f"(its log cannot be read: {e})"
        tail = "\n".join(log.strip().splitlines()[-20:])
        self.error = SchedulerLost(
            f"the scheduler of {self.name} is {status.phase.value}"
            f"{': ' + status.reason if status.reason else ''}; no more workers are started. "
            f"Close this cluster and start a new one. The end of its log:\n{tail}")
        self._log(str(self.error))

    def _retire_unplanned(self, now: float) -> None:
        """Retire connected workers of this cluster that no planned unit accounts for.

        A worker stopped while it was still starting can register anyway (the backend lost
        the stop, or the registration was already on the wire). Nothing else would ever
        remove it, so the core does, through the scheduler, once it has been seen unplanned
        in two rounds (one round can be the gap between a stop and its disconnect).
        """
        comm = self.scheduler_comm
        if comm is None:
            return
        prefix = f"{self.spec.name}-"
        unplanned = {a for a, w in self.scheduler_info["workers"].items()
                     if str(w.get("name", "")).startswith(prefix)
                     and self._unit_of(str(w.get("name"))) is None}
        self._unplanned = {a: self._unplanned.get(a, now) for a in unplanned}
        late = [a for a, first in self._unplanned.items()
                if now - first >= self.spec.poll_interval]
        if not late:
            return
        names = [self.scheduler_info["workers"][a].get("name") for a in late]
        self._log(f"Retiring worker(s) {names}: connected, but no planned unit runs them")

        async def retire() -> None:
            try:
                await asyncio.wait_for(comm.retire_workers(workers=late, close_workers=True,
                                                           remove=True), 10)
            except Exception as e:
                self._log(f"could not retire unplanned workers {names}: {e}")

        self._in_background(retire())
        for a in late:
            self._unplanned.pop(a)

    def _in_background(self, coro: Any) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return task

    async def _start_units(self, names: Iterable[str], now: float) -> None:
        units = [self.units[n] for n in names]

        def keep(handles: Any) -> None:
            # Runs as soon as the backend returns, even if close() began meanwhile: every
            # handle is recorded here, so close() (or the next round) stops it.
            handles = list(handles or [])
            names = [getattr(h, "name", None) for h in handles]
            if names != [u.name for u in units]:
                # Refused: a handle kept under another unit's name would be polled, stopped
                # and logged as the wrong unit. Each is kept under the name it carries (so
                # that a racing close() stops it) and stopped below; every unit of the
                # batch then counts as a refused start.
                for handle in handles:
                    name = getattr(handle, "name", None)
                    if isinstance(name, str) and name not in self.handles:
                        self.handles[name] = handle
                        self._observed[name] = Observed(Phase.PENDING, now)
                        refused.append(name)
                raise BackendError(_handle_mismatch(units, names))
            pending = Observed(Phase.PENDING, now)  # one shared record: they are all alike
            for unit, handle in zip(units, handles, strict=True):
                self.handles[unit.name] = handle
                self._observed[unit.name] = pending

        refused: list[str] = []
        try:
            await self._create("deploy_start_workers", keep=keep,
                               scheduler_address=self.scheduler_address, units=units)
        except (BackendError, OSError) as e:
            if refused:
                try:
                    await self._stop_units(refused)
                except Exception as stop_error:
                    self._log(f"could not stop the refused units {refused}: {stop_error}")
            # Counted as one failure per unit on the next round (no handle to stop).
            for unit in units:
                if unit.name not in self.handles:
                    self._observed[unit.name] = Observed(Phase.FAILED, now, f"start refused: {e}")
            self._wake()
            return
        self._save_record()
        self._record(f"Started {len(units)} unit(s): {', '.join(u.name for u in units)}")

    def _forget(self, units: list[str]) -> None:
        """Drop from the scheduler the workers of failed units that it still lists.

        A worker on a host we lost (a dropped link, a dead node) stays listed until its TCP
        connections time out (~30 s), and until then the scheduler refuses a replacement of
        the same name ("duplicate name"), which would count towards the crash-loop limit.
        Runs in the background, outside the reconcile lock, all workers at once with a
        short timeout; the units' replacements start in the round after. Best effort: a
        worker that really died is dropped by the scheduler anyway.
        """
        comm = self.scheduler_comm
        names = {w for u in units for w in self.units[u].worker_names}
        stale = [a for a, w in self.scheduler_info["workers"].items() if w.get("name") in names]
        if comm is None or not stale:
            return
        self._forgetting.update(units)

        async def one(address: str) -> None:
            try:
                await asyncio.wait_for(comm.unregister(
                    address=address, stimulus_id=f"dask-deploy-lost-{time.time()}"), 5)
            except Exception as e:
                self._log(f"could not tell the scheduler that worker {address} is gone: {e}")
            else:
                self._record(f"Removed the lost worker {address} from the scheduler")

        async def forget() -> None:
            try:
                await asyncio.gather(*(one(a) for a in stale))
            finally:
                self._forgetting.difference_update(units)
                self._wake()

        self._in_background(forget())

    async def _stop_units(self, names: Iterable[str]) -> None:
        names = list(names)
        started = self.handles
        stopping = [n for n in names if n in started]
        if stopping:
            await self._call("deploy_stop_workers", handles=[started[n] for n in stopping])
        recent = {n: started[n] for n in stopping[-_KEEP_DEAD:] if n in started}
        observed = self._observed
        for n in names:
            started.pop(n, None)
            observed.pop(n, None)
        # Keep the handles (for their logs) of the most recent ones only, trimmed in one
        # step: deleting the oldest key by key was quadratic (a dict's iterator scans the
        # deleted slots from the start each time: 5 s to stop 100,000 units).
        self._dead.update(recent)
        if len(self._dead) > _KEEP_DEAD:
            self._dead = dict(list(self._dead.items())[-_KEEP_DEAD:])
        if self.status == ClusterStatus.running:
            self._save_record()

    # -- waiting, logs, closing ---------------------------------------------------------

    def _record(self, message: str) -> None:
        """Keep a message for ``get_logs()["Cluster"]`` without printing it."""
        self._cluster_manager_logs.append((datetime.datetime.now(), message))

    async def _wait_for_workers(self, n_workers: int = 0, timeout: float | None = None) -> None:
        async def crash_watch() -> None:
            while self.error is None:
                await asyncio.sleep(0.1)
            raise self.error

        waiter = asyncio.ensure_future(super()._wait_for_workers(n_workers, timeout))
        watcher = asyncio.ensure_future(crash_watch())
        # A progress bar on a terminal while the user waits (none when quiet or piped).
        shown = asyncio.ensure_future(_progress.watch(self, n_workers, quiet=self.quiet))
        try:
            done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            waiter.cancel()
            watcher.cancel()
            shown.cancel()

    async def logs_of(self, name: str) -> str:
        """The backend's log of one unit or of the remote scheduler, also after it died."""
        handle = self.handles.get(name) or self._dead.get(name)
        if self.scheduler_handle and name == self.scheduler_handle.handle.name:
            handle = self.scheduler_handle.handle
        if handle is None:
            raise KeyError(f"no unit or scheduler named {name!r} in cluster {self.name}")
        text = await self._call("deploy_get_logs", handle=handle)
        return text or ""

    async def _get_logs(self, cluster: bool = True, scheduler: bool = True,
                        workers: bool | Iterable[str] = True) -> Logs:
        logs = Logs()
        if cluster:
            logs["Status"] = Log(self._status_report().text())
            logs["Cluster"] = Log("\n".join(line for _, line in self._cluster_manager_logs))
        if scheduler:
            if self.scheduler_handle is not None:
                logs["Scheduler"] = Log(await self.logs_of(self.scheduler_handle.handle.name))
            elif self.scheduler_comm is not None:
                lines = await self.scheduler_comm.get_logs()
                logs["Scheduler"] = Log("\n".join(line for _, line in lines))
        if workers:
            wanted = None if workers is True else set(workers)  # type: ignore[arg-type]
            for name in sorted({*self.handles, *self._dead}, key=_index):
                if wanted is None or name in wanted:
                    with contextlib.suppress(BackendError, KeyError):
                        logs[name] = Log(await self.logs_of(name))
        return logs

    async def _close(self) -> None:
        # One close, however many callers: the second awaits the first.
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close_once())
        await asyncio.shield(self._close_task)

    async def _close_once(self) -> None:
        if self.status == ClusterStatus.closed:
            return
        self.status = ClusterStatus.closing
        # Stop deciding: cancel the start and the reconcile loop. Hook calls that create
        # something go on (see _create); wait for them, so that what they create is known.
        for task in (self._start_task, self._loop_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._adaptive is not None:
            self._adaptive.stop()
        for adaptive in self._pool_adaptives.values():
            adaptive.stop()
        await self._settle()
        for task in list(self._side_tasks):
            task.cancel()
        errors: list[BaseException] = []
        if self._shutdown:
            self.spec = dataclasses.replace(self.spec, shutdown_on_close=True)
            self.units.clear()
            try:
                await self._stop_units(list(self.handles))
            except Exception as e:
                errors.append(e)
            if self.scheduler_handle is not None:
                try:
                    await self._call("deploy_stop_scheduler", handle=self.scheduler_handle.handle)
                except Exception as e:
                    errors.append(e)
        with contextlib.suppress(Exception):
            await self._call("deploy_teardown")
        self._torn_down = True
        if self._proxy_server is not None:
            await self._proxy_server.close()
        if self._shutdown:
            _state.remove(self.name)
        elif self.scheduler_comm is not None:
            # Detached: nobody owns it now; another process may attach.
            record = _state.load(self.name)
            if record is not None:
                _state.save(dataclasses.replace(record, owner_pid=None, handles=dict(self.handles)))
        # The base class closes the comms and the status subscription.
        with contextlib.suppress(Exception):
            await super()._close()
        if self.scheduler is not None:
            await self.scheduler.close()
        self.status = ClusterStatus.closed
        self._exit_stack.close()
        if errors:
            raise BackendError(f"cluster {self.name} closed with errors: {errors}")

    def shutdown(self, timeout: float | None = None) -> Any:
        """Stop the cluster for good, also a detached one (``close()`` leaves those running)."""
        self._shutdown = True
        return self.close(timeout)

    def close(self, timeout: float | None = None) -> Any:
        if self.asynchronous or self.status == ClusterStatus.closed:
            aw = super().close(timeout)
        else:  # distributed's close() swallows RuntimeError, and BackendError is one
            aw = self.sync(self._close, callback_timeout=timeout)
        if not self.asynchronous:
            self._loop_runner.stop()
        return aw

    @property
    def dashboard_link(self) -> str:
        """The dashboard: through the core's proxy for a remote scheduler, else direct.

        Never contains the proxy's token (the link is printed and shown in widgets): a browser
        opens it once with ``?token=`` + :attr:`dashboard_token` appended, then has a cookie.
        """
        if self._proxy_server is not None:
            # The proxy's own address through the user's template, as distributed formats
            # a local scheduler's (``distributed.dashboard.link``: under JupyterHub,
            # ``{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status``).
            return _format_link(self._proxy_server.host, self._proxy_server.port,
                                f"{self._proxy_server.url}/status")
        try:
            port = self.scheduler_info["services"]["dashboard"]
        except KeyError:
            return ""
        host = self.scheduler_address.split("://")[1].split("/")[0].rpartition(":")[0]
        return _format_link(host.strip("[]"), port, f"http://{host}:{port}/status")

    # -- status -------------------------------------------------------------------------

    @property  # type: ignore[override]
    def status(self) -> CallableStatus:
        """The lifecycle state (``== Status.running`` as on every distributed cluster);
        call it, ``cluster.status()``, for the per-unit :class:`StatusReport`."""
        return CallableStatus(self.__dict__.get("_lifecycle", ClusterStatus.undefined),
                              self._status_report)

    @status.setter
    def status(self, value: Any) -> None:
        self.__dict__["_lifecycle"] = value.member if isinstance(value, CallableStatus) else value

    def _status_report(self) -> StatusReport:
        """Each unit's phase, reason, age and connection, from what the core last saw."""
        now = time.monotonic()
        # Copies first (each a single C-level step): status() is also called from the
        # user's thread while the loop thread changes these.
        units, handles, observed = dict(self.units), dict(self.handles), dict(self._observed)
        seen = {w.get("name") for w in list(self.scheduler_info.get("workers", {}).values())}
        rows = []
        for name in sorted({*units, *handles, *observed}, key=_index):
            unit = units.get(name)
            workers = unit.worker_names if unit is not None else ()
            obs = observed.get(name)
            if name in handles and obs is not None:
                phase, reason, age = obs.phase.value, obs.reason, max(0.0, now - obs.started_at)
                if unit is None:
                    reason = "stopping" + (f" ({reason})" if reason else "")
            elif obs is not None:  # a start the backend refused: no handle
                phase, reason, age = obs.phase.value, obs.reason, None
            else:
                phase, age = REQUESTED, None
                if self.error is not None:
                    reason = "not started: the cluster stopped starting workers"
                elif self._failures.retry_at > now:
                    reason = (f"backing off after {self._failures.count} failure(s), next start "
                              f"in {self._failures.retry_at - now:.0f}s")
                else:
                    reason = "waiting to be started"
            pool = unit.pool if unit is not None else self._pool_of_unit(name)
            rows.append(UnitStatus(name, workers, phase, reason, age,
                                   bool(workers) and set(workers) <= seen, pool))
        plan = {w for u in units.values() for w in u.worker_names}
        pools: tuple[tuple[str, int, int], ...] = ()
        if len(self._pools) > 1:
            per = {p: [0, 0] for p in self._pools}
            for u in units.values():
                for w in u.worker_names:
                    per[u.pool][1] += 1
                    per[u.pool][0] += w in seen
            pools = tuple((p, c, n) for p, (c, n) in per.items())
        return StatusReport(self.name, self.spec.backend, tuple(rows),
                            connected_workers=len(plan & seen), planned_workers=len(plan),
                            error=str(self.error) if self.error is not None else None,
                            pools=pools)

    async def _refresh_status(self) -> StatusReport:
        """Poll the backend once now (as a reconcile round does), then report."""
        async with self._lock:
            if self.status not in (ClusterStatus.closing, ClusterStatus.closed):
                await self._observe()
        return self._status_report()

    def _repr_html_(self, cluster_status: str | None = None) -> str:
        # Rendered by the widget's Status tab too, refreshed by its periodic callback.
        try:
            # The template puts this inside its table: one full-width row.
            table = f'<tr><td colspan="2">{self._status_report().html()}</td></tr>'
        except Exception as e:  # a repr must render whatever state the cluster is in
            table = f"<p>status unavailable: {e}</p>"
        return str(super()._repr_html_(cluster_status=table + (cluster_status or "")))

    def _scaling_status(self) -> str:
        mode = "Adaptive" if self._adaptive and self._adaptive.periodic_callback else "Manual"
        report = self._status_report()
        return (f'<table><tr><td style="text-align: left;">Scaling mode: {mode}</td></tr>'
                f'<tr><td style="text-align: left;">Workers: {report.connected_workers} / '
                f"{report.planned_workers} ({len(report)} unit(s) of {self.workers_per_unit} "
                f"on {self.spec.backend})</td></tr></table>")

    @property
    def dashboard_token(self) -> str | None:
        """The token the dashboard proxy asks for (``?token=`` once, then a cookie), if any."""
        return self._proxy.token

    def __repr__(self) -> str:
        workers = self.scheduler_info.get("workers", {})
        return (f"SpecCluster({self.spec.backend}, {self.name!r}, {self.scheduler_address!r}, "
                f"workers={len(workers)}, threads={sum(w['nthreads'] for w in workers.values())})")


class _Proxy(NamedTuple):
    host: str
    port: int
    token: str | None


def _handle_mismatch(units: list[Unit], names: list[Any]) -> str:
    """The error for a ``deploy_start_workers`` answer whose handles do not name its units."""
    want = [u.name for u in units]
    if len(names) != len(want):
        detail = f"{len(names)} handles for {len(want)} units"
    elif sorted(map(str, names)) == sorted(want):
        detail = "the handles are not in the units' order"
    else:
        detail = "handles name units it was not asked for"
    return (f"deploy_start_workers returned handles {names} for units {want} ({detail}): "
            "return one Handle per unit, in the units' order, with handle.name == unit.name")


def _format_link(host: str, port: int, fallback: str) -> str:
    """``distributed.dashboard.link`` filled in as distributed does (``{host}``, ``{port}``,
    ``{scheme}`` and environment variables); ``fallback`` when it names a variable that is
    not set, so that a repr never raises."""
    from distributed.utils import format_dashboard_link

    if ":" in host:  # an IPv6 literal in a URL
        host = f"[{host}]"
    try:
        return str(format_dashboard_link(host, port))
    except (KeyError, IndexError, ValueError):
        return fallback


#: Stopped units whose handles (for their logs) are kept.
_KEEP_DEAD = 200


def _index(name: str) -> int:
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


@atexit.register
def _close_clusters() -> None:
    for cluster in list(SpecCluster._instances):
        if cluster.status != ClusterStatus.closed:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


def _count(value: object, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(option, value, "expected a whole number >= 0")
    return value


def _amount(value: object, option: str, what: str) -> float:
    """A memory size ("16GB", bytes) or a number of cores, for adapt's bounds."""
    try:
        amount = parse_bytes(value) if what == "memory" and isinstance(value, str) else value
    except (ValueError, TypeError):
        amount = None
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
        raise SpecError(option, value, 'expected a size such as "64GB"' if what == "memory"
                        else "expected a number of cores >= 0")
    return float(amount)


def _check_whole_units(pool: Pool, per_unit: int) -> None:
    """A pool whose units run several workers (GPUs, processes per job) scales in whole
    units, so its ``maximum`` must be a multiple of them: ``maximum=1`` with two workers
    per unit could never start one (adapt would fail every round)."""
    if pool.maximum is not None and pool.maximum % per_unit:
        raise SpecError(f"pools[{pool.name!r}].maximum", pool.maximum,
                        f"each unit of this pool runs {per_unit} workers, and units start "
                        f"whole: use a multiple of {per_unit}")


def _check_pool_options(spec: ClusterSpec, allowed: frozenset[str]) -> None:
    """Refuse a pool whose backend options differ from the cluster's in a field the backend
    does not read per pool (a ``Pool`` made in Python, not through ``pools=``): it would be
    dropped silently."""
    for pool in spec.pools:
        if pool.backend_options is None:
            continue
        for f in dataclasses.fields(pool.backend_options):
            if f.name not in allowed and getattr(pool.backend_options, f.name) != getattr(
                    spec.backend_options, f.name):
                raise SpecError(f"pools[{pool.name!r}].{f.name}",
                                getattr(pool.backend_options, f.name),
                                f"backend {spec.backend!r} cannot set {f.name} per pool: set "
                                f"it for the whole cluster (per pool: {sorted(allowed)})")

