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


@st.composite
def observations(draw: st.DrawFn, now: float) -> Observed:
    """Any consistent observation of a unit started before ``now``."""
    started = draw(st.floats(0, now))
    running = draw(st.one_of(st.none(), st.floats(started, now)))
    connected_at = draw(st.one_of(st.none(), st.floats(running if running is not None else started, now)))
    phase = draw(phases)
    return Observed(phase, started_at=started, running_at=running, connected_at=connected_at,
                    connected=connected_at is not None and phase is Phase.RUNNING and draw(st.booleans()))


@given(data=st.data(), desired=names, now=st.floats(0, 1000), count=st.integers(0, 10),
       last_at=st.floats(-1, 1000), retry_at=st.floats(-1, 1100))
def test_decision_is_consistent(data: st.DataObject, desired: set[str], now: float, count: int,
                                last_at: float, retry_at: float) -> None:
    keys = data.draw(st.sets(st.integers(0, 20).map(lambda i: f"c-{i}"), max_size=10))
    units = {n: data.draw(observations(now)) for n in keys}
    f = Failures(count=count, last_at=min(last_at, now), retry_at=retry_at)
    d = reconcile(desired, units, f, now, P)
    failed = {n for n, _ in d.failed}

    assert set(d.start) <= desired - set(units)  # only missing desired units are started
    assert set(units) - desired <= set(d.stop)  # every unwanted unit is stopped
    assert set(d.stop) <= set(units)  # nothing is stopped that was not started
    assert failed <= set(d.stop) & desired
    # A unit that is connected and reported running is never failed.
    assert not {n for n in failed if units[n].connected and units[n].phase is Phase.RUNNING}
    # The failure count: failures add up; with none, a unit that stayed connected for
    # stable_after since the last failure resets it; else it is unchanged.
    stable = any(o.connected and o.connected_at is not None and o.connected_at > f.last_at
                 and now - o.connected_at >= P.stable_after for o in units.values())
    expected = count + len(failed) if failed else (0 if stable else count)
    assert d.failures.count == expected
    if failed:
        assert d.failures.last_at == now
        assert d.failures.retry_at == now + min(P.backoff_base * 2 ** (expected - 1), P.backoff_max)
    else:
        assert (d.failures.last_at, d.failures.retry_at) == (f.last_at, f.retry_at)
    assert (d.failures.tripped is not None) == (bool(failed) and expected >= P.max_failures)
    # Starts happen unless tripped or backing off, and then for every missing desired unit.
    if d.failures.tripped or now < d.failures.retry_at:
        assert d.start == ()
    else:
        assert set(d.start) == desired - set(units)


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
        from dask_deploy._adaptive import AdaptivePolicy, Memory

        adaptive = Adaptive.__new__(Adaptive)  # no scheduler, no periodic callback
        adaptive.cluster = cluster
        adaptive.policy = AdaptivePolicy(cooldown=0)  # an idle worker goes at once
        adaptive.memory = Memory()
        adaptive._start_times, adaptive._boot_times, adaptive._measured = (), (), set()
        adaptive._waiting = {}
        asked = []

        async def workers_to_close(target: int) -> list[str]:
            asked.append(target)
            return ["a"] if target < 1 else []

        adaptive.workers_to_close = workers_to_close  # type: ignore[method-assign]
        # target 3: "d" was never started, so it goes; "b", "c" (starting) and "a" stay.
        first = await adaptive.recommendations(3)
        assert asked == [1]  # the starting "b" and "c" fill the target before "a"
        # target 2: the starting "b" and "c" fill it; idle "a" goes too.
        second = await adaptive.recommendations(2)
        # target 0: still never the starting "b" and "c".
        third = await adaptive.recommendations(0)
        assert asked == [1, 0, 0]
        adaptive.state = "stopped"  # as if stop() had run (no periodic callback was made)
        return first, second, third

    first, second, third = asyncio.run(main())
    assert first == {"status": "down", "workers": ["d"]}
    assert second == {"status": "down", "workers": ["d", "a"]}
    assert third == {"status": "down", "workers": ["d", "a"]}
