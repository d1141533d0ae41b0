"""The control plane's work per unit is constant: counted, not timed (timing is in
``benchmarks/bench_control_plane.py``).

A no-op backend registered in this process counts the hook calls and the handles each
one carries. Scaling N units up and down must take one batched start, one batched stop,
and polls that never carry a unit the round is about to stop; the handles kept for dead
units' logs stay bounded, and an unchanged unit's record is not rebuilt every round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from dask_deploy import (
    BackendInfo,
    ClusterSpec,
    Handle,
    Phase,
    SchedulerSpec,
    SpecCluster,
    Status,
    Unit,
    hookimpl,
    register_backend,
)


class Noop:
    """Starts nothing: every unit is RUNNING at once and its workers never connect."""

    def __init__(self) -> None:
        self.calls: dict[str, list[int]] = {"start": [], "stop": [], "poll": []}
        self.started = 0
        self.stopped = 0
        self.changed = asyncio.Event()

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        self.calls["start"].append(len(units))
        self.started += len(units)
        self.changed.set()
        return [Handle("t-noop", cluster.name, u.name, u.name) for u in units]

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        self.calls["stop"].append(len(handles))
        self.stopped += len(handles)
        self.changed.set()

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        self.calls["poll"].append(len(handles))
        self.changed.set()
        return [Status(Phase.RUNNING)] * len(handles)

    async def until(self, what: str, n: int) -> None:
        while getattr(self, what) < n:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 60)


@pytest.fixture
async def noop_cluster() -> Any:
    register_backend(BackendInfo("t-noop", "counts hook calls", lambda spec: Noop(),
                                 capabilities=frozenset({"loopback"})))
    # A long poll interval: rounds run only when scale() asks for one.
    spec = ClusterSpec("t-noop", "t-noop", scheduler=SchedulerSpec(dashboard_address=None),
                       start_timeout=3600, poll_interval=3600)
    cluster = await SpecCluster(spec, asynchronous=True, extensions={}, quiet=True)
    try:
        yield cluster
    finally:
        await cluster.close()


async def _round(cluster: SpecCluster) -> None:
    await cluster._reconcile_once()


N = 3000


async def test_scaling_n_units_takes_one_batch_each_way(noop_cluster: SpecCluster) -> None:
    backend: Noop = noop_cluster.backend  # type: ignore[assignment]
    noop_cluster.scale(N)
    await backend.until("started", N)
    await _round(noop_cluster)
    assert backend.calls["start"] == [N]  # one batch, every unit in it
    polls_before = len(backend.calls["poll"])
    noop_cluster.scale(0)
    await backend.until("stopped", N)
    assert backend.calls["stop"] == [N]
    # The round that stopped them polled none of them (they were stopped whatever their phase).
    assert all(n == 0 for n in backend.calls["poll"][polls_before:])
    assert not noop_cluster.handles and not noop_cluster._observed


async def test_partial_scale_down_drops_the_newest_and_keeps_dead_handles_bounded(
        noop_cluster: SpecCluster) -> None:
    backend: Noop = noop_cluster.backend  # type: ignore[assignment]
    noop_cluster.scale(N)
    await backend.until("started", N)
    noop_cluster.scale(N // 3)
    await backend.until("stopped", N - N // 3)
    assert backend.calls["stop"] == [N - N // 3]
    assert sorted(noop_cluster.units, key=lambda u: int(u.rpartition("-")[2])) == \
        [f"t-noop-{i}" for i in range(N // 3)]  # none connected: the newest went first
    dead = list(noop_cluster._dead)
    assert dead == [f"t-noop-{i}" for i in range(N - 200, N)]  # the last ones stopped
    # scale_down by worker name (Adaptive's way) finds each unit without a scan.
    await noop_cluster.scale_down([f"t-noop-{i}" for i in range(10)])
    assert backend.calls["stop"][-1] == 10 and len(noop_cluster.units) == N // 3 - 10
    assert len(noop_cluster._dead) == 200


async def test_an_unchanged_unit_keeps_its_record(noop_cluster: SpecCluster) -> None:
    backend: Noop = noop_cluster.backend  # type: ignore[assignment]
    noop_cluster.scale(5)
    await backend.until("started", 5)
    await _round(noop_cluster)  # PENDING -> RUNNING: a new record
    first = dict(noop_cluster._observed)
    assert all(o.phase is Phase.RUNNING for o in first.values())
    await _round(noop_cluster)
    assert all(noop_cluster._observed[n] is o for n, o in first.items())
