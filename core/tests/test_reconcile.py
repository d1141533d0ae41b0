"""The pure reconcile function: replacement, timeouts, backoff and the crash-loop limit."""

from __future__ import annotations

import dataclasses

from dask_deploy._reconcile import Failures, Observed, Policy, reconcile
from dask_deploy._specs import Phase
from hypothesis import given
from hypothesis import strategies as st

P = Policy(start_timeout=10, max_failures=3, backoff_base=1, backoff_max=8, stable_after=5)


def up(at: float = 0.0) -> Observed:
    return Observed(Phase.RUNNING, started_at=at, connected_at=at + 1, connected=True)


def test_starts_missing_and_stops_unwanted() -> None:
    d = reconcile({"c-0", "c-1"}, {"c-1": up(), "c-2": up()}, Failures(), 100, P)
    assert d.start == ("c-0",)
    assert d.stop == ("c-2",)
    assert d.failed == ()


def test_start_order_is_natural() -> None:
    d = reconcile({f"c-{i}" for i in range(12)}, {}, Failures(), 0, P)
    assert d.start == tuple(f"c-{i}" for i in range(12))


def test_failed_unit_is_stopped_counted_and_restarted_after_backoff() -> None:
    units = {"c-0": Observed(Phase.FAILED, started_at=0, reason="exit code 1")}
    d = reconcile({"c-0"}, units, Failures(), 10, P)
    assert d.stop == ("c-0",)
    assert d.failed == (("c-0", "exit code 1"),)
    assert d.start == ()  # it still has a handle this round
    assert d.failures.count == 1 and d.failures.retry_at == 11
    # Next round: the handle is gone; still backing off at t=10.5, restarted at t=11.
    assert reconcile({"c-0"}, {}, d.failures, 10.5, P).start == ()
    assert reconcile({"c-0"}, {}, d.failures, 11, P).start == ("c-0",)


def test_backoff_doubles_and_is_capped() -> None:
    f = Failures()
    delays = []
    for i in range(6):
        now = 100.0 * (i + 1)
        f = reconcile({"c-0"}, {"c-0": Observed(Phase.FAILED, 0)}, f,
                      now, Policy(max_failures=100, backoff_base=1, backoff_max=8)).failures
        delays.append(f.retry_at - now)
    assert delays == [1, 2, 4, 8, 8, 8]


def test_crash_loop_limit_stops_all_starts_with_reason() -> None:
    f = Failures()
    for i in range(3):
        d = reconcile({"c-0", "c-1"}, {"c-0": Observed(Phase.FAILED, 0, "bad image")},
                      f, 100.0 * (i + 1), P)
        f = d.failures
    assert f.tripped is not None and "bad image" in f.tripped and "max_failures=3" in f.tripped
    assert reconcile({"c-0", "c-1"}, {}, f, 10_000, P).start == ()


def test_unit_that_never_connects_is_failed_start_timeout_after_it_runs() -> None:
    running = {"c-0": Observed(Phase.RUNNING, started_at=0, running_at=100)}
    assert reconcile({"c-0"}, running, Failures(), 109, P).stop == ()  # queued 100 s: fine
    d = reconcile({"c-0"}, running, Failures(), 111, P)
    assert d.stop == ("c-0",)
    assert "did not connect" in d.failed[0][1] and "start_timeout=10" in d.failed[0][1]


def test_queued_unit_waits_unless_a_queue_timeout_is_set() -> None:
    queued = {"c-0": Observed(Phase.PENDING, started_at=0)}
    assert reconcile({"c-0"}, queued, Failures(), 10_000, P).stop == ()  # a long queue is normal
    limited = dataclasses.replace(P, queue_timeout=50)
    assert reconcile({"c-0"}, queued, Failures(), 49, limited).stop == ()
    d = reconcile({"c-0"}, queued, Failures(), 51, limited)
    assert d.stop == ("c-0",) and "queue_timeout=50" in d.failed[0][1]


def test_connected_unit_is_never_timed_out() -> None:
    assert reconcile({"c-0"}, {"c-0": up(0)}, Failures(), 1000, P).stop == ()


def test_clean_exit_after_stable_run_is_replaced_without_blame() -> None:
    gone = {"c-0": Observed(Phase.GONE, started_at=0, connected_at=1)}
    d = reconcile({"c-0"}, gone, Failures(), 100, P)
    assert d.stop == ("c-0",) and d.failed == ()
    # ... but dying young counts, so a crash right after connecting can trip the limit.
    young = {"c-0": Observed(Phase.GONE, started_at=0, connected_at=1)}
    assert reconcile({"c-0"}, young, Failures(), 3, P).failed


def test_stable_unit_resets_the_failure_count() -> None:
    f = Failures(count=2, last_at=50, retry_at=51)
    assert reconcile({"c-0"}, {"c-0": up(52)}, f, 54, P).failures.count == 2  # not stable yet
    assert reconcile({"c-0"}, {"c-0": up(52)}, f, 60, P).failures.count == 0


names = st.sets(st.integers(0, 20).map(lambda i: f"c-{i}"), max_size=10)
phases = st.sampled_from(list(Phase))


@given(desired=names, started=st.dictionaries(st.integers(0, 20).map(lambda i: f"c-{i}"),
                                              phases, max_size=10),
       now=st.floats(0, 1000), count=st.integers(0, 10))
def test_decision_is_consistent(desired: set[str], started: dict[str, Phase], now: float,
                                count: int) -> None:
    units = {n: Observed(p, started_at=0.0) for n, p in started.items()}
    f = Failures(count=count)
    d = reconcile(desired, units, f, now, P)
    assert set(d.start) <= desired - set(units)  # only missing desired units are started
    assert set(units) - desired <= set(d.stop)  # every unwanted unit is stopped
    assert set(d.stop) <= set(units)  # nothing is stopped that was not started
    assert {n for n, _ in d.failed} <= set(d.stop) & desired
    assert d.failures.count >= (0 if not d.failed else count + len(d.failed)) or d.failures.count == 0
    if d.failures.tripped:
        assert d.start == ()


class _StubCluster:
    """Just what Adaptive reads: plan, requested, observed."""

    def __init__(self, plan: set[str], requested: set[str], observed: set[str]) -> None:
        self.plan, self.requested, self.observed = plan, requested, observed

    def __await__(self):  # type: ignore[no-untyped-def]
        return self
        yield


def test_adaptive_never_closes_a_starting_worker() -> None:
    import asyncio

    from dask_deploy._adaptive import Adaptive

    async def main() -> tuple[dict, dict, dict]:
        cluster = _StubCluster(plan={"a", "b", "c", "d"}, requested={"a", "b", "c"},
                               observed={"a"})
        adaptive = Adaptive.__new__(Adaptive)  # no scheduler, no periodic callback
        adaptive.cluster = cluster
        adaptive.wait_count = 1
        from collections import defaultdict

        adaptive.close_counts = defaultdict(int)
        asked = []

        async def workers_to_close(target: int) -> list[str]:
            asked.append(target)
            return ["a"] if target < 1 else []

        adaptive.workers_to_close = workers_to_close  # type: ignore[method-assign]
        # target 3: "d" was never started, so it goes; "b", "c" (starting) and "a" stay.
        first = await adaptive.recommendations(3)
        assert asked == []
        # target 2: the starting "b" and "c" fill it; idle "a" goes too.
        second = await adaptive.recommendations(2)
        # target 0: still never the starting "b" and "c".
        third = await adaptive.recommendations(0)
        assert asked == [0, 0]
        adaptive.state = "stopped"  # as if stop() had run (no periodic callback was made)
        return first, second, third

    first, second, third = asyncio.run(main())
    assert first == {"status": "down", "workers": ["d"]}
    assert second == {"status": "down", "workers": ["a", "d"]}
    assert third == {"status": "down", "workers": ["a", "d"]}
