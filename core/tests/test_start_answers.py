"""The core's side of two contract points: what a start hook answers, and when a crash loop
is published.

* ``deploy_start_workers`` must return one handle per unit, in the units' order, named after
  the unit. Any other answer is refused with one error naming the hook and the mismatch, and
  counts as a failed start (so the crash-loop limit applies), instead of a handle kept under
  another unit's name (polled, stopped and logged as the wrong unit).
* ``cluster.error`` (the crash loop) is set only after the round's failed units were
  stopped: whoever sees the error and then asks the backend what runs finds none of them.

Both use the in-process ``fake`` backend of dask-deploy-conformance, with one hook changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from dask_deploy import (
    ClusterSpec,
    CrashLoopError,
    Handle,
    Unit,
    from_name,
    hookimpl,
    register_backend,
)
from dask_deploy_conformance import FakeBackend, wait_for
from dask_deploy_conformance._fake import INFO as FAKE
from dask_deploy_conformance._fake import running


def _register(name: str, cls: type[FakeBackend]) -> str:
    register_backend(dataclasses.replace(FAKE, name=name, factory=cls, extra=""))
    return name


class Reversed(FakeBackend):
    """Returns the handles of a batch in reverse order."""

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        handles = await super().deploy_start_workers(cluster, scheduler_address, units)
        return handles[::-1]


class DropsOne(FakeBackend):
    """Returns one handle fewer than it was asked for (the last unit still starts)."""

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        handles = await super().deploy_start_workers(cluster, scheduler_address, units)
        return handles[:-1]


class Renames(FakeBackend):
    """Names each handle after its backend id instead of its unit."""

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        handles = await super().deploy_start_workers(cluster, scheduler_address, units)
        return [dataclasses.replace(h, name=f"job-{i}") for i, h in enumerate(handles)]


@pytest.mark.parametrize(("cls", "detail"), [
    (Reversed, "not in the units' order"),
    (DropsOne, "1 handles for 2 units"),
    (Renames, "units it was not asked for"),
])
def test_mismatched_handles_are_refused_and_count_as_failed_starts(cls: type[FakeBackend],
                                                                   detail: str) -> None:
    backend = _register(f"t-answer-{cls.__name__.lower()}", cls)
    # n_workers: both units are planned on the cluster's loop at once, so one batch asks for both.
    with from_name(backend, n_workers=2, max_failures=2, poll_interval=0.05) as cluster:
        wait_for(lambda: cluster.error is not None, 60, "the refused starts tripped max_failures",
                 cluster)
        assert isinstance(cluster.error, CrashLoopError)
        message = str(cluster.error)
        assert "deploy_start_workers" in message and detail in message, message
        assert "handle.name == unit.name" in message, message
        if cls is Reversed:
            # Every handle named a unit of the batch: the core stopped each one it refused.
            # (A handle under another name, or none, can only be stopped by that name.)
            wait_for(lambda: not running(cluster.name) and not cluster.scheduler_info["workers"],
                     30, "the refused units were stopped", cluster)


class WatchesStops(FakeBackend):
    """Records what the cluster's error was while its failed units were being stopped."""

    cluster: Any = None
    seen: list[Any] = []

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        type(self).seen.append(self.cluster.error if self.cluster is not None else "unset")
        await super().deploy_stop_workers(cluster, handles)


def test_crash_loop_is_published_after_the_failed_units_are_stopped() -> None:
    backend = _register("t-watches-stops", WatchesStops)
    WatchesStops.seen = []
    with from_name(backend, n_workers=0, fail_start=True, max_failures=1,
                   poll_interval=0.05) as cluster:
        cluster.backend.cluster = cluster
        cluster.scale(1)
        wait_for(lambda: cluster.error is not None, 60, "the failed start tripped max_failures",
                 cluster)
        # The round that tripped the limit stopped the failed unit before it set the error.
        assert WatchesStops.seen and WatchesStops.seen[0] is None, WatchesStops.seen
        assert not running(cluster.name)
