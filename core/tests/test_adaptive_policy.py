"""The adaptive policy as a pure function: scale-down after a cooldown, never a starting
worker, whole units only, no oscillation, queue-aware scale-up. No processes, no clock."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from dask_deploy._adaptive import (
    AdaptivePolicy,
    Memory,
    Recommendation,
    Snapshot,
    boot_estimate,
    cooldown,
    decide,
    learned_cooldown,
    start_estimate,
)
from hypothesis import given
from hypothesis import strategies as st

P = AdaptivePolicy(cooldown=2.0, start_prior=1.0)


def snap(now: float = 100.0, target: int = 0, plan: set[str] | None = None,
         requested: set[str] | None = None, observed: set[str] | None = None,
         **kw: Any) -> Snapshot:
    plan = plan if plan is not None else set(observed or ())
    requested = requested if requested is not None else set(plan)
    observed = observed if observed is not None else set(requested)
    return Snapshot(now=now, target=target, plan=frozenset(plan), requested=frozenset(requested),
                    observed=frozenset(observed), **kw)


def run(steps: list[Snapshot], p: AdaptivePolicy = P) -> list[Recommendation]:
    memory, out = Memory(), []
    for s in steps:
        rec = decide(s, memory, p)
        memory = rec.memory
        out.append(rec)
    return out


# -- scale-down --------------------------------------------------------------------------


def test_never_started_go_at_once_starting_never_idle_after_the_cooldown() -> None:
    base = {"plan": {"a", "b", "c", "d"}, "requested": {"a", "b", "c"}, "observed": {"a"}}
    # "d" was never started: dropped at once; "b", "c" are starting: never touched.
    assert decide(snap(target=3, **base), Memory(), P).workers == ("d",)
    recs = run([snap(now=t, target=0, idle=("a",), **base) for t in (0, 1, 1.9, 2.0)])
    assert [r.workers for r in recs] == [("d",), ("d",), ("d",), ("d", "a")]


def test_idleness_must_be_uninterrupted() -> None:
    busy = snap(now=1.5, target=1, observed={"a"}, idle=())  # "a" got work at 1.5
    recs = run([snap(now=0, target=0, observed={"a"}, idle=("a",)), busy,
                snap(now=2.5, target=0, observed={"a"}, idle=("a",)),
                snap(now=4.4, target=0, observed={"a"}, idle=("a",)),
                snap(now=4.5, target=0, observed={"a"}, idle=("a",))])
    assert [r.status for r in recs] == ["same", "same", "same", "same", "down"]


def test_a_young_unit_is_not_retired() -> None:
    p = AdaptivePolicy(cooldown=1.0, min_lifetime=10.0)
    s = dict(target=0, observed={"a"}, idle=("a",), started_at={"a": 95.0})
    recs = run([snap(now=t, **s) for t in (100, 102, 104, 105)], p)
    assert [r.status for r in recs] == ["same", "same", "same", "down"]


def test_units_of_several_workers_go_whole_or_not_at_all() -> None:
    unit_of = {"u0-a": "u0", "u0-b": "u0", "u1-a": "u1", "u1-b": "u1"}
    workers = set(unit_of)
    # Only one worker of u0 is idle: nothing goes (its busy sibling would die with it).
    s = snap(now=10, target=2, observed=workers, idle=("u0-a",), unit_of=unit_of)
    assert decide(s, Memory({"u0-a": 0}), P).status == "same"
    # Both idle but the target allows only one fewer worker: a whole unit would undershoot.
    s = snap(now=10, target=3, observed=workers, idle=("u0-a", "u0-b"), unit_of=unit_of)
    assert decide(s, Memory({"u0-a": 0, "u0-b": 0}), P).status == "same"
    s = snap(now=10, target=2, observed=workers, idle=("u0-a", "u0-b"), unit_of=unit_of)
    assert decide(s, Memory({"u0-a": 0, "u0-b": 0}), P).workers == ("u0-a", "u0-b")


def test_the_boot_estimate_is_the_median_boot_within_bounds() -> None:
    auto = AdaptivePolicy(start_prior=0.5, cooldown_min=0.3, cooldown_max=60)
    assert boot_estimate(snap(), auto) == 0.5  # nothing measured yet: the backend's prior
    assert boot_estimate(snap(boot_times=(0.1, 0.2, 0.1)), auto) == 0.3  # fast boots: the floor
    assert boot_estimate(snap(boot_times=(20, 40, 45), start_times=(300,)), auto) == 40
    assert boot_estimate(snap(boot_times=(500, 900)), auto) == 60


def test_the_auto_cooldown_is_learned_from_idle_spells() -> None:
    auto = AdaptivePolicy(start_prior=0.5, cooldown_min=0.3, cooldown_max=60)
    boot = snap(boot_times=(20, 20))
    assert cooldown(boot, auto) == 0.3  # no spell seen: no sign that work comes back
    assert cooldown(boot, auto, gaps=(1.0, 4.0, 2.5)) == 4.0  # work always came back: wait
    assert cooldown(boot, auto, gaps=(math.inf,) * 3) == 0.3  # it never did within a boot
    assert cooldown(boot, auto, gaps=(30.0, 4.0)) == 4.0  # spells past the boot never count
    assert cooldown(boot, AdaptivePolicy(cooldown=7.0), gaps=(1.0,)) == 7.0  # given: it stands
    # Rent or buy over the spells seen: waiting 2 s costs 2 s on each long spell and saves a
    # 20 s boot on each short one.
    assert learned_cooldown((math.inf,) * 9 + (2.0,), 20, 0.3) == 2.0  # 9 * 22 + 2 < 10 * 20.3
    assert learned_cooldown((math.inf,) * 20 + (2.0,), 20, 0.3) == 0.3  # 20 * 22 + 2 > 21 * 20.3


def test_a_load_that_comes_back_within_a_boot_retires_once() -> None:
    """Work comes back 0.8 s after each burst, a boot takes 20 s: the first idle spell is
    ended by a retirement (no spell seen yet), the next ones keep the workers."""
    auto = AdaptivePolicy(start_prior=0.5, cooldown_min=0.3, cooldown_max=60)
    memory, plan, out = Memory(), {"a", "b"}, []
    for i in range(100):
        t = round(i * 0.1, 1)
        idle = (t % 2.0) >= 1.2  # busy 1.2 s, idle 0.8 s
        work = 0.0 if idle else 10.0 - (t % 2.0)
        s = snap(now=t, target=0 if idle else 2, plan=plan, observed=plan,
                 idle=tuple(sorted(plan)) if idle else (), started_at={"a": -60, "b": -60},
                 boot_times=(20.0,), work=work)
        rec = decide(s, memory, auto)
        memory = rec.memory
        if rec.status == "down":
            plan = plan - set(rec.workers)
            out.append((t, rec.workers))
        elif rec.status == "up":
            plan = plan | {f"n{i}-{k}" for k in range(rec.n - len(plan))}
    assert out == [(1.5, ("a", "b"))], out  # once, then the cooldown is the 0.8 s spell
    assert memory.gaps and max(memory.gaps) < 1.0 and cooldown(s, auto, memory.gaps) >= 0.8


def test_the_start_estimate_includes_a_slower_queue() -> None:
    auto = AdaptivePolicy(start_prior=0.5)
    assert start_estimate(snap(start_times=(1.0, 3.0, 2.0)), auto) == 2.0
    # A unit that has been queued 50 s shows the queue got slower before it connects.
    queued = snap(now=100, plan={"a", "b"}, requested={"a", "b"}, observed={"a"},
                  started_at={"a": 0, "b": 50}, start_times=(1.0,))
    assert start_estimate(queued, auto) == 50


def test_work_that_keeps_arriving_gets_workers_to_keep_up() -> None:
    slow = AdaptivePolicy(start_prior=60.0)  # and no start measured: every unit takes 60 s
    # 10 busy threads, and the work queued stays at 20 s: 10 thread-seconds arrive per second.
    memory = Memory(work_at=(0.0, 20.0), arrivals=(10.0,) * 5)
    s = snap(now=1.0, target=15, observed={f"w{i}" for i in range(10)}, work=20.0, busy=10.0)
    assert decide(s, memory, slow).status == "same"  # 10 threads keep up with 10/s
    memory = Memory(work_at=(0.0, 20.0), arrivals=(14.0,) * 5)
    assert decide(s, memory, slow).n == 14  # arrivals of 14/s need 14 threads
    # One lump of 2020 thread-seconds is not a stream: the lump rule alone sizes it. Every
    # new unit would connect before it is done; their boots, billed together, stay within
    # the work: 33 * 60 <= 2020.
    lump = Memory(work_at=(0.0, 20.0), arrivals=(0.0,) * 5)
    s = snap(now=1.0, target=50, observed={f"w{i}" for i in range(10)}, work=2020.0, busy=10.0)
    assert decide(s, lump, slow).n == 10 + 33


def test_a_backlog_on_top_of_a_stream_gets_workers_for_both() -> None:
    slow = AdaptivePolicy(start_prior=60.0)
    # 10 threads keep up with 10/s, and 2020 thread-seconds are queued: half of the 600 that
    # arrive while a new worker starts are work for it too: 38 * 60 <= 2020 + 300.
    stream = Memory(work_at=(0.0, 2020.0), arrivals=(10.0,) * 5)
    s = snap(now=1.0, target=50, observed={f"w{i}" for i in range(10)}, work=2020.0, busy=10.0)
    assert decide(s, stream, slow).n == 10 + 38


def test_a_constant_target_never_changes_the_plan() -> None:
    # Whatever the scheduler suggests as idle, a target equal to the plan does nothing.
    recs = run([snap(now=t, target=2, observed={"a", "b"}, idle=("a",)) for t in range(50)])
    assert {r.status for r in recs} == {"same"}


def test_idle_gaps_shorter_than_the_cooldown_retire_nothing() -> None:
    # Bursts every 1.5 s with idle gaps of 1.5 s and a cooldown of 2 s: the workers stay.
    steps = []
    for i in range(40):
        t = i * 0.5
        idle = (t % 3.0) >= 1.5
        steps.append(snap(now=t, target=0 if idle else 2, observed={"a", "b"},
                          idle=("a", "b") if idle else ()))
    assert all(r.status == "same" for r in run(steps))


# -- queue-aware scale-up ----------------------------------------------------------------


def test_starting_units_count_against_the_target() -> None:
    s = snap(target=4, plan={"a", "b", "c"}, requested={"a", "b", "c"}, observed={"a"})
    assert decide(s, Memory(), P) == Recommendation("up", n=4, memory=Memory(), why="target 4")
    s = snap(target=3, plan={"a", "b", "c"}, requested={"a", "b", "c"}, observed={"a"})
    assert decide(s, Memory(), P).status == "same"


def test_no_more_workers_than_can_start_in_time() -> None:
    slow = AdaptivePolicy(start_prior=60.0)
    # 8 s of work, a 60 s queue, nothing running: one worker, not eight.
    assert decide(snap(target=8, plan=set(), work=8.0), Memory(), slow).n == 1
    # Already one on its way: no second one for work it will finish alone.
    one = snap(now=10, target=8, plan={"a"}, requested={"a"}, observed=set(),
               started_at={"a": 5}, work=8.0)
    assert decide(one, Memory(), slow).status == "same"
    # 1000 s of work, 60 s to start, 2 connected: 16 more connect before it is done and
    # are billed 16 * 60 s of boot, within the work; a 17th would not pay for its boot.
    busy = snap(target=30, observed={"a", "b"}, work=1000.0)
    assert decide(busy, Memory(), slow).n == 2 + 16
    # Work the connected workers finish before a new one could connect: none.
    assert decide(snap(target=30, observed={"a", "b"}, work=100.0), Memory(), slow).status == "same"
    # Fast starts: the scheduler's target stands.
    fast = AdaptivePolicy(start_prior=0.3)
    assert decide(snap(target=8, plan=set(), work=8.0), Memory(), fast).n == 8
    # Work unknown (a remote scheduler): no cap.
    assert decide(snap(target=8, plan=set()), Memory(), slow).n == 8
    # No work but a minimum: the minimum still holds.
    assert decide(snap(target=2, plan=set(), work=0.0), Memory(),
                  AdaptivePolicy(minimum=2, start_prior=60)).n == 2


def test_a_guessed_duration_does_not_shrink_the_first_lump() -> None:
    slow = AdaptivePolicy(start_prior=60.0)
    # 500 tasks at the scheduler's 0.5 s guess, a 60 s queue: capped by the guess, 4
    # workers; but no task has finished, the tasks may be long: the target stands.
    assert decide(snap(target=50, plan=set(), work=250.0), Memory(), slow).n == 4
    assert decide(snap(target=50, plan=set(), work=250.0, guessed=True), Memory(), slow).n == 50
    # Once the duration is known, the cap is back.
    assert decide(snap(target=50, plan=set(), work=250.0, guessed=False), Memory(), slow).n == 4


def test_queued_units_are_cancelled_when_the_known_work_no_longer_needs_them() -> None:
    plan = {"a", "b", "c", "d"}
    # a connected and busy, b booting (out of the queue), c and d still queued; target 2.
    s = snap(now=100, target=2, plan=plan, requested=plan, observed={"a"},
             started_at={"a": 0, "b": 10, "c": 20, "d": 30}, queued=frozenset({"c", "d"}),
             work=5.0)
    rec = decide(s, Memory(), P)
    assert (rec.status, rec.workers) == ("down", ("d", "c"))  # newest first; b is billed, kept
    one = decide(dataclasses.replace(s, target=3), Memory(), P)
    assert (one.status, one.workers) == ("down", ("d",))  # never below the target
    # Work unknown (the scheduler's target alone): a queued unit keeps its place.
    assert decide(dataclasses.replace(s, work=None), Memory(), P).status == "same"
    # A unit of several workers is cancelled whole or not at all.
    units = snap(now=100, target=1, plan={"a", "c-0", "c-1"}, requested={"a", "c-0", "c-1"},
                 observed={"a"}, unit_of={"c-0": "c", "c-1": "c"}, queued=frozenset({"c-0", "c-1"}),
                 work=5.0)
    assert decide(units, Memory(), P).workers == ("c-0", "c-1")
    assert decide(dataclasses.replace(units, target=2), Memory(), P).status == "same"


def test_units_that_would_connect_after_the_work_was_started_are_cancelled() -> None:
    plan = {"a", "b", "c", "d", "e"}
    # a, b connected; c booting since 1 s of an 8 s boot; d, e queued. 6 thread-seconds wait:
    # a and b have started all of it within 3 s, before any of the others could connect.
    s = snap(now=100, target=5, plan=plan, requested=plan, observed={"a", "b"},
             started_at={"a": 50, "b": 50, "c": 97, "d": 98, "e": 99}, boot_times=(8.0,),
             queued=frozenset({"d", "e"}), booting_since={"c": 99.0}, work=10.0, ready=6.0)
    rec = decide(s, Memory(), P)
    assert (rec.status, rec.workers) == ("down", ("e", "d", "c"))  # the last to arrive first
    # 15 thread-seconds: a and b need 7.5 s, c connects in 7 and is kept; d and e still go.
    assert decide(dataclasses.replace(s, ready=15.0), Memory(), P).workers == ("e", "d")
    # A stream of 3 threads' worth per second needs one more unit than a and b: the one that
    # arrives first (c) stays.
    stream = Memory(work_at=(99.0, 10.0), arrivals=(3.0,) * 5)
    assert decide(dataclasses.replace(s, busy=2.0, work=11.0), stream, P).workers == ("e", "d")
    # Work unknown, or a guess: nothing is judged late.
    assert decide(dataclasses.replace(s, work=None, ready=None), Memory(), P).status == "same"
    assert decide(dataclasses.replace(s, guessed=True), Memory(), P).status == "same"


def test_a_lump_asks_for_the_fastest_of_many_but_not_for_late_ones() -> None:
    # Starts measured from 10 s to 100 s (random queue waits), 400 thread-seconds, nothing
    # connected: 32 units, the fastest half of which connect before the work is done.
    starts = tuple(10.0 * i for i in range(1, 11))
    s = snap(target=80, plan=set(), work=400.0, start_times=starts, boot_times=(1.0,))
    assert decide(s, Memory(), AdaptivePolicy()).n == 32
    # Asking for fewer, more of them are useful, and the work takes longer.
    assert decide(s, Memory(), AdaptivePolicy(useful_share=0.9)).n < 32
    # Every start takes 55 s: all would connect before the work is done; their boots (5 s
    # each) are within the 400 thread-seconds for all 80.
    same = dataclasses.replace(s, start_times=(55.0,), boot_times=(5.0,))
    assert decide(same, Memory(), AdaptivePolicy()).n == 80
    # 20 s boots: only 20 such boots fit in the work.
    assert decide(dataclasses.replace(same, boot_times=(20.0,)), Memory(), AdaptivePolicy()).n == 20


def test_units_queued_past_queue_timeout_are_not_capacity() -> None:
    p = AdaptivePolicy(queue_timeout=30.0, start_prior=1.0)
    s = snap(now=100, target=2, plan={"a", "b"}, requested={"a", "b"}, observed={"a"},
             started_at={"a": 0, "b": 50})
    assert decide(s, Memory(), p).status == "same"  # queued 50 s, beyond 30: but already planned
    s = snap(now=100, target=3, plan={"a", "b"}, requested={"a", "b"}, observed={"a"},
             started_at={"a": 0, "b": 50}, work=1000.0)
    # "b" counts for nothing: the cap is computed as if only "a" were there.
    rec = decide(s, Memory(), p)
    assert rec.status == "up" and rec.n == 3


# -- properties --------------------------------------------------------------------------

names = st.sets(st.sampled_from([f"w{i}" for i in range(8)]), max_size=8)


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[Snapshot, Memory]:
    plan = draw(names)
    requested = plan & draw(names)
    observed = requested & draw(names)
    queued = (requested - observed) & draw(names)
    idle = tuple(sorted(observed & draw(names)))
    now = draw(st.floats(0, 1000))
    started_at = {w: draw(st.floats(0, now)) for w in requested}
    booting_since = {w: draw(st.floats(started_at[w], now)) for w in requested - observed - queued}
    idle_since = {w: draw(st.floats(0, now)) for w in idle | booting_since.keys()
                  if draw(st.booleans())}
    work = draw(st.one_of(st.none(), st.floats(0, 1e4)))
    s = Snapshot(now=now, target=draw(st.integers(0, 10)), plan=frozenset(plan),
                 requested=frozenset(requested), observed=frozenset(observed), idle=idle,
                 started_at=started_at,
                 start_times=tuple(draw(st.lists(st.floats(0, 100), max_size=5))),
                 boot_times=tuple(draw(st.lists(st.floats(0, 100), max_size=5))),
                 work=work, ready=None if work is None else draw(st.floats(0, work)),
                 queued=frozenset(queued), booting_since=booting_since)
    gaps = tuple(draw(st.lists(st.one_of(st.floats(0, 100), st.just(math.inf)), max_size=5)))
    return s, Memory(idle_since, gaps=gaps)


policies = st.builds(AdaptivePolicy, minimum=st.integers(0, 2),
                     cooldown=st.one_of(st.none(), st.floats(0, 100)),
                     min_lifetime=st.one_of(st.none(), st.floats(0, 100)),
                     start_prior=st.floats(0.01, 100),
                     queue_timeout=st.one_of(st.none(), st.floats(1, 100)))


@given(snapshots(), policies)
def test_decisions_are_safe(sm: tuple[Snapshot, Memory], p: AdaptivePolicy) -> None:
    s, memory = sm
    rec = decide(s, memory, p)
    # Only surplus workers (idle, or booting) are remembered.
    assert set(rec.memory.idle_since) <= set(s.idle) | set(s.booting_since)
    if rec.status == "up":
        assert len(s.plan) < rec.n <= max(s.target, len(s.plan))
        assert not rec.workers
    elif rec.status == "down":
        retired = set(rec.workers)
        assert rec.n == 0 and retired <= s.plan
        starting = retired & (s.requested - s.observed)
        assert starting <= s.queued | set(s.booting_since), "a starting worker was retired"
        # A queued unit (not billed, it keeps its place in the queue) only for known work;
        # a booting one is surplus like an idle worker.
        assert not starting & s.queued or s.work is not None, "cancelled without knowing the work"
        # Below the target only by cancelling units that have not connected (too late).
        assert len(s.plan) - len(retired) >= s.target or retired <= (s.plan - s.observed)
        wait = cooldown(s, p, rec.memory.gaps)
        life = wait if p.min_lifetime is None else p.min_lifetime
        for w in retired & s.observed:
            assert w in s.idle and s.now - rec.memory.idle_since[w] >= wait
            assert s.now - s.started_at.get(w, -math.inf) >= life
    else:
        assert not rec.workers


@given(st.integers(0, 8), st.integers(1, 60), st.floats(0, 5000),
       st.lists(st.floats(1, 200), min_size=1, max_size=8), st.floats(0.3, 50),
       st.floats(0.05, 1.0))
def test_units_asked_for_are_not_cancelled_as_late_next(
        connected: int, target: int, work: float, starts: list[float], boot: float,
        share: float) -> None:
    """No flapping between the scale-up cap and the cancelling of late units: what one step
    asks for, the next (nothing else changed) does not cancel."""
    p = AdaptivePolicy(useful_share=share)
    observed = {f"c{i}" for i in range(connected)}
    s = snap(now=100, target=max(target, connected), observed=observed, work=work,
             start_times=tuple(starts), boot_times=(boot,))
    rec = decide(s, Memory(), p)
    if rec.status != "up":
        return
    new = {f"n{i}" for i in range(rec.n - connected)}
    after = dataclasses.replace(s, now=100.0, plan=frozenset(observed | new),
                                requested=frozenset(observed | new), queued=frozenset(new),
                                started_at=dict.fromkeys(new, 100.0))
    again = decide(after, rec.memory, p)
    assert not set(again.workers) & new, (rec, again)


def test_decide_is_deterministic() -> None:
    s = snap(now=50, target=1, observed={"a", "b", "c"}, idle=("c", "b"))
    m = Memory({"b": 0.0, "c": 10.0})
    assert decide(s, m, P) == decide(s, m, P)
    assert decide(s, m, P).workers == ("c", "b")


def test_the_scheduler_says_when_durations_are_a_guess() -> None:
    """``Adaptive._work`` on a real in-process scheduler: tasks of a kind none of which has
    finished are a guess; once one finished, they are not. (In-process worker, ~1 s.)"""
    import asyncio

    from dask_deploy._adaptive import Adaptive
    from distributed import Client, Scheduler, Worker

    def slow(x: int) -> int:
        return x

    class _Cluster:
        scheduler: Scheduler

    Work = tuple[float | None, float, float | None, bool]

    async def main() -> tuple[Work, Work]:
        async with Scheduler(host="127.0.0.1", dashboard_address=":0") as sched, \
                Client(sched.address, asynchronous=True) as client:
            adaptive = Adaptive.__new__(Adaptive)  # no periodic callback: _work alone
            cluster: Any = _Cluster()
            cluster.scheduler = sched
            adaptive.cluster, adaptive.pool = cluster, None
            first = client.map(slow, range(5), pure=False)
            while len(sched.unrunnable) + len(sched.queued) < 5:
                await asyncio.sleep(0.01)
            before = adaptive._work()
            async with Worker(sched.address, nthreads=1):
                await client.gather(first)
            more = client.map(slow, range(5, 10), pure=False)
            while len(sched.unrunnable) + len(sched.queued) < 5:
                await asyncio.sleep(0.01)
            after = adaptive._work()
            del more
            adaptive.state = "stopped"  # as if stop() had run (distributed's __del__ stops it)
            return before, after

    before, after = asyncio.run(main())
    assert before[0] is not None and before[0] > 0 and before[3] is True
    assert before[2] == before[0]  # nothing runs: all of it is work a new worker could take
    assert after[3] is False


def test_the_snapshot_marks_units_still_in_the_queue() -> None:
    from collections import deque
    from types import SimpleNamespace

    from dask_deploy._adaptive import Adaptive
    from dask_deploy._reconcile import Observed
    from dask_deploy._specs import Phase

    cluster: Any = SimpleNamespace(
        plan={"q", "b", "r"}, requested={"q", "b", "r"}, observed={"r"},
        units={n: SimpleNamespace(worker_names=[n]) for n in ("q", "b", "r")},
        _observed={"q": Observed(Phase.PENDING, 1.0), "b": Observed(Phase.RUNNING, 2.0, "", 3.0),
                   "r": Observed(Phase.RUNNING, 0.0, "", 1.0, 2.0, True)})
    adaptive = Adaptive.__new__(Adaptive)  # no scheduler, no periodic callback
    adaptive.cluster, adaptive.pool, adaptive.state = cluster, None, "stopped"
    adaptive._start_times, adaptive._boot_times, adaptive._measured = deque(), deque(), set()
    adaptive._waiting = {}
    s = adaptive.snapshot(target=1, idle=[])
    assert s.queued == {"q"} and s.work is None and not s.guessed
    assert s.booting_since == {"b": 3.0}  # out of the queue at 3.0, not connected yet
    # "q" is cancelled before it connects: it would have taken at least as long as it waited.
    del cluster._observed["q"]
    adaptive._observe_starts()
    assert len(adaptive._start_times) == 2 and min(adaptive._start_times) == 2.0  # "r": 0 -> 2
