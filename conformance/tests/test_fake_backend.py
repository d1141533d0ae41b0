"""The fake backend's fault switches each do what they say (the suite relies on them)."""

from __future__ import annotations

import asyncio

import pytest
from dask_deploy import BackendError, CrashLoopError, SpecError, from_name
from dask_deploy_conformance import FakeOptions
from dask_deploy_conformance._fake import _WORLD, running
from dask_deploy_conformance._support import connected, wait_for

TIMEOUT = 60


def _phases(name: str) -> list[str]:
    return [u.phase.value for u in _WORLD.get(name, {}).values()]


def test_options_are_validated() -> None:
    with pytest.raises(SpecError, match="start_delay"):
        FakeOptions(start_delay=-1)
    with pytest.raises(SpecError, match="fail_start"):
        FakeOptions(fail_start="yes")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="not an option"):
        from_name("fake", no_such_option=1)


def test_workers_are_in_process_and_leave_nothing() -> None:
    with from_name("fake", n_workers=3) as cluster:
        cluster.wait_for_workers(3, timeout=TIMEOUT)
        assert len(running(cluster.name)) == 3
    assert running(cluster.name) == []


def test_start_delay_keeps_units_pending() -> None:
    with from_name("fake", n_workers=1, start_delay=30.0) as cluster:
        wait_for(lambda: _phases(cluster.name) == ["pending"], TIMEOUT, "the unit is pending")
        assert not connected(cluster)


def test_fail_start_trips_the_crash_loop() -> None:
    with (
        from_name("fake", n_workers=1, fail_start=True, max_failures=2) as cluster,
        pytest.raises(CrashLoopError, match="injected start failure"),
    ):
        cluster.wait_for_workers(1, timeout=TIMEOUT)


def test_refuse_start_is_counted_as_failures() -> None:
    with (
        from_name("fake", n_workers=1, refuse_start=True, max_failures=2) as cluster,
        pytest.raises(CrashLoopError, match="refused"),
    ):
        cluster.wait_for_workers(1, timeout=TIMEOUT)


def test_never_connect_runs_but_never_joins() -> None:
    with (
        from_name("fake", n_workers=1, never_connect=True, start_timeout=1, max_failures=1) as cluster,
        pytest.raises(CrashLoopError, match="did not connect"),
    ):
        cluster.wait_for_workers(1, timeout=TIMEOUT)


def test_a_queued_unit_waits_beyond_start_timeout_unless_queue_timeout_says_otherwise() -> None:
    # start_delay keeps a unit PENDING ("queued"): start_timeout only counts once it runs.
    with from_name("fake", n_workers=1, start_delay=2, start_timeout=0.5, max_failures=1) as cluster:
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        assert cluster.error is None
    with (
        from_name("fake", n_workers=1, start_delay=60, queue_timeout=0.5, max_failures=1) as cluster,
        pytest.raises(CrashLoopError, match=r"still queued after queue_timeout=0\.5s"),
    ):
        cluster.wait_for_workers(1, timeout=TIMEOUT)


def test_crash_after_kills_and_the_worker_is_replaced() -> None:
    with from_name("fake", n_workers=1, crash_after=0.3, max_failures=50) as cluster:
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        first = dict(connected(cluster))
        wait_for(lambda: connected(cluster) and connected(cluster) != first, TIMEOUT,
                 "the crashed worker was replaced", cluster)


def test_fail_stop_raises_on_close_and_teardown_still_cleans_up() -> None:
    async def main() -> str:
        cluster = from_name("fake", n_workers=1, fail_stop=True, asynchronous=True)
        await cluster
        await cluster.wait_for_workers(1)
        with pytest.raises(BackendError, match="fail_stop"):
            await cluster.close()
        return str(cluster.name)

    name = asyncio.run(main())
    assert running(name) == []


def test_lose_logs_loses_the_logs_of_ended_units() -> None:
    with from_name("fake", n_workers=1, lose_logs=True) as cluster:
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        (unit,) = cluster.units
        assert cluster.name in cluster.sync(cluster.logs_of, unit)
        cluster.scale(0)
        wait_for(lambda: not running(cluster.name), TIMEOUT, "the unit stopped", cluster)
        with pytest.raises(BackendError, match="lost"):
            cluster.sync(cluster.logs_of, unit)


def test_fail_prepare_fails_the_start() -> None:
    with pytest.raises(BackendError, match="unreachable"):
        from_name("fake", fail_prepare=True)


def test_inject_and_kill_at_run_time() -> None:
    with from_name("fake", n_workers=1, max_failures=50) as cluster:
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        cluster.backend.inject(fail_starts=1)
        (worker,) = connected(cluster)
        cluster.backend.kill(worker)
        # killed, replaced by a start that fails (injected), then by one that works
        wait_for(lambda: "injected start failure" in cluster.sync(cluster.logs_of, worker), TIMEOUT,
                 "the injected failure happened", cluster)
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        assert cluster.backend.fail_next == 0


def test_remote_scheduler_is_placed_by_the_backend() -> None:
    with from_name("fake", scheduler="remote", n_workers=1) as cluster:
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        assert any(n.endswith("-scheduler") for n in running(cluster.name))
        assert cluster.get_logs()["Scheduler"]
    assert running(cluster.name) == []


def test_a_lost_hosts_worker_makes_way_for_its_replacement() -> None:
    # The core drops a failed unit's worker that the scheduler still lists (an unreachable
    # host), so that the replacement may register under the same name.
    with from_name("fake", n_workers=1, max_failures=3) as cluster:
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        ((worker, address),) = connected(cluster).items()

        async def lose() -> None:
            cluster.backend.lose(worker)

        cluster.sync(lose)
        wait_for(lambda: connected(cluster).get(worker) not in (None, address), TIMEOUT,
                 "a replacement under the same name", cluster)
        assert cluster.error is None
        assert "Removed the lost worker" in cluster.get_logs(scheduler=False, workers=False)["Cluster"]
    assert running(cluster.name) == []
