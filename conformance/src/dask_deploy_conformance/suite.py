"""The conformance checks, as test classes a backend's own test module subclasses.

:class:`ConformanceSuite` bundles every check; the groups (:class:`LifecycleChecks`,
:class:`ScalingChecks`, ...) can be subclassed alone. A check needs only the fixtures of
:mod:`dask_deploy_conformance.plugin` (``deploy_backend``, ``deploy_options``, ...), which
you override to point the suite at your backend. Checks skip, with the reason, what the
backend's capabilities do not claim or what ``deploy_faults`` cannot inject.

Every check drives the backend through the public ``SpecCluster`` API only, and waits for
conditions with a deadline (``deploy_timeout``), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ._support import (
    ClusterFactory,
    Faults,
    backend_info,
    connected,
    describe,
    discover,
    expected_workers,
    merge_options,
    plan,
    requested,
    wait_converged,
    wait_for,
)

__all__ = [
    "AdaptivityChecks",
    "ConformanceSuite",
    "DashboardChecks",
    "FaultChecks",
    "LeakChecks",
    "LifecycleChecks",
    "LogChecks",
    "OptionChecks",
    "OrphanChecks",
    "RemoteSchedulerChecks",
    "ScalingChecks",
    "SigtermChecks",
    "StateMachineChecks",
    "TaskSubprocessChecks",
]

requires = pytest.mark.deploy_requires
unless = pytest.mark.deploy_unless

#: Why a ``managed`` backend (a service starts its workers) skips the worker-option checks.
SERVICE_OPTIONS = ("the service starts every worker with its own threads, memory, environment "
                   "and resources (its own options); the backend refuses the generic ones")


def _fault(faults: Faults, name: str) -> Any:
    value = getattr(faults, name)
    if value is None:
        pytest.skip(f"deploy_faults.{name} is None: the backend cannot inject this fault")
    return value


def _status(cluster: Any) -> str:
    return str(getattr(cluster.status, "name", cluster.status))


def _compute(cluster: Any, timeout: float) -> None:
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        assert client.submit(operator.add, 1, 2).result(timeout=timeout) == 3


#: Event-loop turns after which ``close`` interrupts a start: every turn early on, where
#: the start awaits little steps, then coarser (a sweep, because where a start is
#: vulnerable depends on the backend and the core, not on wall time).
SWEEP = (*range(13), 16, 24, 32, 48, 64, 96, 128, 192, 256)

#: Checks that fail because of a known bug in dask-deploy's core, not in the backend. Marked
#: xfail(strict=True): the day the core is fixed they pass, and the strict mark tells us to
#: remove them from here.
CORE_BUGS: dict[str, str] = {}


def _core_bug(fn: Callable[..., Any]) -> Callable[..., Any]:
    reason = CORE_BUGS.get(fn.__name__)
    return pytest.mark.xfail(reason=reason, strict=True)(fn) if reason else fn


def close_during_start(factory: ClusterFactory, timeout: float, points: tuple[int, ...] = SWEEP,
                       ) -> list[tuple[int, str, Any]]:
    """Start clusters asynchronously and close each after ``point`` event-loop turns.

    Stops early once a start completes before the close (later points are not "during
    start"). Returns ``(point, status after close, spec)`` for each.
    """
    from dask_deploy import from_name

    out: list[tuple[int, str, Any]] = []

    async def one(point: int) -> bool:
        c = from_name(factory.backend, asynchronous=True, **factory.merged(n_workers=2))

        async def start() -> None:
            await c

        task = asyncio.ensure_future(start())
        for _ in range(point):
            await asyncio.sleep(0)
            if task.done():
                break
        done_before = task.done()
        await asyncio.wait_for(c.close(), timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout)
        out.append((point, _status(c), c.spec))
        return done_before

    async def main() -> None:
        for point in points:
            if await one(point):
                break

    asyncio.run(main())
    return out


#: The hooks that create something, and whether each needs ``scheduler="remote"``.
CREATING_CALLS = (("deploy_prepare", False), ("deploy_start_scheduler", True),
                  ("deploy_start_workers", False))


class Gate:
    """A pluggy wrapper (an extension of the cluster) that pauses one backend hook call.

    ``when="before"``: the call waits before the backend runs; ``"after"``: the backend has
    created what it creates and returned, and the result waits before the core sees it.
    The check then closes the cluster while the call is paused, and releases it.
    """

    def __init__(self, hook: str, when: str) -> None:
        self.hook, self.when = hook, when
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        for name, _ in CREATING_CALLS:
            setattr(self, name, self._wrapper(name))

    def _wrapper(self, name: str) -> Callable[..., Any]:
        from dask_deploy import hookimpl

        def wrapper() -> Any:
            result = yield
            if name != self.hook or result is None or self.reached.is_set():
                return result
            return self._gated(result)

        wrapper.__name__ = name
        return hookimpl(wrapper=True)(wrapper)  # type: ignore[no-any-return]

    async def _gated(self, call: Any) -> Any:
        if self.when == "before":
            await self._pause()
        result = await call
        if self.when == "after":
            await self._pause()
        return result

    async def _pause(self) -> None:
        self.reached.set()
        await self.release.wait()


def close_at_creating_calls(factory: ClusterFactory, timeout: float, remote: bool,
                            local: bool = True) -> list[tuple[str, Any]]:
    """Close a cluster while each creating hook call is paused, before and after the backend.

    Deterministic, unlike :func:`close_during_start`: every creating call of the contract
    (``CREATING_CALLS``) is caught at both points, with ``scheduler="local"`` where the call
    does not need a remote one, unless ``local`` is false (a ``managed`` backend's scheduler is
    always the service's). Returns ``(where, spec)`` for each.
    """
    from dask_deploy import from_name

    out: list[tuple[str, Any]] = []

    async def one(hook: str, when: str, placement: str) -> None:
        gate = Gate(hook, when)
        c = from_name(factory.backend, asynchronous=True, extensions={"gate": gate},
                      **factory.merged(n_workers=2, scheduler=placement))
        start = asyncio.ensure_future(c._start())
        where = f"{hook} ({when} the backend, scheduler={placement!r})"
        # The start may complete first (workers start in the reconcile loop after it).
        reached = asyncio.ensure_future(gate.reached.wait())
        await asyncio.wait({reached, start}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not gate.reached.is_set() and start.done() and start.exception() is None:
            await asyncio.wait({reached}, timeout=timeout)
        if not gate.reached.is_set():
            reached.cancel()
            with contextlib.suppress(BaseException):
                start.result()  # a start that failed says why
            raise AssertionError(f"the cluster never called {where}")
        closing = asyncio.ensure_future(c.close())
        while str(getattr(c.status, "name", c.status)) not in ("closing", "closed"):
            await asyncio.sleep(0)
        for _ in range(3):  # let close() reach its wait for the creating call
            await asyncio.sleep(0)
        gate.release.set()
        await asyncio.wait_for(closing, timeout)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(start, timeout)
        out.append((where, c.spec))

    async def main() -> None:
        for hook, needs_remote in CREATING_CALLS:
            if needs_remote and not remote:
                continue
            for when in ("before", "after"):
                await one(hook, when, "local" if local and not needs_remote else "remote")

    asyncio.run(main())
    return out


# --------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------


class LifecycleChecks:
    """Start, ``with`` / ``async with``, close twice, failed starts, status transitions."""

    def test_sync_start_compute_close(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=1)
        assert _status(cluster) == "running", describe(cluster)
        assert "://" in cluster.scheduler_address
        wait_converged(cluster, 1, deploy_timeout)
        _compute(cluster, deploy_timeout)
        cluster.close()
        assert _status(cluster) == "closed"

    def test_with_statement(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        with deploy_cluster(n_workers=1) as cluster:
            assert _status(cluster) == "running"
            wait_converged(cluster, 1, deploy_timeout)
        assert _status(cluster) == "closed"

    def test_async_with_and_status_transitions(self, deploy_cluster: ClusterFactory,
                                               deploy_timeout: float) -> None:
        from dask_deploy import from_name
        from distributed import Client

        order = ["created", "starting", "running", "closing", "closed"]
        seen: list[str] = []

        async def main() -> None:
            cluster = deploy_cluster.track(from_name(
                deploy_cluster.backend, asynchronous=True, **deploy_cluster.merged(n_workers=1)))
            stop = asyncio.Event()
            seen.append(_status(cluster))

            async def sample() -> None:
                while not stop.is_set():
                    s = _status(cluster)
                    if not seen or seen[-1] != s:
                        seen.append(s)
                    await asyncio.sleep(0)

            sampler = asyncio.ensure_future(sample())
            async with cluster:
                assert _status(cluster) == "running"
                await asyncio.wait_for(cluster.wait_for_workers(1), deploy_timeout)
                async with Client(cluster, asynchronous=True) as client:
                    assert await asyncio.wait_for(client.submit(operator.add, 1, 2), deploy_timeout) == 3
            await asyncio.sleep(0)
            stop.set()
            await sampler
            assert _status(cluster) == "closed"

        asyncio.run(main())
        assert seen[0] == "created" and seen[-1] == "closed", seen
        ranks = [order.index(s) if s in order else -1 for s in seen]
        assert -1 not in ranks and ranks == sorted(ranks), f"status went backwards or off-path: {seen}"

    def test_close_twice(self, deploy_cluster: ClusterFactory) -> None:
        from dask_deploy import from_name

        cluster = deploy_cluster(n_workers=1)
        cluster.close()
        cluster.close()
        assert _status(cluster) == "closed"

        async def main() -> None:
            c = from_name(deploy_cluster.backend, asynchronous=True, **deploy_cluster.merged())
            await c
            await c.close()
            await c.close()
            assert _status(c) == "closed"

        asyncio.run(main())

    def test_close_after_failed_start(self, deploy_cluster: ClusterFactory, deploy_faults: Faults) -> None:
        from dask_deploy import from_name

        broken = _fault(deploy_faults, "cluster_start_failure")
        with pytest.raises(Exception):  # noqa: B017 - any error, as long as start fails
            deploy_cluster(**broken)

        async def main() -> None:
            c = from_name(deploy_cluster.backend, asynchronous=True, **deploy_cluster.merged(**broken))
            with pytest.raises(Exception):  # noqa: B017
                await c
            await c.close()
            await c.close()
            assert _status(c) == "closed"

        asyncio.run(main())

    def test_close_during_start(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        for point, status, _ in close_during_start(deploy_cluster, deploy_timeout, points=SWEEP[:12]):
            assert status == "closed", (f"closed {point} event-loop turns into the start, the "
                                        f"status is now {status}")

    @_core_bug
    def test_close_reports_stop_failure(self, deploy_cluster: ClusterFactory, deploy_faults: Faults,
                                        deploy_timeout: float) -> None:
        from dask_deploy import BackendError

        failing = _fault(deploy_faults, "stop_failure")
        cluster = deploy_cluster(n_workers=1, **failing)
        wait_converged(cluster, 1, deploy_timeout)
        with pytest.raises(BackendError):
            cluster.close(timeout=deploy_timeout)
        assert _status(cluster) == "closed"

    def test_close_reports_stop_failure_async(self, deploy_cluster: ClusterFactory,
                                              deploy_faults: Faults, deploy_timeout: float) -> None:
        from dask_deploy import BackendError, from_name

        failing = _fault(deploy_faults, "stop_failure")

        async def main() -> None:
            c: Any = from_name(deploy_cluster.backend, asynchronous=True,
                               **deploy_cluster.merged(n_workers=1, **failing))
            await c
            await asyncio.wait_for(c.wait_for_workers(1), deploy_timeout)
            with pytest.raises(BackendError):
                await c.close()
            assert _status(c) == "closed"

        asyncio.run(main())

    def test_close_while_workers_start(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=2)
        cluster.close(timeout=deploy_timeout)
        assert _status(cluster) == "closed"


# --------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------


class ScalingChecks:
    """``scale(n)`` converges for any sequence, ``scale_down`` of names, cores and memory."""

    @requires("scale")
    def test_scale_sequences(self, deploy_cluster: ClusterFactory, deploy_profile: Any,
                             deploy_max_workers: int, deploy_timeout: float) -> None:
        from hypothesis import given

        from .strategies import scale_sequences

        cluster = deploy_cluster()

        @deploy_profile  # type: ignore[untyped-decorator]
        @given(scale_sequences(deploy_max_workers))
        def run(steps: list[tuple[int, bool]]) -> None:
            for n, settle in steps:
                cluster.scale(n)
                if settle:
                    wait_converged(cluster, n, deploy_timeout)
            wait_converged(cluster, steps[-1][0], deploy_timeout)

        run()

    @requires("scale")
    def test_scale_down_named_workers(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=3)
        wait_converged(cluster, 3, deploy_timeout)
        before = connected(cluster)

        def unit_of(worker: str) -> set[str]:
            return next(set(u.worker_names) for u in cluster.units.values() if worker in u.worker_names)

        by_name = sorted(before)[0]
        gone = unit_of(by_name)
        cluster.sync(cluster.scale_down, [by_name])  # by name
        left = {n: a for n, a in before.items() if n not in gone}
        wait_for(lambda: connected(cluster) == left and plan(cluster) == set(left), deploy_timeout,
                 f"only {by_name}'s unit is gone and the others run on unchanged", cluster)

        by_address = sorted(left)[-1]
        gone = unit_of(by_address)
        cluster.sync(cluster.scale_down, [left[by_address]])  # by address
        left = {n: a for n, a in left.items() if n not in gone}
        wait_for(lambda: connected(cluster) == left and plan(cluster) == set(left), deploy_timeout,
                 f"only {by_address}'s unit is gone and the others run on unchanged", cluster)

    @requires("scale")
    @unless("managed", reason=SERVICE_OPTIONS)
    def test_scale_by_cores_and_memory(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        cluster = deploy_cluster(threads_per_worker=2, memory_limit="300MiB")
        cluster.scale(cores=4)
        wait_converged(cluster, 2, deploy_timeout)  # whole units: 2 workers or more
        want = expected_workers(cluster, 2)
        workers = cluster.scheduler_info["workers"].values()
        assert [w["nthreads"] for w in workers] == [2] * want, describe(cluster)
        cluster.scale(memory="900MiB")
        wait_converged(cluster, 3, deploy_timeout)
        want = expected_workers(cluster, 3)
        limits = [w["memory_limit"] for w in cluster.scheduler_info["workers"].values()]
        assert limits == [300 * 2**20] * want, (f"memory limits {limits}, expected 300MiB for "
                                                f"each of {want} workers")


# --------------------------------------------------------------------------------------
# Generic options
# --------------------------------------------------------------------------------------

#: A worker preload (Python text) that leaves a mark on the worker object it ran for.
_MARK_PRELOAD = ("def dask_setup(worker):\n"
                 "    worker.dask_deploy_conformance_preload = 'ran'\n")


def _observe_worker(test_pid: int, variable: str) -> Callable[..., dict[str, Any]]:
    """Run in a worker (``client.run``): what the worker itself has of the generic options."""

    def observe(dask_worker: Any) -> dict[str, Any]:
        import os

        state = getattr(dask_worker, "state", dask_worker)
        manager = getattr(dask_worker, "memory_manager", None)
        return {"in_process": os.getpid() == test_pid, "env": os.environ.get(variable),
                "nthreads": state.nthreads,
                "memory_limit": getattr(manager, "memory_limit", None),
                "resources": dict(getattr(state, "total_resources", {}) or {}),
                "preload": getattr(dask_worker, "dask_deploy_conformance_preload", None)}

    return observe


class OptionChecks:
    """Every generic option reaches the worker process itself, not just the spec."""

    @unless("managed", reason=SERVICE_OPTIONS)
    def test_generic_options_reach_the_worker(self, deploy_cluster: ClusterFactory,
                                              deploy_timeout: float) -> None:
        import os

        from distributed import Client

        variable, value = "DASK_DEPLOY_CONFORMANCE_ENV", uuid.uuid4().hex[:8]
        cluster = deploy_cluster(n_workers=1, threads_per_worker=2, memory_limit="300MiB",
                                 env={variable: value}, resources={"conformance": 2},
                                 worker_options={"preload": [_MARK_PRELOAD]})
        wait_converged(cluster, 1, deploy_timeout)
        with Client(cluster, set_as_default=False) as client:
            seen = client.run(_observe_worker(os.getpid(), variable))
        assert seen, describe(cluster)
        for address, got in seen.items():
            where = f"on worker {address}: {got}"
            if not got["in_process"]:  # an in-process worker shares the test's environment
                assert got["env"] == value, f"env={{{variable!r}: {value!r}}} is not set {where}"
            assert got["nthreads"] == 2, f"threads_per_worker=2 is not applied {where}"
            assert got["memory_limit"] == 300 * 2**20, f"memory_limit='300MiB' is not applied {where}"
            assert got["resources"].get("conformance") == 2, f"resources are not applied {where}"
            assert got["preload"] == "ran", f"worker_options preload did not run {where}"

    @requires("nanny")
    def test_nanny_option_runs_workers_under_a_nanny(self, deploy_cluster: ClusterFactory,
                                                     deploy_timeout: float) -> None:
        """``nanny=True``: each worker has a live ``distributed.Nanny``, and a nanny plugin
        (``Environ``, which restarts the worker through its nanny) reaches the worker."""
        from distributed import Client
        from distributed.diagnostics.plugin import Environ

        variable, value = "DASK_DEPLOY_CONFORMANCE_NANNY", uuid.uuid4().hex[:8]
        cluster = deploy_cluster(n_workers=1, nanny=True)
        wait_converged(cluster, 1, deploy_timeout)
        with Client(cluster, set_as_default=False) as client:
            workers = client.scheduler_info()["workers"]
            assert workers and all(w.get("nanny") for w in workers.values()), \
                f"nanny=True, but the scheduler lists workers without a nanny: {describe(cluster)}"
            # The nanny itself answers (run on the nannies, not on the workers).
            kinds = client.run(lambda dask_worker: type(dask_worker).__name__, nanny=True)
            assert set(kinds.values()) == {"Nanny"}, kinds
            client.register_plugin(Environ({variable: value}))

            def seen() -> bool:
                got = client.run(lambda: __import__("os").environ.get(variable))
                return bool(got) and set(got.values()) == {value}

            wait_for(seen, deploy_timeout, "the nanny plugin Environ to reach the worker", cluster)
        assert cluster.error is None, describe(cluster)


# --------------------------------------------------------------------------------------
# Adaptivity
# --------------------------------------------------------------------------------------


class _Sampler:
    """Samples a cluster from a background thread: plan sizes and connected workers."""

    def __init__(self, cluster: Any, check: Callable[[Any], str | None] | None = None) -> None:
        self.cluster, self.check = cluster, check
        self.sizes: list[int] = []
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(RuntimeError):  # a set changed size while we read it
                size = len(plan(self.cluster))
                if not self.sizes or self.sizes[-1] != size:
                    self.sizes.append(size)
                if self.check is not None and (problem := self.check(self.cluster)):
                    self.violations.append(problem)
            time.sleep(0.01)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _adapt(cluster: Any, minimum: int, maximum: int, wait_count: int = 3) -> Any:
    return cluster.adapt(minimum=minimum, maximum=maximum, interval="100ms", wait_count=wait_count,
                         target_duration="10ms")


def _finish(futures: list[Any], timeout: float, cluster: Any) -> None:
    """Wait for tasks with a deadline (a broken backend must fail the check, not hang it)."""
    wait_for(lambda: all(f.done() for f in futures), timeout,
             f"all {len(futures)} submitted tasks finished", cluster)
    errors = [f for f in futures if f.status == "error"]
    assert not errors, f"tasks failed: {[f.exception() for f in errors[:3]]}"


def _worker_name() -> Callable[[], str]:
    """A task that returns the name of the worker that runs it (made here, so it pickles by
    value: a worker elsewhere need not import this module)."""

    def task() -> str:
        from distributed import get_worker

        return str(get_worker().name)

    return task


def _hold(event_name: str) -> Any:
    """A task that runs until the distributed Event ``event_name`` is set (held load)."""

    def task(i: int) -> int:
        from distributed import Event

        Event(event_name).wait()
        return i

    return task


class AdaptivityChecks:
    """Under load the target stays within bounds, converges, spares starting workers, no flapping."""

    @requires("scale")
    def test_adapt_within_bounds_under_load(self, deploy_cluster: ClusterFactory, deploy_profile: Any,
                                            deploy_max_workers: int, deploy_timeout: float) -> None:
        from distributed import Client
        from hypothesis import given
        from hypothesis import strategies as st

        from .strategies import load_sequences

        cluster = deploy_cluster()
        top = min(deploy_max_workers, 3)
        client = Client(cluster, set_as_default=False)
        try:
            @deploy_profile  # type: ignore[untyped-decorator]
            @given(st.integers(0, 1), st.integers(1, top), load_sequences())
            def run(lo: int, span: int, loads: list[tuple[int, float]]) -> None:
                hi = max(lo, span)
                _adapt(cluster, lo, hi)
                top_workers = expected_workers(cluster, hi)  # a plan is whole units
                wait_for(lambda: lo <= len(plan(cluster)) <= top_workers, deploy_timeout,
                         f"adapt({lo}, {hi}) brought the plan within bounds", cluster)
                with _Sampler(cluster) as sampler:
                    for n_tasks, duration in loads:
                        futures = client.map(time.sleep, [duration] * n_tasks, pure=False)
                        _finish(futures, deploy_timeout, cluster)
                        del futures  # results held in memory keep their workers alive
                    wait_converged(cluster, lo, deploy_timeout)
                outside = [s for s in sampler.sizes if not lo <= s <= top_workers]
                assert not outside, (f"the plan left [{lo}, {hi}] (in whole units: up to "
                                     f"{top_workers}) under load: sizes {sampler.sizes}")

            run()
        finally:
            client.close()

    @requires("scale")
    def test_adapt_keeps_starting_workers(self, deploy_cluster: ClusterFactory, deploy_faults: Faults,
                                          deploy_max_workers: int, deploy_timeout: float) -> None:
        from distributed import Client, Event

        slow = _fault(deploy_faults, "slow_start")
        cluster = deploy_cluster(**slow)
        top = min(deploy_max_workers, 3)
        ever_connected: set[str] = set()
        removed_early: list[str] = []
        last_plan: set[str] = set()

        def check(c: Any) -> str | None:
            nonlocal last_plan
            planned, seen = plan(c), set(connected(c))
            ever_connected.update(seen)
            for name in last_plan - planned:
                if name not in ever_connected:
                    removed_early.append(name)
            last_plan = planned
            return None

        name = f"conf-hold-{uuid.uuid4().hex[:8]}"
        with Client(cluster, set_as_default=False) as client:
            futures = client.map(_hold(name), range(2 * top), pure=False)
            with _Sampler(cluster, check):
                _adapt(cluster, 0, top)
                wait_converged(cluster, top, deploy_timeout)
                assert not removed_early, (f"workers closed while still starting under load: "
                                           f"{removed_early}\n{describe(cluster)}")
                Event(name, client=client).set()
                _finish(futures, deploy_timeout, cluster)
                del futures  # results held in memory keep their workers alive
                wait_converged(cluster, 0, deploy_timeout)

    @requires("scale")
    def test_adapt_no_flapping(self, deploy_cluster: ClusterFactory, deploy_max_workers: int,
                               deploy_timeout: float) -> None:
        from distributed import Client, Event

        cluster = deploy_cluster()
        top = min(deploy_max_workers, 2)
        name = f"conf-hold-{uuid.uuid4().hex[:8]}"
        with Client(cluster, set_as_default=False) as client:
            futures = client.map(_hold(name), range(2 * top), pure=False)
            _adapt(cluster, 1, top, wait_count=3)
            wait_converged(cluster, top, deploy_timeout)
            steady = connected(cluster)
            # Held load: for ten wait windows nothing may be replaced, stopped or added.
            window = 10 * 3 * 0.1
            deadline = time.monotonic() + window
            while time.monotonic() < deadline:
                now = connected(cluster)
                assert now == steady, (f"workers changed under constant load (flapping): "
                                       f"{steady} -> {now}\n{describe(cluster)}")
                time.sleep(0.02)
            with _Sampler(cluster) as sampler:
                Event(name, client=client).set()
                _finish(futures, deploy_timeout, cluster)
                del futures
                wait_converged(cluster, 1, deploy_timeout)
            ups = [b for a, b in zip(sampler.sizes, sampler.sizes[1:], strict=False) if b > a]
            assert not ups, f"the cluster grew again while idle (flapping): sizes {sampler.sizes}"
            assert cluster.error is None, cluster.error

    @requires("scale")
    @unless("managed", reason=SERVICE_OPTIONS)
    def test_pools_scale_and_adapt_apart(self, deploy_cluster: ClusterFactory,
                                         deploy_timeout: float) -> None:
        """Two pools (differing in generic options only): each scales on its own, and a task
        that needs one pool's resource makes that pool adapt up, not the other."""
        from distributed import Client

        cluster = deploy_cluster(pools={"plain": {}, "tagged": {"resources": {"CONFTAG": 1}}})
        mine = {p: lambda p=p: set(cluster.pool_workers(p)) for p in ("plain", "tagged")}
        cluster.scale(1, pool="plain")
        cluster.scale(1, pool="tagged")
        wait_converged(cluster, 2 * expected_workers(cluster, 1), deploy_timeout)
        assert all(f"-{p}-" in w for p in mine for w in mine[p]()), describe(cluster)
        cluster.scale(0, pool="plain")  # the other pool keeps its units
        wait_for(lambda: plan(cluster) == mine["tagged"]() != set()
                 and set(connected(cluster)) == plan(cluster), deploy_timeout,
                 "scale(0, pool='plain') left only the tagged pool", cluster)
        cluster.scale(0, pool="tagged")
        wait_converged(cluster, 0, deploy_timeout)
        cluster.adapt(interval="100ms", wait_count=3, target_duration="10ms")  # every pool
        with Client(cluster, set_as_default=False) as client:
            ran_on = client.submit(_worker_name(), resources={"CONFTAG": 1}, pure=False)
            _finish([ran_on], deploy_timeout, cluster)
            assert "-tagged-" in ran_on.result(), ran_on.result()
            assert not mine["plain"](), f"a plain worker for tagged work\n{describe(cluster)}"
            del ran_on  # a result held in memory keeps its worker alive
        wait_converged(cluster, 0, deploy_timeout)


# --------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------


class FaultChecks:
    """Dead workers are replaced; hung starts time out; repeated failures trip the limit."""

    def test_dead_worker_is_replaced(self, deploy_cluster: ClusterFactory, deploy_faults: Faults,
                                     deploy_timeout: float) -> None:
        kill = _fault(deploy_faults, "kill")
        cluster = deploy_cluster(n_workers=2)
        wait_converged(cluster, 2, deploy_timeout)
        before = connected(cluster)
        victim = sorted(before)[0]
        kill(cluster, victim)
        wait_for(lambda: connected(cluster).get(victim) != before[victim], deploy_timeout,
                 f"the scheduler lost the killed worker {victim}", cluster)
        wait_converged(cluster, 2, deploy_timeout)
        after = connected(cluster)
        assert after[victim] != before[victim], "the killed worker was not replaced"
        # The victim's unit is replaced as a whole (its siblings restart with it); workers
        # of other units must run on untouched.
        unit = next((set(u.worker_names) for u in cluster.units.values()
                     if victim in u.worker_names), {victim})
        others = {n: a for n, a in before.items() if n not in unit}
        assert {n: after[n] for n in others} == others, (
            f"workers of other units than the killed one were restarted too: {others} -> {after}")

    def test_never_connecting_start_fails_after_timeout(
            self, deploy_cluster: ClusterFactory, deploy_faults: Faults, deploy_timeout: float) -> None:
        from dask_deploy import CrashLoopError

        hang = _fault(deploy_faults, "never_connects")
        cluster = deploy_cluster(**merge_options(hang, {"n_workers": 1, "start_timeout": 2,
                                                        "max_failures": 2}))
        wait_for(lambda: cluster.error is not None, deploy_timeout + 10,
                 "the never-connecting starts tripped the crash-loop limit", cluster)
        assert isinstance(cluster.error, CrashLoopError)
        assert "connect" in str(cluster.error), f"the error does not say why: {cluster.error}"
        # The hung units were stopped when they were failed: the backend runs none.
        handles = discover(backend_info(deploy_cluster.backend), cluster.spec)
        units = [h for h in handles or [] if h.name in cluster.units]
        assert not units, f"units that never connected still run after they failed: {units}"

    def test_crash_loop_limit(self, deploy_cluster: ClusterFactory, deploy_faults: Faults,
                              deploy_timeout: float) -> None:
        from dask_deploy import CrashLoopError

        failing = _fault(deploy_faults, "start_failure")
        # A long start timeout: the failures must be *reported* by the backend (poll FAILED),
        # not noticed because the workers never connected.
        cluster = deploy_cluster(**merge_options(failing, {"n_workers": 2, "max_failures": 3,
                                                           "start_timeout": 10 * deploy_timeout}))
        wait_for(lambda: cluster.error is not None, deploy_timeout,
                 "repeated start failures tripped the crash-loop limit (does deploy_poll report "
                 "FAILED for a worker that exited with an error?)", cluster)
        assert isinstance(cluster.error, CrashLoopError)
        assert "max_failures" in str(cluster.error), f"unclear crash-loop error: {cluster.error}"
        with pytest.raises(CrashLoopError):
            cluster.wait_for_workers(2, timeout=deploy_timeout)
        assert not connected(cluster)


# --------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------


class LogChecks:
    """Scheduler and worker logs are readable, also for a worker that died."""

    def test_scheduler_and_worker_logs(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=1)
        wait_converged(cluster, 1, deploy_timeout)
        (unit,) = cluster.units
        worker = next(iter(plan(cluster)))
        logs = cluster.get_logs()
        assert "Scheduler" in logs, sorted(logs)
        assert unit in logs, f"get_logs() has no entry for unit {unit}: {sorted(logs)}"
        text = cluster.sync(cluster.logs_of, unit)
        assert worker in text, f"the log of {unit} does not mention its worker {worker}:\n{text[-2000:]}"

    @requires("logs_after_death")
    def test_logs_of_dead_worker(self, deploy_cluster: ClusterFactory, deploy_faults: Faults,
                                 deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=1)
        wait_converged(cluster, 1, deploy_timeout)
        (unit,) = cluster.units
        worker = next(iter(plan(cluster)))
        if deploy_faults.kill is not None:
            address = connected(cluster)[worker]
            deploy_faults.kill(cluster, worker)
            wait_for(lambda: connected(cluster).get(worker) != address, deploy_timeout,
                     f"the killed worker {worker} left the scheduler", cluster)
        cluster.scale(0)
        wait_converged(cluster, 0, deploy_timeout)
        text = cluster.sync(cluster.logs_of, unit)
        assert worker in text, f"the log of the dead unit {unit} is lost or empty:\n{text[-2000:]}"
        assert unit in cluster.get_logs(), "get_logs() forgot the dead unit"


# --------------------------------------------------------------------------------------
# Dashboard
# --------------------------------------------------------------------------------------


def _get(url: str, timeout: float) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read(200_000).decode(errors="replace")


class DashboardChecks:
    """The dashboard the cluster reports is served."""

    @requires("dashboard")
    def test_dashboard_served(self, deploy_cluster: ClusterFactory, deploy_capabilities: frozenset[str],
                              deploy_timeout: float) -> None:
        # A managed backend's scheduler is always the service's (remote).
        placements = [*(["local"] if "managed" not in deploy_capabilities else []),
                      *(["remote"] if "remote_scheduler" in deploy_capabilities else [])]
        for placement in placements:
            cluster = deploy_cluster(scheduler=placement)
            link = cluster.dashboard_link
            assert link and link.startswith("http"), f"no dashboard link ({placement} scheduler): {link!r}"
            parts = urllib.parse.urlsplit(link)  # keep the query: the proxy's token
            health = urllib.parse.urlunsplit(parts._replace(path=parts.path.rsplit("/status", 1)[0]
                                                            + "/health"))
            try:
                status, body = _get(health, deploy_timeout)
                assert status == 200 and body.strip() == "ok", (status, body[:200])
                status, body = _get(link, deploy_timeout)
            except OSError as e:
                raise AssertionError(f"the dashboard of the {placement} scheduler is not served at "
                                     f"{link}: {e}") from e
            assert status == 200 and "Dask" in body, f"{link} did not serve the dashboard ({status})"
            cluster.close()


# --------------------------------------------------------------------------------------
# Leaks
# --------------------------------------------------------------------------------------


class LeakChecks:
    """After close, a failed start and a close during start nothing of the cluster runs."""

    def test_discover_finds_what_runs(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=2)
        wait_converged(cluster, 2, deploy_timeout)
        handles = discover(deploy_cluster.info, cluster.spec)
        if handles is None:
            pytest.skip("the backend does not implement deploy_discover")
        assert handles, "deploy_discover finds nothing while the cluster runs two workers"
        assert {h.cluster for h in handles} == {cluster.name}, handles

    def test_no_leak_after_close(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=2)
        wait_converged(cluster, 2, deploy_timeout)
        cluster.scale(3)
        wait_converged(cluster, 3, deploy_timeout)
        cluster.scale(1)
        wait_converged(cluster, 1, deploy_timeout)
        cluster.scale(2)  # close while one is starting (requested, maybe not connected)
        wait_for(lambda: len(requested(cluster)) == expected_workers(cluster, 2), deploy_timeout,
                 "the second unit was requested", cluster, interval=0.001)
        cluster.close()
        leaks = deploy_cluster.leaks(cluster.name, cluster.spec)
        assert not leaks, "still running after close:\n  " + "\n  ".join(leaks)

    def test_no_leak_after_failed_start(self, deploy_cluster: ClusterFactory, deploy_faults: Faults) -> None:
        broken = _fault(deploy_faults, "cluster_start_failure")
        opts = deploy_cluster.merged(n_workers=1, **broken)
        with pytest.raises(Exception):  # noqa: B017
            deploy_cluster(**opts)
        from dask_deploy._options import build_spec

        # The backend's own options too: a backend may need them to look (its server's address).
        spec, _ = build_spec(deploy_cluster.backend, {**deploy_cluster.merged(n_workers=1),
                                                      "name": opts["name"]})
        leaks = deploy_cluster.leaks(opts["name"], spec)
        assert not leaks, "still running after a failed start:\n  " + "\n  ".join(leaks)

    @_core_bug
    def test_no_leak_after_close_during_start(self, deploy_cluster: ClusterFactory,
                                              deploy_timeout: float) -> None:
        for point, _, spec in close_during_start(deploy_cluster, deploy_timeout):
            leaks = deploy_cluster.leaks(spec.name, spec)
            assert not leaks, (f"still running after a close {point} event-loop turns into the "
                               "start:\n  " + "\n  ".join(leaks))


    def test_no_leak_after_close_at_each_creating_call(self, deploy_cluster: ClusterFactory,
                                                      deploy_capabilities: frozenset[str],
                                                      deploy_timeout: float) -> None:
        remote = "remote_scheduler" in deploy_capabilities
        local = "managed" not in deploy_capabilities
        for where, spec in close_at_creating_calls(deploy_cluster, deploy_timeout, remote, local):
            leaks = deploy_cluster.leaks(spec.name, spec)
            assert not leaks, (f"still running after a close while {where} was in flight:\n  "
                               + "\n  ".join(leaks))


# --------------------------------------------------------------------------------------
# Remote scheduler
# --------------------------------------------------------------------------------------


class RemoteSchedulerChecks:
    """``scheduler="remote"``: the backend's scheduler serves, logs, and is stopped on close."""

    @requires("remote_scheduler")
    def test_remote_scheduler(self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        cluster = deploy_cluster(scheduler="remote", n_workers=1)
        wait_converged(cluster, 1, deploy_timeout)
        _compute(cluster, deploy_timeout)
        logs = cluster.get_logs()
        assert logs.get("Scheduler"), "the remote scheduler's log is empty"
        cluster.close()
        leaks = deploy_cluster.leaks(cluster.name, cluster.spec)
        assert not leaks, "still running after close:\n  " + "\n  ".join(leaks)


# --------------------------------------------------------------------------------------
# The state machine
# --------------------------------------------------------------------------------------


class StateMachineChecks:
    """Scale, adapt, load, kill, inject start failures and close in generated orders."""

    @requires("scale")
    def test_state_machine(self, deploy_cluster: ClusterFactory, deploy_faults: Faults,
                           deploy_profile: Any,
                           deploy_max_workers: int, deploy_timeout: float) -> None:
        from hypothesis.stateful import run_state_machine_as_test

        from ._machine import machine_for

        machine = machine_for(deploy_cluster, deploy_faults, deploy_max_workers, deploy_timeout)
        run_state_machine_as_test(machine, settings=deploy_profile)


# pytest runs inherited tests in reverse MRO order: the last base class's tests first.
from ._orphan_checks import OrphanChecks  # noqa: E402 - it uses the helpers above
from ._subprocess_checks import SigtermChecks, TaskSubprocessChecks  # noqa: E402


class ConformanceSuite(StateMachineChecks, OrphanChecks, SigtermChecks, TaskSubprocessChecks,
                       RemoteSchedulerChecks, LeakChecks,
                       DashboardChecks, LogChecks, FaultChecks, AdaptivityChecks, OptionChecks,
                       ScalingChecks,
                       LifecycleChecks):
    """Every check. Subclass it as ``TestXxxConformance`` and override the ``deploy_*`` fixtures."""

