"""Adaptive scaling: a pure policy (:func:`decide`) and the ``Adaptive`` that feeds it.

The policy answers one question per step, from a :class:`Snapshot` of the cluster (the
scheduler's target, the planned, starting and connected workers, which connected workers
the scheduler would close, how long units took to start, the queued work) and the little
it remembers (:class:`Memory`: since when each worker has been idle). It does no I/O, reads
no clock and draws no random number, so it is tested as a function and replayed by the
simulator (``benchmarks/simulate.py``) on thousands of workers in seconds.

Its rules, against distributed's ``Adaptive`` (close after ``wait_count`` consecutive
suggestions, ``interval`` apart; starting workers closed first):

* **Scale down fast, and learn when not to (ski rental with the spells seen).** A surplus
  worker is retired once it has been idle, without interruption, for ``cooldown`` seconds.
  By default (``"auto"``) the cooldown is learned from how this cluster's idle spells
  ended: a spell ends when work comes back (there is more work than at the last step and
  a surplus worker is needed again, or the scheduler wants more workers than a retirement
  left), or, for a retired worker, as soon as it has lasted longer than a boot (``boot``:
  the median boot time of the cluster's units, from leaving the queue to connected, what
  a replacement is billed; bounded to [``cooldown_min``, ``cooldown_max``]). Over the
  last 20 spells the cooldown is the idle time that would have cost least: keeping a
  worker ``T`` seconds costs ``min(spell, T)``, retiring it costs a new ``boot`` when work
  came back after ``T``. No spell seen, or spells longer than a boot: ``cooldown_min``
  (0.3 s, one step). Work that comes back within a boot: the cooldown rises to the
  longest such spell. Measured on the simulator: a load that never comes back (the long
  tail) no longer pays a boot time of idleness per worker (cloud: +13% worker-seconds
  against distributed before, -2% now), and bursts that come back before a boot keep
  their workers.
* **No oscillation.** A worker is retired only after ``cooldown`` seconds of
  uninterrupted idleness, and never before its unit has lived ``min_lifetime`` seconds
  (default: the cooldown); no step both starts and retires. A load whose idle spells are
  shorter than a boot retires at most until the first such spell was seen (one
  retirement), then keeps its workers; a constant load never changes the plan.
* **Graceful retirement.** Retiring goes through the scheduler's ``retire_workers``, which
  copies data held only by the retiring worker to another worker first, and keeps the
  worker if it cannot; the scheduler's own choice (``workers_to_close``) prefers idle
  workers that hold the least data. A unit with several workers is retired only when all
  of them are retire-ready (never a busy sibling with it). A booting unit (billed, no data
  yet) that is surplus is treated as an idle worker, before the connected ones.
* **Queue-aware scale-up.** Units that are starting (queued jobs, unscheduled pods) count
  towards the target, as planned capacity; ones queued past ``queue_timeout`` do not (the
  reconciler replaces them). When the queued work is known (an in-process scheduler, or a
  pool's load), new units are asked for only if they can still be useful: of ``k`` new
  units, the i-th is expected to connect at the ``(i + 0.5) / k`` quantile of the
  cluster's measured start times (so with random queue waits asking for more gets the
  fastest of many), and ``k`` is the most for which at least ``useful_share`` (default
  half) of them connect before the work that no worker has started yet is done, and for
  which the ones that do are billed, together, no more boot time than that work (rent or
  buy). The work counts half of what the stream brings while a unit starts (the units on
  their way arrive, on average, halfway and take the first half); at least enough
  workers to keep up with the stream (``r`` thread-seconds per second, the median over the
  last 15 steps, so that a lump is not taken for a stream) are always asked for; a
  cluster with no worker and work to do always gets one. This is the issue's "no more
  units than the backend can start in the time the queued work would take", with random
  queue waits: the others are cancelled while still queued (below).
* **No cap on a guess.** While part of the queued work is tasks of a kind none of which
  has finished yet, its size is the scheduler's guess (0.5 s a task): the cap would size
  the first lump by it and submit a few units where the tasks may take minutes. Until a
  duration is known, the scheduler's target stands.
* **Cancel what would come too late.** When the work is known, a unit on its way that
  could connect only after the connected workers have started all the waiting work (a
  queued unit is at least a boot away, a booting one the rest of a boot) is cancelled,
  the last to arrive first, keeping as many as the stream needs: it would be billed a
  boot and idle for nothing. When the target falls below the plan, units still in the
  queue (not running, not billed) are cancelled first, the last submitted first, whole
  units only; then surplus booting units and idle workers past the cooldown are retired.
  Start times of units cancelled before they connected are recorded as what they waited
  (they would have taken at least that): otherwise only the fast starts would be measured.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import statistics
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from distributed.deploy.adaptive import Adaptive as _DistributedAdaptive
from distributed.protocol import pickle

from ._specs import Phase

__all__ = ["Adaptive", "AdaptivePolicy", "BackendDefaults", "Memory", "Recommendation", "Snapshot",
           "backend_defaults", "decide", "pool_load"]

@dataclass(frozen=True)
class AdaptivePolicy:
    """The knobs of :func:`decide` (all seconds)."""

    minimum: int = 0
    maximum: float = math.inf
    #: Idle time before a surplus worker is retired; None: "auto" (the start-time estimate).
    cooldown: float | None = None
    cooldown_min: float = 0.3
    cooldown_max: float = 600.0
    #: A unit is never retired younger than this; None: the cooldown.
    min_lifetime: float | None = None
    #: Expected start time (start to connected) before any unit of the cluster was measured.
    start_prior: float = 30.0
    #: Units queued longer than this are not counted as capacity (the reconciler fails them).
    queue_timeout: float | None = None
    threads_per_worker: int = 1
    #: Cap scale-up by the queued work (when the snapshot has it).
    queue_aware: bool = True
    #: A lump of new units is asked for only if at least this share of them is expected to
    #: connect before the work is done (the others are cancelled while still queued).
    #: Lower: earlier results, more submissions; higher: fewer of both.
    useful_share: float = 0.5


@dataclass(frozen=True)
class Snapshot:
    """What the policy sees at one step. Worker names throughout."""

    now: float
    #: The scheduler's wish, already within [minimum, maximum].
    target: int
    plan: frozenset[str]
    #: Planned workers whose unit the backend has accepted (started, maybe not connected).
    requested: frozenset[str]
    #: Workers connected to the scheduler.
    observed: frozenset[str]
    #: Connected workers the scheduler would close to reach ``target``, best first.
    idle: tuple[str, ...] = ()
    #: Worker -> its unit's name (absent: a unit of one worker named like it).
    unit_of: Mapping[str, str] = field(default_factory=dict)
    #: Requested worker -> when its unit was started (for ages and ``min_lifetime``).
    started_at: Mapping[str, float] = field(default_factory=dict)
    #: Recent start times of this cluster's units (start to all workers connected).
    start_times: tuple[float, ...] = ()
    #: Recent boot times: the part of the start after the queue (what a restart is billed).
    boot_times: tuple[float, ...] = ()
    #: Thread-seconds of work queued and running (None: unknown, no queue-aware cap).
    work: float | None = None
    #: Threads busy with a task now.
    busy: float = 0.0
    #: The part of ``work`` no worker has started: what a new worker could take (None: all).
    ready: float | None = None
    #: Part of ``work`` is a guess: tasks of a kind none of which has finished yet.
    guessed: bool = False
    #: Requested workers whose unit is still in the backend's queue (not running, not billed).
    queued: frozenset[str] = frozenset()
    #: Requested workers not connected yet whose unit left the queue -> when it did.
    booting_since: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Memory:
    """What the policy carries from one step to the next."""

    #: Worker -> since when it has been a surplus idle worker without interruption.
    idle_since: Mapping[str, float] = field(default_factory=dict)
    #: (time, work) at the previous step, to see how fast work arrives.
    work_at: tuple[float, float] | None = None
    #: Thread-seconds of work that arrived per second, at each of the last steps.
    arrivals: tuple[float, ...] = ()
    #: How long recent idle spells lasted until work came back (seconds; one longer than
    #: the boot time is recorded as soon as it is: its exact length changes nothing).
    gaps: tuple[float, ...] = ()
    #: Retirements still watched: (when their workers became idle, the plan they left).
    retired: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class Recommendation:
    status: Literal["up", "down", "same"]
    #: For "up": the new number of planned workers.
    n: int = 0
    #: For "down": the workers to retire (whole units).
    workers: tuple[str, ...] = ()
    memory: Memory = Memory()
    why: str = ""


def start_estimate(s: Snapshot, p: AdaptivePolicy) -> float:
    """Expected seconds from starting a unit to its workers connected.

    The median of the recent measurements (the prior before any), raised to the age of the
    oldest unit still starting: a queue that got slower shows there before any unit of it
    has connected.
    """
    estimate = statistics.median(s.start_times) if s.start_times else p.start_prior
    waiting = [s.now - t for w, t in s.started_at.items()
               if w in s.requested and w not in s.observed]
    if waiting:
        estimate = max(estimate, max(waiting))
    return estimate


def boot_estimate(s: Snapshot, p: AdaptivePolicy) -> float:
    """What a new unit is billed before it works: the median boot time (queue excluded),
    bounded to [``cooldown_min``, ``cooldown_max``]; the start prior before any was measured."""
    boot = statistics.median(s.boot_times) if s.boot_times else p.start_prior
    return min(max(boot, p.cooldown_min), p.cooldown_max)


def cooldown(s: Snapshot, p: AdaptivePolicy, gaps: tuple[float, ...] = ()) -> float:
    """Idle seconds before a surplus worker is retired (see the module docstring)."""
    if p.cooldown is not None:
        return p.cooldown
    return learned_cooldown(gaps, boot_estimate(s, p), p.cooldown_min)


def learned_cooldown(gaps: tuple[float, ...], boot: float, floor: float) -> float:
    """The idle time that would have cost least over the idle spells seen (``gaps``).

    Keeping an idle worker ``T`` seconds costs ``min(g, T)`` for a spell of ``g``
    seconds; retiring it, when work comes back after ``g > T``, costs a new worker's
    ``boot``. Without a spell seen there is no sign that work comes back: ``floor``.
    """
    if not gaps:
        return floor

    def cost(t: float) -> float:
        return sum(min(g, t) + (boot if g > t else 0.0) for g in gaps)

    return min((floor, *(g for g in gaps if floor < g <= boot)), key=cost)


@dataclass(frozen=True)
class _Outlook:
    """The known work as a new worker would see it (see :func:`_outlook`)."""

    #: Thread-seconds a worker arriving now could take: work no worker has started, and
    #: half of what the stream brings while a new worker starts (the units already on
    #: their way arrive, on average, halfway through and take the first half).
    work: float
    #: Seconds until each worker on its way is expected to connect: the median of the
    #: start times longer than its age (0 if it is later than all of them).
    coming: list[float]
    #: The measured start times, sorted (the prior alone before any).
    samples: list[float]


def _outlook(s: Snapshot, p: AdaptivePolicy, rate: float) -> _Outlook | None:
    """What the scale-up cap and the cancelling of late units both reason on (None: the
    work is unknown or a guess, or the cap is off)."""
    if s.work is None or s.guessed or not p.queue_aware:
        return None
    samples = sorted(s.start_times) or [p.start_prior]
    coming = []
    for w in s.requested - s.observed:
        age = s.now - s.started_at.get(w, s.now)
        later = samples[bisect.bisect_right(samples, age):]
        coming.append(statistics.median(later) - age if later else 0.0)
    # A running task stays where it is: only work not started can go to a new worker.
    ready = s.work if s.ready is None else s.ready
    return _Outlook(ready + rate * start_estimate(s, p) / 2, sorted(coming), samples)


def _useful_new_workers(s: Snapshot, p: AdaptivePolicy, counted: int, rate: float) -> int | None:
    """How many more workers can still be useful (None: no limit known)."""
    if s.work is not None and s.work <= 0:
        return 0
    # While the scheduler guesses how long tasks take (none of their kind has finished), a
    # lump sized by the guess is too small when the tasks are long, and the first result
    # comes from the fastest of the units submitted: until it knows, no cap.
    seen = _outlook(s, p, rate)
    if seen is None:
        return None
    t = p.threads_per_worker
    # Work that keeps arriving needs threads to keep up with it, whatever is queued now.
    keep_up = max(0, math.ceil((rate - counted * t) / t))
    lump = _useful_count(seen.work, len(s.observed) * t, seen.coming, seen.samples, t,
                         max(0, s.target - counted), p.useful_share, boot_estimate(s, p))
    if counted == 0:
        lump = max(1, lump)  # nothing runs or comes: at least one, whatever the estimate
    return max(lump, keep_up)


def _useful_count(work: float, threads: int, coming: list[float], samples: list[float],
                  t: int, most: int, share: float, boot: float) -> int:
    """The most new units (up to ``most``) of which at least ``share`` are expected to
    connect before the work is done, and whose ones that do are billed, together, no more
    boot time than the work there is (rent or buy: a unit does its boot's worth of work).

    New units connect at the quantiles of the measured start times (``samples``, sorted):
    the i-th of k at the ``(i + 0.5) / k`` quantile, so asking for more gets earlier
    arrivals (the fastest of many) and an earlier end, and a smaller share of useful ones.
    """

    def enough(k: int) -> bool:
        new = [samples[min(len(samples) - 1, int((i + 0.5) * len(samples) / k))] for i in range(k)]
        end = _finish(work, threads, sorted(coming + new), t)  # coming: sorted
        useful = sum(1 for a in new if a < end)
        return useful >= share * k and useful * boot * t <= work

    if most <= 0 or not enough(1):
        return 0
    if enough(most):
        return most
    low, high = 1, most  # enough(low), not enough(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if enough(mid) else (low, mid)
    return low


def _finish(work: float, threads: int, arrivals: list[float], t: int) -> float:
    """When ``work`` thread-seconds are done by ``threads`` now and ``t`` more at each of
    the (sorted) ``arrivals``."""
    now = 0.0
    for a in arrivals:
        if threads and work <= threads * (a - now):
            break
        work -= threads * (a - now)
        now, threads = a, threads + t
    return now + work / threads if threads else math.inf


_RATE_WINDOW = 15
#: Start and boot times kept: enough for the quantiles of a lump of units.
_SAMPLES = 100


def decide(s: Snapshot, memory: Memory, p: AdaptivePolicy) -> Recommendation:
    """One adaptive step: scale up to a target, retire idle surplus workers, or nothing."""
    now = s.now
    arrivals = memory.arrivals
    if s.work is not None and memory.work_at is not None and now > memory.work_at[0]:
        # Work changes by what arrives minus what the busy threads do.
        dt = now - memory.work_at[0]
        arrivals = (*arrivals[-(_RATE_WINDOW - 1):], max(0.0, (s.work - memory.work_at[1]) / dt + s.busy))
    # The median of the last steps: a stream that keeps coming, not one lump (a burst, or
    # the scheduler learning how long a task takes), which the lump rule above covers.
    rate = statistics.median(arrivals) if arrivals else 0.0
    # Work came back at this step: there is more than at the last step (unknown work: any
    # change of the surplus counts). More, not "some arrived": while a cluster drains, the
    # scheduler's estimates of the tasks it starts move a little up and down.
    came = s.work is None or (memory.work_at is not None and s.work > memory.work_at[1])
    gaps, watched = _idle_spells(s, memory, boot_estimate(s, p), came)
    # Surplus workers are remembered only when there are some (below).
    mem = Memory({}, None if s.work is None else (now, s.work), arrivals, gaps, watched)
    planned = len(s.plan)
    if s.target > planned:
        # Starting units count as capacity unless queued past queue_timeout.
        expired = {w for w in s.requested - s.observed
                   if p.queue_timeout is not None and w in s.started_at
                   and now - s.started_at[w] > p.queue_timeout}
        counted = planned - len(expired & s.plan)
        useful = _useful_new_workers(s, p, counted, rate)
        n = s.target if useful is None else min(s.target, counted + useful)
        n = max(n, min(p.minimum, s.target))
        if n > planned:
            return Recommendation("up", n=n, memory=mem, why=f"target {s.target}")
        return Recommendation("same", memory=mem, why="queued work covered by starting units")
    late, stream = _too_late(s, p, rate)
    if s.target == planned and not late:
        return Recommendation("same", memory=mem)
    excess = max(0, planned - s.target)
    # Planned but never started: nothing to lose, dropped at once.
    never = sorted(s.plan - s.requested)[:excess]
    excess -= len(never)
    members: dict[str, list[str]] = {}  # unit -> its requested or connected workers
    for w in s.observed | s.requested:
        members.setdefault(s.unit_of.get(w, w), []).append(w)

    def newest_first(units: list[str]) -> list[str]:
        return sorted(units, key=lambda u: (-max(s.started_at.get(m, 0.0) for m in members[u]), u))

    cancel: list[str] = []
    if excess > 0 and s.work is not None and s.queued:
        # Still in the queue, not billed: cancelled when the known work no longer needs
        # it, the last submitted first (it has waited least). Without a known amount of
        # work (the scheduler's target alone) a queued unit is kept, as before.
        for unit in newest_first([u for u, ms in members.items()
                                  if all(m in s.queued and m not in s.observed for m in ms)]):
            if len(members[unit]) <= excess:  # whole units, never below target
                cancel.extend(sorted(members[unit]))
                excess -= len(members[unit])
    if late:
        # Units that would connect after all the waiting work was started: cancelled, the
        # last to arrive first, but as many as the stream of new work needs.
        by_arrival = sorted(late, reverse=True, key=lambda u: (
            late[u], max(s.started_at.get(m, 0.0) for m in members.get(u, [u])), u))
        for unit in by_arrival[:max(0, len(late) - stream)]:
            if unit not in cancel and members.get(unit):
                cancel.extend(sorted(members[unit]))
                excess = max(0, excess - len(members[unit]))
    retire: list[str] = []
    # Surplus past the queue: units booting (billed, no data yet) newest first, then the
    # connected idle workers the scheduler would close, each from when it became surplus.
    booting = newest_first([u for u, ms in members.items() if all(
        m in s.booting_since and m not in s.observed for m in ms)]) if excess > 0 else []
    candidates = [w for u in booting for w in sorted(members[u])] + [w for w in s.idle if w in s.observed]
    since = {w: memory.idle_since.get(w, now) for w in candidates}
    mem = dataclasses.replace(mem, idle_since=since)
    if excess > 0 and candidates:
        wait = cooldown(s, p, gaps)
        lifetime = wait if p.min_lifetime is None else p.min_lifetime

        def ready(w: str) -> bool:
            return (w in since and now - since[w] >= wait
                    and now - s.started_at.get(w, -math.inf) >= lifetime)

        # Whole units only: all of a unit's workers are ready, or none is retired.
        done: set[str] = set()
        for w in candidates:
            unit = s.unit_of.get(w, w)
            if excess <= 0:
                break
            if unit in done or not ready(w):
                continue
            group = members.get(unit, [w])
            if len(group) <= excess and all(ready(m) for m in group):  # never below target
                retire.extend(sorted(group))
                excess -= len(group)
                done.add(unit)
    workers = (*never, *cancel, *retire)
    if not workers:
        return Recommendation("same", memory=mem)
    if retire:  # watched: does work come back for them, and when?
        watched = (*watched, (max(since[w] for w in retire), planned - len(workers)))[-_GAPS:]
        mem = dataclasses.replace(mem, retired=watched)
    return Recommendation("down", workers=workers, memory=mem,
                          why=f"target {s.target}; idle past the cooldown: {retire}")


def _too_late(s: Snapshot, p: AdaptivePolicy, rate: float) -> tuple[dict[str, float], int]:
    """Units on their way that could connect only after the connected workers, and the
    ones on their way that could arrive sooner, have started all the work a new worker
    could take (unit -> seconds until it could connect at the earliest), and how many
    units the stream of new work still needs.

    At the earliest: a queued unit is a boot away, a booting one the rest of the median
    boot. Cancelling such a unit saves that and its idle time after, and loses no work.
    """
    seen = _outlook(s, p, rate)
    if seen is None or not s.observed:
        return {}, 0
    t = p.threads_per_worker
    boot = boot_estimate(s, p)
    eta: dict[str, float] = {}
    for w in s.requested - s.observed:
        unit = s.unit_of.get(w, w)
        if w in s.queued:
            eta[unit] = max(eta.get(unit, 0.0), boot)
        elif w in s.booting_since:
            eta[unit] = max(eta.get(unit, 0.0), boot - (s.now - s.booting_since[w]))
    # Started by the connected workers and the ones on their way that could arrive sooner.
    workers = sorted(eta[s.unit_of.get(w, w)] for w in s.requested - s.observed
                     if s.unit_of.get(w, w) in eta)
    started = _finish(seen.work, len(s.observed) * t, workers, t)
    late = {u: e for u, e in eta.items() if e > started}
    return late, max(0, math.ceil(rate / t) - len(s.observed))


_GAPS = 20


def _idle_spells(s: Snapshot, memory: Memory, boot: float, came: bool,
                 ) -> tuple[tuple[float, ...], tuple[tuple[float, int], ...]]:
    """The idle spells that ended at this step (added to ``memory.gaps``) and the
    retirements still watched.

    A spell ends when work comes back: a surplus idle worker, still planned and connected,
    is no longer surplus (the longest such spell is recorded), or the scheduler wants more
    workers than a retirement left (the spell of its workers). A retirement whose workers
    have been idle longer than ``boot`` is recorded then: retiring them was right, however
    long the spell turns out to be.
    """
    ended = [s.now - t for w, t in memory.idle_since.items()
             if came and w in s.plan and w in s.observed and w not in s.idle]
    watched = []
    for since, left in memory.retired:
        if s.now - since > boot:
            ended.append(math.inf)  # longer than a boot: how much longer changes nothing
        elif came and s.target > left:
            ended.append(s.now - since)
        else:
            watched.append((since, left))
    gaps = (*memory.gaps, max(ended))[-_GAPS:] if ended else memory.gaps
    return gaps, tuple(watched)


@dataclass(frozen=True)
class BackendDefaults:
    """The adaptive defaults of one kind of backend (see :func:`backend_defaults`)."""

    #: Expected start time of a unit before any was measured.
    start_prior: float
    #: Upper bound of the automatic cooldown.
    cooldown_max: float
    #: Seconds between adaptive steps.
    interval: float


def backend_defaults(capabilities: frozenset[str]) -> BackendDefaults:
    """Adaptive defaults by backend kind.

    * Processes on this machine (capability ``loopback``: local, cuda, fake): a unit is a
      fork of a warm agent, cheap to restart, and an idle one takes memory and CPU from
      the work on the same machine: step every 0.1 s, cooldown at most 0.5 s (idle workers
      are gone well within a second, even when a busy machine makes starts slow).
    * Everything else (SSH hosts, batch queues, pods, cloud tasks): assume a start takes
      30 s until this cluster's own units were measured, step every second, and let the
      measured start time set the cooldown up to 10 minutes (a SLURM job that waited a
      minute in the queue is kept a minute idle before it is given back).

    ``dask.config`` ``deploy.adaptive.start-prior`` / ``cooldown-max`` / ``interval``
    override them for every backend.
    """
    import dask.config
    from dask.utils import parse_timedelta

    local = "loopback" in capabilities
    found = BackendDefaults(start_prior=0.5 if local else 30.0,
                            cooldown_max=0.5 if local else 600.0,
                            interval=0.1 if local else 1.0)
    changes = {}
    for key, attr in (("start-prior", "start_prior"), ("cooldown-max", "cooldown_max"),
                      ("interval", "interval")):
        value = dask.config.get(f"deploy.adaptive.{key}", default=None)
        if value is not None:
            changes[attr] = float(parse_timedelta(value, "seconds"))
    return dataclasses.replace(found, **changes)


class Adaptive(_DistributedAdaptive):  # type: ignore[misc]
    """``distributed.deploy.Adaptive`` driven by :func:`decide` (see the module docstring).

    Extra keywords: ``cooldown`` (seconds, or ``"auto"``, the default), ``min_lifetime``
    (seconds; default the cooldown), ``queue_aware`` (default True). ``wait_count`` given
    without ``cooldown`` keeps distributed's meaning: a cooldown of ``wait_count *
    interval``. ``interval`` defaults to 0.1 s on backends that run on this machine and 1 s
    elsewhere (``distributed.adaptive.interval`` when set differently from its default).
    A stopped ``Adaptive`` never acts, also not with a step that was in flight.

    ``pool``: scale only that pool of the cluster (see :func:`pool_load`).
    """

    #: The pool this instance scales (None: the cluster's only pool).
    pool: str | None = None
    #: The last :func:`pool_load` of the pool: (idle workers, work, busy threads, ready
    #: work, guessed).
    _pool_load: tuple[list[str], float, float, float, bool] | None = None

    def __init__(self, cluster: Any = None, interval: Any = None, minimum: int | None = None,
                 maximum: float | None = None, wait_count: int | None = None,
                 target_duration: Any = None, worker_key: Any = None, *,
                 cooldown: float | str | None = None, min_lifetime: float | str | None = None,
                 queue_aware: bool = True, pool: str | None = None, **kwargs: Any) -> None:
        import dask.config
        from dask.utils import parse_timedelta

        defaults = backend_defaults(frozenset(getattr(cluster, "capabilities", ())))
        if interval is None and dask.config.get("distributed.adaptive.interval") in ("1s", "1000ms"):
            interval = defaults.interval  # distributed's default: ours is per backend
        super().__init__(cluster, interval=interval, minimum=minimum, maximum=maximum,
                         wait_count=wait_count, target_duration=target_duration,
                         worker_key=worker_key, **kwargs)
        if cooldown is None:
            cooldown = dask.config.get("deploy.adaptive.cooldown", default="auto")
        if cooldown == "auto" and wait_count is not None:
            cooldown = wait_count * (self.interval or 1.0)
        seconds = None if cooldown == "auto" else parse_timedelta(cooldown, "seconds")
        spec = getattr(cluster, "spec", None)
        self.pool = pool
        templates = getattr(cluster, "_templates", {})
        template = templates.get(pool) if pool else getattr(cluster, "_unit_template", None)
        self.policy = AdaptivePolicy(
            minimum=self.minimum, maximum=self.maximum, cooldown=seconds,
            min_lifetime=None if min_lifetime is None else parse_timedelta(min_lifetime, "seconds"),
            start_prior=defaults.start_prior,
            cooldown_max=defaults.cooldown_max,
            queue_timeout=getattr(spec, "queue_timeout", None),
            threads_per_worker=template[0].nthreads if template else 1, queue_aware=queue_aware)
        self.memory = Memory()
        self._start_times: deque[float] = deque(maxlen=_SAMPLES)
        self._boot_times: deque[float] = deque(maxlen=_SAMPLES)
        self._measured: set[str] = set()
        self._waiting: dict[str, float] = {}  # unit -> started at, not connected yet

    def _observe_starts(self) -> None:
        """Record how long each unit took from start to connected (once per unit)."""
        observed = getattr(self.cluster, "_observed", {})
        now = time.monotonic()
        for name, started in list(self._waiting.items()):
            if name not in observed:
                # Gone before it connected (cancelled while slow, or failed): it would have
                # taken at least this long. Without it the slow ones, which are the ones
                # cancelled, would never be measured and starts would look fast.
                self._start_times.append(now - started)
                del self._waiting[name]
        for name, obs in observed.items():
            if obs.connected_at is not None and name not in self._measured:
                self._measured.add(name)
                self._waiting.pop(name, None)
                self._start_times.append(obs.connected_at - obs.started_at)
                self._boot_times.append(obs.connected_at - (obs.running_at or obs.started_at))
            elif obs.connected_at is None and name not in self._measured:
                self._waiting[name] = obs.started_at
        self._measured &= set(observed)

    # -- one pool of several: its own plan, target and idle workers -------------------------

    # (distributed annotates these as sets of WorkerState; every cluster gives names.)
    @property
    def plan(self) -> set[str]:  # type: ignore[override]
        cluster: Any = self.cluster
        return set(cluster.plan if self.pool is None else cluster.pool_workers(self.pool))

    @property
    def requested(self) -> set[str]:  # type: ignore[override]
        requested = set(self.cluster.requested)
        return requested & self.plan if self.pool else requested  # type: ignore[arg-type]

    @property
    def observed(self) -> set[str]:  # type: ignore[override]
        observed = set(self.cluster.observed)
        return observed & self.plan if self.pool else observed  # type: ignore[arg-type]

    async def target(self) -> int:
        if self.pool is None:
            return int(await super().target())
        cluster: Any = self.cluster
        # The expanded worker: resources a plugin adds (GPU expansion's ``GPU``) count too.
        worker = cluster._templates[cluster._pool(self.pool).name][0]
        args = (frozenset(self.plan), dict(worker.resources), worker.nthreads,
                self.pool in cluster._general_pools(), float(self.target_duration))
        if cluster.scheduler is not None:  # in this process: read it directly
            target, idle, work, busy, ready, guessed = pool_load(cluster.scheduler, *args)
        else:
            from distributed.protocol.pickle import dumps, loads

            # By keyword: the scheduler passes itself as ``dask_scheduler=``, so positional
            # arguments would fill that parameter too.
            names = ("names", "resources", "nthreads", "general", "target_duration")
            reply = await self.scheduler.run_function(
                function=dumps(pool_load), args=dumps(()),
                kwargs=dumps(dict(zip(names, args, strict=True))))
            if reply.get("status") != "OK":
                raise RuntimeError(f"pool_load failed on the scheduler: {loads(reply['exception'])}")
            target, idle, work, busy, ready, guessed = reply["result"]
        self._pool_load = (list(idle), float(work), float(busy), float(ready), bool(guessed))
        return int(target)

    def _work(self) -> tuple[float | None, float, float | None, bool]:
        """Thread-seconds of queued and running work, the busy threads, the thread-seconds
        no worker has started, and whether part of the work is a guess, from an in-process
        scheduler or the pool's load ((None, 0, None, False): unknown)."""
        unknown = (None, 0.0, None, False)
        if self.pool is not None:
            return unknown if self._pool_load is None else self._pool_load[1:]
        sched = getattr(self.cluster, "scheduler", None)
        if sched is None:
            return unknown
        try:
            from itertools import chain, islice

            limit = sum(ws.memory_limit for ws in sched.workers.values())
            if limit and sum(ws.nbytes for ws in sched.workers.values()) > 0.6 * limit:
                return unknown  # the scheduler asks for workers for memory: no cap
            ready = len(sched.queued) + len(sched.unrunnable)
            sample = list(islice(chain(sched.queued, sched.unrunnable), 100))
            queued = sum(sched._get_prefix_duration(ts.prefix) for ts in sample)
            if ready > 100:
                queued *= ready / 100
            busy = sum(min(len(ws.processing), ws.nthreads) for ws in sched.workers.values())
            # No task of the kind has finished: the scheduler's duration is a guess.
            guessed = any(ts.prefix.duration_average < 0 for ts in sample)
            return float(sched.total_occupancy + queued), float(busy), float(queued), guessed
        except Exception:  # a distributed without these internals: no cap
            return unknown

    def snapshot(self, target: int, idle: list[str]) -> Snapshot:
        cluster = self.cluster
        now = time.monotonic()
        self._observe_starts()
        unit_of: dict[str, str] = {}
        started_at: dict[str, float] = {}
        observed_units = getattr(cluster, "_observed", {})
        work, busy, ready, guessed = self._work()
        queued: set[str] = set()
        booting_since: dict[str, float] = {}
        for name, unit in getattr(cluster, "units", {}).items():
            obs = observed_units.get(name)
            for w in unit.worker_names:
                if w != name:
                    unit_of[w] = name
                if obs is not None:
                    started_at[w] = obs.started_at
                    if obs.phase is Phase.PENDING:
                        queued.add(w)
                    elif obs.running_at is not None and not obs.connected:
                        booting_since[w] = obs.running_at
        return Snapshot(now=now, target=target, plan=frozenset(self.plan),
                        requested=frozenset(self.requested), observed=frozenset(self.observed),
                        idle=tuple(idle), unit_of=unit_of, started_at=started_at,
                        start_times=tuple(self._start_times),
                        boot_times=tuple(self._boot_times), work=work, busy=busy, ready=ready,
                        guessed=guessed, queued=frozenset(queued), booting_since=booting_since)

    async def recommendations(self, target: int) -> dict[str, Any]:
        observed = self.observed
        idle: list[str] = []
        if target < len(self.plan) and observed:
            # Starting workers fill the target first (they are never retired): the
            # scheduler, which sees only connected ones, is asked for the rest.
            starting = len(set(self.requested) - set(observed))
            idle = list(await self.workers_to_close(target=max(0, target - starting)))
        rec = decide(self.snapshot(target, idle), self.memory, self.policy)
        self.memory = rec.memory
        if rec.status == "up":
            return {"status": "up", "n": rec.n}
        if rec.status == "down":
            return {"status": "down", "workers": list(rec.workers)}
        return {"status": "same"}

    # distributed's adapt() step awaits the scheduler, then scales, without looking again
    # whether stop() came in between: a user's cluster.scale(n) right after adapt was turned
    # off was then overridden by the step that was in flight. A stopped Adaptive does nothing.

    def _names(self) -> dict[str, str]:
        """Worker address -> name, as the cluster knows it (planned names)."""
        workers = getattr(self.cluster, "scheduler_info", {}).get("workers", {})
        return {a: str(w.get("name")) for a, w in list(workers.items())}

    async def workers_to_close(self, target: int) -> list[str]:
        # distributed asks for the scheduler's names; ask for addresses and name them as the
        # cluster does (see scale_down). A worker the cluster has not seen yet is not closed.
        # A pool's idle workers came with its load (pool_load).
        if self.pool is not None and self._pool_load is not None:
            return self._pool_load[0][: max(0, len(self.observed) - target)]
        addresses = await self.scheduler.workers_to_close(
            target=target, key=pickle.dumps(self.worker_key) if self.worker_key else None,
            attribute="address", **self._workers_to_close_kwargs)
        name_of = self._names()
        return [name_of[a] for a in addresses if a in name_of]

    async def scale_up(self, n: Any) -> None:
        if self.state != "stopped":
            if self.pool is None:
                await super().scale_up(n)
            else:
                cluster: Any = self.cluster
                cluster.scale(n, pool=self.pool)

    async def scale_down(self, workers: Any) -> None:
        # distributed's own scale_down awaits the scheduler's retirement of the workers and
        # then drops their units: a stop() and a user's scale(n) during that await were
        # undone afterwards (state machine: adapt, load, scale(3), scale(4) -> plan of 2).
        if self.state == "stopped" or not workers:
            return
        # Graceful: the scheduler copies data held only by these workers elsewhere first,
        # and keeps a worker whose data cannot be moved (then its unit stays too).
        connected = set(self.observed)
        # By address, and named as this client knows them: a backend whose system names
        # workers itself (deploy_worker_name) has other names on the scheduler.
        name_of = self._names()
        wanted = set(workers)
        retired = await self.scheduler.retire_workers(
            workers=[a for a, n in name_of.items() if n in wanted], remove=True, close_workers=True)
        if self._stopped():
            return  # the user took over meanwhile: the plan is theirs (retired units restart)
        gone = {name_of.get(a, str(info.get("name"))) for a, info in (retired or {}).items()
                if isinstance(info, Mapping)}
        kept = [w for w in workers if w in connected and w not in gone]
        if kept and isinstance(retired, Mapping):
            self.log.append((time.time(), {"status": "kept", "workers": kept,
                                           "why": "their data could not be moved"}))
            workers = [w for w in workers if w not in kept]
        if workers:
            await self.cluster.scale_down(workers)  # type: ignore[attr-defined]

    def _stopped(self) -> bool:
        return str(self.state) == "stopped"  # read again after an await (mypy narrows it)


def pool_load(dask_scheduler: Any, names: frozenset[str], resources: Mapping[str, float],
              nthreads: int, general: bool, target_duration: float,
              ) -> tuple[int, list[str], float, float, float, bool]:
    """The load of one pool of workers, read from a ``distributed.Scheduler``.

    A task belongs to the pool when the pool's worker ``resources`` satisfy its resource
    restrictions, or, for a task without restrictions, when the pool is ``general`` (takes
    unrestricted work). Returns the workers the pool needs to run its work within
    ``target_duration`` (as the scheduler's ``adaptive_target``, with as many tasks at
    once per worker as its threads and resources allow, and never more workers than
    tasks), its connected idle workers (least data first), the thread-seconds of its work,
    its busy threads, the thread-seconds of its work no worker has started, and whether
    part of that is a guess (a kind of task none of which has finished). Runs on the
    scheduler (pickled for a remote one): plain values in and out.
    """
    from itertools import chain

    def slots(ts: Any) -> int:
        """How many such tasks one worker of the pool runs at once (0: none)."""
        need = ts.resource_restrictions
        if not need:
            return nthreads if general else 0
        fit = min((math.floor(resources.get(r, 0) / v) if v > 0 else nthreads)
                  for r, v in need.items())
        return min(nthreads, fit)

    duration = dask_scheduler._get_prefix_duration
    workers = [ws for ws in dask_scheduler.workers.values() if ws.name in names]
    worker_seconds = 0.0  # of work at the pool's concurrency
    width = 0.0  # workers that could be busy at once
    work = ready = 0.0
    guessed = False
    waiting = chain(dask_scheduler.queued, dask_scheduler.unrunnable)
    for running, tasks in ((False, waiting), (True, (ts for ws in workers for ts in ws.processing))):
        for ts in tasks:
            n = slots(ts)
            if n:
                d = duration(ts.prefix)
                work += d
                worker_seconds += d / n
                width += 1 / n
                if not running:
                    ready += d
                    guessed = guessed or ts.prefix.duration_average < 0
    target = min(math.ceil(worker_seconds / max(target_duration, 1e-3)), math.ceil(width))
    if width and not workers:
        target = max(1, target)
    idle = sorted((ws for ws in workers if not ws.processing), key=lambda ws: ws.nbytes)
    target = max(target, len(workers) - len(idle))  # busy workers stay
    busy = float(sum(min(len(ws.processing), ws.nthreads) for ws in workers))
    return target, [str(ws.name) for ws in idle], work, busy, ready, guessed
