"""The guarantees the core gives every backend: a lost remote scheduler is reported, workers
nobody planned are retired, close during start loses nothing, close is one operation."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from dask_deploy import Cluster, SchedulerLost, from_name
from distributed import Client, Worker


def test_a_killed_remote_scheduler_sets_cluster_error(wait_until: Any) -> None:
    poll = 0.5
    with Cluster.from_name("local", n_workers=1, scheduler="remote", poll_interval=poll,
                           name="t-lost") as cluster, Client(cluster) as client:
        cluster.wait_for_workers(1, timeout=60)
        pid = client.run_on_scheduler(os.getpid)
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: cluster.error is not None, 30, "cluster.error is set")
        took = time.monotonic() - killed
        assert isinstance(cluster.error, SchedulerLost), cluster.error
        assert "scheduler of t-lost" in str(cluster.error)
        assert "killed" in str(cluster.error) or "signal" in str(cluster.error) \
            or "exit" in str(cluster.error), cluster.error  # the backend's reason
        print(f"SchedulerLost {took:.2f}s after the kill (poll_interval={poll})")
        # No worker is started into a dead scheduler, and waiting says why at once.
        with pytest.raises(SchedulerLost):
            cluster.wait_for_workers(2, timeout=30)


def test_a_worker_nobody_planned_is_retired(wait_until: Any) -> None:
    """A worker of this cluster that registers although no unit runs it (a stop lost during
    its start) is retired through the scheduler, and the cluster log says so."""

    async def main() -> None:
        async with from_name("fake", n_workers=1, asynchronous=True, name="t-unplanned",
                             security=False, poll_interval=0.2) as cluster:
            await cluster.wait_for_workers(1)
            stray = await Worker(cluster.scheduler_address, name="t-unplanned-99", nthreads=1,
                                 host="127.0.0.1")
            try:
                deadline = time.monotonic() + 30
                while stray.status.name not in ("closed", "closing", "closing_gracefully"):
                    assert time.monotonic() < deadline, "the unplanned worker is still running"
                    await asyncio.sleep(0.05)
                # The stray closing is not the scheduler having removed it yet, and the client's
                # scheduler_info copy follows later still: wait for the scheduler itself.
                async def names() -> set[str]:
                    info = await cluster.scheduler_comm.identity()
                    return {w["name"] for w in info["workers"].values()}

                while "t-unplanned-99" in await names():
                    assert time.monotonic() < deadline, "the scheduler still lists the unplanned worker"
                    await asyncio.sleep(0.05)
                assert len(cluster.plan) == 1
                logs = await cluster.get_logs(scheduler=False, workers=False)
                assert "t-unplanned-99" in logs["Cluster"] and "no planned unit" in logs["Cluster"]
            finally:
                await stray.close()

    asyncio.run(main())


def test_close_is_one_operation_for_every_caller() -> None:
    async def main() -> None:
        cluster = from_name("fake", n_workers=1, asynchronous=True, name="t-close2")
        await cluster
        stops = 0
        original = cluster._stop_units

        async def counted(names: Any) -> None:
            nonlocal stops
            stops += 1
            await original(names)

        cluster._stop_units = counted  # type: ignore[method-assign]
        await asyncio.gather(cluster.close(), cluster.close(), cluster.close())
        assert stops == 1 and cluster.status.name == "closed"

    asyncio.run(main())


def test_attach_to_a_scheduler_that_does_not_answer_is_one_line(agents_of: Any) -> None:
    import dataclasses

    from dask_deploy import ClusterSpec, DeployError, SchedulerSpec, attach
    from dask_deploy._state import new_record, save

    spec = ClusterSpec("local", "t-dead", scheduler=SchedulerSpec(placement="remote"),
                       shutdown_on_close=False)
    save(dataclasses.replace(new_record(spec, scheduler_address="tcp://127.0.0.1:9"), owner_pid=None))
    with pytest.raises(DeployError, match="does not answer") as e:
        attach("t-dead")
    assert "\n" not in str(e.value)
    assert agents_of("t-dead") == []  # nothing was started for it
