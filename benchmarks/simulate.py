"""A deterministic simulator of adaptive scaling: no process, no clock, no network.

The core's pure reconciler (:func:`dask_deploy._reconcile.reconcile`) and an adaptive
policy run against a simulated backend (queue delay, start time, failure rate) and a
simulated scheduler that runs a simulated task load. Two policies are compared:

* ``ours``: :func:`dask_deploy._adaptive.decide` with the backend kind's defaults;
* ``distributed``: distributed's ``AdaptiveCore.recommendations`` rewritten as a pure
  function (close after ``wait_count=3`` consecutive suggestions, ``interval`` 1 s apart;
  workers that have not arrived are closed first).

Both see the same scheduler target (distributed's ``adaptive_target`` rule:
``ceil(occupancy / target_duration)``, capped by the tasks there are, spread over the
threads of a worker; idle workers are the ones to close). Everything random comes from
one seeded ``random.Random``: the same arguments give the same table.

Reported per workload and backend: worker-seconds (a unit counts from the moment it left
the queue until it was stopped: what a batch system or cloud bills), time to the first
result and to the last, and the number of units started and stopped.

    uv run python benchmarks/simulate.py            # the summary table (benchmarks/README.md)
    uv run python benchmarks/simulate.py --big      # plus one run with 10,000 workers
    uv run python benchmarks/simulate.py --seeds 8  # ours vs distributed over 8 seeds
"""

from __future__ import annotations

import argparse
import collections
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dask_deploy._adaptive import (
    _SAMPLES,
    AdaptivePolicy,
    Memory,
    Snapshot,
    backend_defaults,
    decide,
)
from dask_deploy._reconcile import Failures, Observed, Policy, reconcile
from dask_deploy._specs import Phase


@dataclass(frozen=True)
class Backend:
    """How the simulated backend treats a unit."""

    name: str
    #: Seconds in the queue: uniform in [low, high].
    queue: tuple[float, float] = (0.0, 0.0)
    #: Seconds from leaving the queue to connected: uniform in [low, high].
    start: tuple[float, float] = (0.3, 0.3)
    #: Probability that a unit fails while starting.
    failure_rate: float = 0.0
    #: Capabilities that pick our policy's defaults (see ``backend_defaults``).
    capabilities: frozenset[str] = frozenset()


BACKENDS = {
    "local": Backend("local", (0.0, 0.0), (0.2, 0.5), 0.0, frozenset({"loopback"})),
    "batch": Backend("batch", (10.0, 60.0), (2.0, 5.0), 0.02),
    "cloud": Backend("cloud", (30.0, 90.0), (10.0, 20.0), 0.01),
}


@dataclass(frozen=True)
class Task:
    arrival: float
    duration: float


def bursty(rng: random.Random) -> list[Task]:
    """Five bursts of 200 tasks of 1-3 s, two minutes apart."""
    return [Task(120.0 * b, rng.uniform(1, 3)) for b in range(5) for _ in range(200)]


def steady(rng: random.Random) -> list[Task]:
    """A task of 4-6 s every 0.25 s for ten minutes (about 20 busy threads)."""
    return [Task(0.25 * i, rng.uniform(4, 6)) for i in range(2400)]


def long_tail(rng: random.Random) -> list[Task]:
    """500 tasks at once: most take a second, one in twenty takes two minutes."""
    return [Task(0.0, 120.0 if rng.random() < 0.05 else 1.0) for _ in range(500)]


def huge(rng: random.Random) -> list[Task]:
    """100,000 tasks of 50-70 s at once: enough work for 10,000 workers."""
    return [Task(0.0, rng.uniform(50, 70)) for _ in range(100_000)]


WORKLOADS: dict[str, Callable[[random.Random], list[Task]]] = {
    "bursty": bursty, "steady": steady, "long tail": long_tail,
}


@dataclass
class _Unit:
    started: float  # when the reconciler started it
    running_at: float  # leaves the queue
    connect_at: float  # its worker connects (inf: it fails instead)
    fail_at: float = math.inf
    stopped_at: float | None = None
    tasks: list[float] = field(default_factory=list)  # remaining seconds of running tasks


@dataclass(frozen=True)
class Result:
    worker_seconds: float
    first_result: float
    completion: float
    starts: int
    stops: int


class _DistributedPolicy:
    """distributed's AdaptiveCore.recommendations, as a pure step (wait_count, interval)."""

    def __init__(self, wait_count: int = 3) -> None:
        self.wait_count = wait_count
        self.close_counts: collections.Counter[str] = collections.Counter()

    def step(self, target: int, plan: set[str], requested: set[str], observed: set[str],
             idle: Callable[[int], list[str]]) -> tuple[str, Any]:  # ("up", n) / ("down", set)
        if target == len(plan):
            self.close_counts.clear()
            return "same", None
        if target > len(plan):
            self.close_counts.clear()
            return "up", target
        not_arrived = sorted(requested - observed)
        to_close = set(not_arrived[: len(plan) - target])
        if target < len(plan) - len(to_close):
            to_close.update(idle(target))
        firmly = set()
        for w in to_close:
            self.close_counts[w] += 1
            if self.close_counts[w] >= self.wait_count:
                firmly.add(w)
        for w in list(self.close_counts):
            if w in firmly or w not in to_close:
                del self.close_counts[w]
        return ("down", firmly) if firmly else ("same", None)


def simulate(tasks: list[Task], backend: Backend, policy: str, *, seed: int = 0,
             maximum: int = 100, threads: int = 1, dt: float = 0.1,
             target_duration: float = 5.0, horizon: float = 3600.0,
             knobs: dict[str, Any] | None = None) -> Result:
    """Run one workload to completion (or ``horizon``); see the module docstring.
    ``knobs``: fields of our ``AdaptivePolicy`` to change (``useful_share=0.1``, ...)."""
    rng = random.Random(seed)
    defaults = backend_defaults(backend.capabilities)
    ours = AdaptivePolicy(minimum=0, maximum=maximum, start_prior=defaults.start_prior,
                          cooldown_max=defaults.cooldown_max, threads_per_worker=threads,
                          **(knobs or {}))
    interval = defaults.interval if policy == "ours" else 1.0
    theirs = _DistributedPolicy()
    rec_policy = Policy(start_timeout=600.0, max_failures=10_000, backoff_base=0.5,
                        backoff_max=30.0)
    pending = collections.deque(sorted(tasks, key=lambda t: t.arrival))
    queue: collections.deque[float] = collections.deque()
    total = len(tasks)
    done = 0
    first: float | None = None
    last = 0.0
    units: dict[str, _Unit] = {}
    plan: dict[str, None] = {}  # desired unit names, in creation order
    observed: dict[str, Observed] = {}
    failures = Failures()
    counter = starts = stops = 0
    worker_seconds = 0.0
    memory = Memory()
    start_times: collections.deque[float] = collections.deque(maxlen=_SAMPLES)  # as Adaptive
    boot_times: collections.deque[float] = collections.deque(maxlen=_SAMPLES)
    measured: set[str] = set()
    mean_duration = 0.5  # distributed's guess for a task prefix it has not seen finish
    learned = False
    now = 0.0
    next_adapt = 0.0
    # After the last task the clock runs on until the policy has stopped every unit: the
    # idle tail is where policies differ most.
    while now < horizon and (done < total or units or pending):
        # Arrivals.
        while pending and pending[0].arrival <= now:
            queue.append(pending.popleft().duration)
        connected = [n for n, u in units.items() if u.stopped_at is None and u.connect_at <= now]
        for n in connected:  # measured as the Adaptive does: once, when the unit connects
            if n not in measured:
                measured.add(n)
                start_times.append(units[n].connect_at - units[n].started)
                boot_times.append(units[n].connect_at - units[n].running_at)
        # Hand queued tasks to free threads.
        for n in connected:
            u = units[n]
            while queue and len(u.tasks) < threads:
                u.tasks.append(queue.popleft())
        # Adaptive step.
        if now >= next_adapt:
            next_adapt = now + interval
            occupancy = sum(sum(units[n].tasks) for n in connected)
            ready = len(queue)
            cpu = math.ceil((occupancy + ready * mean_duration) / target_duration)
            running = sum(len(units[n].tasks) for n in connected)
            cpu = min(cpu, ready + running)
            if ready and not connected:
                cpu = max(1, cpu)
            target = math.ceil(cpu / threads)
            idle_workers = [n for n in connected if not units[n].tasks]
            if target < len(connected):
                target = max(target, len(connected) - len(idle_workers))
            target = max(0, min(maximum, target))
            requested = {n for n in plan if n in units}
            obs = set(connected)

            def idle(t: int, idle_workers: list[str] = idle_workers, obs: set[str] = obs,
                     requested: set[str] = requested) -> list[str]:
                return idle_workers[: max(0, len(obs) - t)]

            if policy == "ours":
                starting = len(requested - obs)
                snapshot = Snapshot(
                    now=now, target=target, plan=frozenset(plan), requested=frozenset(requested),
                    observed=frozenset(obs),
                    idle=tuple(idle(max(0, target - starting))) if target < len(plan) else (),
                    started_at={n: units[n].started for n in requested},
                    start_times=tuple(start_times), boot_times=tuple(boot_times),
                    work=occupancy + ready * mean_duration, busy=float(running),
                    ready=ready * mean_duration,
                    guessed=not learned and bool(ready),
                    queued=frozenset(n for n in requested if now < units[n].running_at),
                    booting_since={n: units[n].running_at for n in requested - obs
                                   if units[n].running_at <= now})
                rec = decide(snapshot, memory, ours)
                memory = rec.memory
                status, up_to, retire = rec.status, rec.n, set(rec.workers)
            else:
                step, arg = theirs.step(target, set(plan), requested, obs, idle)
                status = "up" if step == "up" else "down" if step == "down" else "same"
                up_to = arg if status == "up" else 0
                retire = arg if status == "down" else set()
            while len(plan) < up_to:
                plan[f"w-{counter}"] = None
                counter += 1
            for n in retire:
                plan.pop(n, None)
        # Reconcile: the core's pure function decides starts and stops.
        for n, u in units.items():
            if u.stopped_at is not None:
                continue
            phase = Phase.PENDING if now < u.running_at else Phase.RUNNING
            if now >= u.fail_at:
                phase = Phase.FAILED
            is_up = u.connect_at <= now
            old = observed.get(n)
            if old is None or old.phase is not phase or old.connected is not is_up:
                observed[n] = Observed(
                    phase, u.started, "", u.running_at if phase is not Phase.PENDING else None,
                    u.connect_at if is_up else None, is_up)
        decision = reconcile(plan.keys(), observed, failures, now, rec_policy)
        failures = decision.failures
        for n in decision.stop:
            u = units[n]
            u.stopped_at = now
            stops += 1
            worker_seconds += max(0.0, now - u.running_at)
            if n not in measured:  # gone before it connected: it would have taken longer
                start_times.append(now - u.started)
            queue.extendleft(reversed(u.tasks))  # tasks of a lost worker run again
            u.tasks = []
            observed.pop(n, None)
            measured.discard(n)
            del units[n]
        for n in decision.start:
            queued = rng.uniform(*backend.queue)
            boot = rng.uniform(*backend.start)
            u = _Unit(started=now, running_at=now + queued, connect_at=now + queued + boot)
            if rng.random() < backend.failure_rate:
                u.fail_at, u.connect_at = now + queued + boot / 2, math.inf
            units[n] = u
            starts += 1
        # Run the tasks for one step.
        now += dt
        for n in connected:
            if n not in units:
                continue
            u = units[n]
            left = []
            for r in u.tasks:
                if r <= dt + 1e-9:
                    done += 1
                    first = now if first is None else first
                    last = now
                else:
                    left.append(r - dt)
            u.tasks = left
        if done and not learned:
            # The scheduler learns a prefix's duration once a task of it finished.
            mean_duration, learned = sum(t.duration for t in tasks) / total, True
    for u in units.values():  # still running at the horizon
        worker_seconds += max(0.0, now - u.running_at)
    return Result(worker_seconds=worker_seconds, first_result=first or math.inf,
                  completion=last, starts=starts, stops=stops)


def table(rows: Iterable[tuple[str, str, str, Result]]) -> str:
    out = ["| workload | backend | policy | worker-seconds | first result | last result "
           "| starts | stops |", "|---|---|---|---|---|---|---|---|"]
    for workload, backend, policy, r in rows:
        out.append(f"| {workload} | {backend} | {policy} | {r.worker_seconds:,.0f} | "
                   f"{r.first_result:.1f} s | {r.completion:.1f} s | {r.starts} | {r.stops} |")
    return "\n".join(out)


def spread(seeds: int) -> str:
    """Per workload and backend, over ``seeds`` seeds: our worker-seconds against
    distributed's (ratio - 1) and our last and first result minus theirs, as min..max."""
    out = ["| workload | backend | worker-seconds, ours vs distributed | last result | "
           "first result | starts (ours / distributed, mean) |", "|---|---|---|---|---|---|"]
    for wname, make in WORKLOADS.items():
        for bname, backend in BACKENDS.items():
            ws, last, first, starts = [], [], [], [0, 0]
            for seed in range(seeds):
                ours, theirs = (simulate(make(random.Random(seed)), backend, p, seed=seed)
                                for p in ("ours", "distributed"))
                ws.append(ours.worker_seconds / theirs.worker_seconds - 1)
                last.append(ours.completion - theirs.completion)
                first.append(ours.first_result - theirs.first_result)
                starts[0] += ours.starts
                starts[1] += theirs.starts
            out.append(f"| {wname} | {bname} | {min(ws):+.1%} .. {max(ws):+.1%} | "
                       f"{min(last):+.1f} .. {max(last):+.1f} s | "
                       f"{min(first):+.1f} .. {max(first):+.1f} s | "
                       f"{starts[0] / seeds:.0f} / {starts[1] / seeds:.0f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--big", action="store_true", help="also 10,000 workers")
    parser.add_argument("--seeds", type=int, default=0, metavar="N",
                        help="instead: ours vs distributed over seeds 0..N-1, as ranges")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.seeds:
        print(spread(args.seeds))
        print(f"\n(simulated in {time.perf_counter() - t0:.1f} s)")
        return
    rows = []
    for wname, make in WORKLOADS.items():
        for bname, backend in BACKENDS.items():
            for policy in ("ours", "distributed"):
                tasks = make(random.Random(args.seed))
                rows.append((wname, bname, policy,
                             simulate(tasks, backend, policy, seed=args.seed)))
    if args.big:
        for policy in ("ours", "distributed"):
            tasks = huge(random.Random(args.seed))
            rows.append(("huge (10k workers)", "batch", policy,
                         simulate(tasks, BACKENDS["batch"], policy, seed=args.seed,
                                  maximum=10_000, dt=1.0)))
    print(table(rows))
    print(f"\n(simulated in {time.perf_counter() - t0:.1f} s)")


__all__ = ["BACKENDS", "WORKLOADS", "Backend", "Result", "Task", "simulate", "spread", "table"]

if __name__ == "__main__":
    main()
