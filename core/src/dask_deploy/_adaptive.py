"""Adaptive scaling: a pure policy (:func:`decide`) and the ``Adaptive`` that feeds it.

The policy answers one question per step, from a :class:`Snapshot` of the cluster (the
scheduler's target, the planned, starting and connected workers, which connected workers
the scheduler would close, how long units took to start, the queued work) and the little
it remembers (:class:`Memory`: since when each worker has been idle). It does no I/O, reads
no clock and draws no random number, so it is tested as a function and replayed by the
simulator (``benchmarks/simulate.py``) on thousands of workers in seconds.

Its rules, against distributed's ``Adaptive`` (close after ``wait_count`` consecutive
suggestions, ``interval`` apart; starting workers closed first):

* **Scale down fast, without flapping (ski rental).** A surplus worker is retired once it
  has been idle, without interruption, for ``cooldown`` seconds. By default (``"auto"``)
  the cooldown is what a replacement would be billed: the median boot time of this
  cluster's units (from leaving the queue to connected), bounded to [``cooldown_min``,
  ``cooldown_max``]; before any unit was measured, a prior per kind of backend (see
  :func:`backend_defaults`). Keeping an idle worker as long as a new one takes to boot is
  the rent-or-buy rule: never more than twice the cost of the best choice made with
  hindsight. The queue wait is not part of it (a queued job is not billed): it is what
  the queue-aware scale-up below accounts for. On backends that run on this machine
  (local, cuda, fake) the cooldown is 0.3-0.5 s, so idle workers are gone well within a
  second.
* **No oscillation.** A worker is retired only after ``cooldown`` seconds of uninterrupted
  idleness, and never before its unit has lived ``min_lifetime`` seconds (default: the
  cooldown); no step both starts and retires; a unit that is booting is never retired
  (the reconciler fails it after ``start_timeout``), one still queued only when the known
  work no longer needs it (below). So a load whose idle gaps are shorter than the cooldown never
  retires a worker, and a constant load never changes the plan.
* **Graceful retirement.** Retiring goes through the scheduler's ``retire_workers``, which
  copies data held only by the retiring worker to another worker first, and keeps the
  worker if it cannot; the scheduler's own choice (``workers_to_close``) prefers idle
  workers that hold the least data. A unit with several workers is retired only when all
  of them are retire-ready (never a busy sibling with it).
* **Queue-aware scale-up.** Units that are starting (queued jobs, unscheduled pods) count
  towards the target, as planned capacity; ones queued past ``queue_timeout`` do not (the
  reconciler replaces them). When the queued work is known (an in-process scheduler), no
  more workers are requested than can still be useful: a new worker arrives after the
  expected start time ``L`` (queue included) and should then have at least ``L`` seconds
  of work (rent or buy again), so with ``W`` thread-seconds of work, ``c`` threads
  connected or on their way and ``t`` threads per worker, at most
  ``(max(0, W + r * L / 2 - c_connected * L) / L - c) / t`` workers are added, ``r``
  being the rate at which work has been arriving (thread-seconds per second, the median
  over the last 15 steps, so that a lump of work is not taken for a stream), or, if
  more, enough to keep up with ``r``; a cluster with no worker and work to do always
  gets one. ``r * L / 2``: what arrives while a new worker starts is work for it too,
  half of it (the units already on their way arrive, on average, halfway through and
  take the first half). Measured on the simulator's steady load: without it a backlog
  built while task durations were unknown was never worked off (the last result 7-37 s
  late on batch); with all of ``r * L`` the cluster overshoots (worker-seconds no
  longer below distributed's).
* **No cap on a guess.** While part of the queued work is tasks of a kind none of which
  has finished yet, its size is the scheduler's guess (0.5 s a task): the cap would size
  the first lump by it and submit a few units where the tasks may take minutes (and
  with random queue delays the first result comes from the fastest of the units
  submitted). Until a duration is known, the scheduler's target stands.
* **Cancel what is still queued.** When the target falls below the plan and the work is
  known, units still in the backend's queue (not running, not billed) are cancelled
  first, the last submitted first, whole units only; then idle workers past the cooldown
  are retired. A unit that left the queue (booting, billed) is never retired while it
  starts; without a known amount of work a queued unit keeps its place.
"""

from __future__ import annotations

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
    #: Part of ``work`` is a guess: tasks of a kind none of which has finished yet.
    guessed: bool = False
    #: Requested workers whose unit is still in the backend's queue (not running, not billed).
    queued: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Memory:
    """What the policy carries from one step to the next."""

    #: Worker -> since when it has been a surplus idle worker without interruption.
    idle_since: Mapping[str, float] = field(default_factory=dict)
    #: (time, work) at the previous step, to see how fast work arrives.
    work_at: tuple[float, float] | None = None
    #: Thread-seconds of work that arrived per second, at each of the last steps.
    arrivals: tuple[float, ...] = ()


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


def cooldown(s: Snapshot, p: AdaptivePolicy) -> float:
    """Idle seconds before a surplus worker is retired (see the module docstring)."""
    if p.cooldown is not None:
        return p.cooldown
    boot = statistics.median(s.boot_times) if s.boot_times else p.start_prior
    return min(max(boot, p.cooldown_min), p.cooldown_max)


def _useful_new_workers(s: Snapshot, p: AdaptivePolicy, counted: int, rate: float) -> int | None:
    """How many more workers can still pay for their start (None: no limit known)."""
    if s.work is None or not p.queue_aware:
        return None
    if s.work <= 0:
        return 0
    if s.guessed:
        # The scheduler has guessed how long tasks take (none of their kind has finished):
        # a lump sized by the guess is too small when the tasks are long, and the first
        # result comes from the fastest of the units submitted. Until it knows, no cap.
        return None
    t = p.threads_per_worker
    # Work that keeps arriving needs threads to keep up with it, whatever is queued now.
    keep_up = max(0, math.ceil((rate - counted * t) / t))
    latency = start_estimate(s, p)
    # Work that arrives while a new worker starts is work for it too, half of it: the units
    # already on their way arrive, on average, halfway through and take the first half.
    lump = _useful_count(s.work + rate * latency / 2, len(s.observed) * t, counted * t, latency, t)
    if counted == 0:
        lump = max(1, lump)  # nothing runs or comes: at least one, whatever the estimate
    return max(lump, keep_up)


def _useful_count(work: float, connected: int, coming: int, latency: float, t: int) -> int:
    latency = max(latency, 1e-3)
    left = max(0.0, work - connected * latency)  # what is left when a new one arrives
    return max(0, math.floor((left / latency - coming) / t))


_RATE_WINDOW = 15


def decide(s: Snapshot, memory: Memory, p: AdaptivePolicy) -> Recommendation:
    """One adaptive step: scale up to a target, retire idle surplus workers, or nothing."""
    now = s.now
    idle_since = {w: memory.idle_since.get(w, now) for w in s.idle if w in s.observed}
    arrivals = memory.arrivals
    if s.work is not None and memory.work_at is not None and now > memory.work_at[0]:
        # Work changes by what arrives minus what the busy threads do.
        dt = now - memory.work_at[0]
        arrivals = (*arrivals[-(_RATE_WINDOW - 1):], max(0.0, (s.work - memory.work_at[1]) / dt + s.busy))
    # The median of the last steps: a stream that keeps coming, not one lump (a burst, or
    # the scheduler learning how long a task takes), which the lump rule above covers.
    rate = statistics.median(arrivals) if arrivals else 0.0
    mem = Memory(idle_since, None if s.work is None else (now, s.work), arrivals)
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
    if s.target == planned:
        return Recommendation("same", memory=mem)
    excess = planned - s.target
    # Planned but never started: nothing to lose, dropped at once.
    never = sorted(s.plan - s.requested)[:excess]
    excess -= len(never)
    retire: list[str] = []
    if excess > 0 and s.work is not None and s.queued:
        # Still in the queue, not billed: cancelled when the known work no longer needs
        # it, the last submitted first (it has waited least). Without a known amount of
        # work (the scheduler's target alone) a queued unit is kept, as before.
        waiting: dict[str, list[str]] = {}
        for w in s.requested:
            waiting.setdefault(s.unit_of.get(w, w), []).append(w)
        cancel = sorted((u for u, ms in waiting.items()
                         if all(m in s.queued and m not in s.observed for m in ms)),
                        key=lambda u: (-max(s.started_at.get(m, 0.0) for m in waiting[u]), u))
        for unit in cancel:
            if len(waiting[unit]) <= excess:  # whole units, never below target
                retire.extend(sorted(waiting[unit]))
                excess -= len(waiting[unit])
    if excess > 0 and idle_since:
        wait = cooldown(s, p)
        lifetime = wait if p.min_lifetime is None else p.min_lifetime

        def ready(w: str) -> bool:
            return (w in idle_since and now - idle_since[w] >= wait
                    and now - s.started_at.get(w, -math.inf) >= lifetime)

        # Whole units only: all of a unit's workers are ready, or none is retired.
        members: dict[str, list[str]] = {}
        for w in s.observed | s.requested:
            members.setdefault(s.unit_of.get(w, w), []).append(w)
        done: set[str] = set()
        for w in s.idle:
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
    workers = tuple(never) + tuple(retire)
    if workers:
        return Recommendation("down", workers=workers, memory=mem,
                              why=f"target {s.target}; idle past the cooldown: {retire}")
    return Recommendation("same", memory=mem)


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
    #: The last :func:`pool_load` of the pool: (idle workers, work, busy threads).
    _pool_load: tuple[list[str], float, float] | None = None

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
        self._start_times: deque[float] = deque(maxlen=20)
        self._boot_times: deque[float] = deque(maxlen=20)
        self._measured: set[str] = set()

    def _observe_starts(self) -> None:
        """Record how long each unit took from start to connected (once per unit)."""
        observed = getattr(self.cluster, "_observed", {})
        for name, obs in observed.items():
            if obs.connected_at is not None and name not in self._measured:
                self._measured.add(name)
                self._start_times.append(obs.connected_at - obs.started_at)
                self._boot_times.append(obs.connected_at - (obs.running_at or obs.started_at))
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
            target, idle, work, busy = pool_load(cluster.scheduler, *args)
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
            target, idle, work, busy = reply["result"]
        self._pool_load = (list(idle), float(work), float(busy))
        return int(target)

    def _work(self) -> tuple[float | None, float, bool]:
        """Thread-seconds of queued and running work, the busy threads and whether part of
        the work is a guess, from an in-process scheduler ((None, 0, False): unknown)."""
        if self.pool is not None:
            return (None, 0.0, False) if self._pool_load is None else (*self._pool_load[1:], False)
        sched = getattr(self.cluster, "scheduler", None)
        if sched is None:
            return None, 0.0, False
        try:
            from itertools import chain, islice

            limit = sum(ws.memory_limit for ws in sched.workers.values())
            if limit and sum(ws.nbytes for ws in sched.workers.values()) > 0.6 * limit:
                return None, 0.0, False  # the scheduler asks for workers for memory: no cap
            ready = len(sched.queued) + len(sched.unrunnable)
            sample = list(islice(chain(sched.queued, sched.unrunnable), 100))
            queued = sum(sched._get_prefix_duration(ts.prefix) for ts in sample)
            if ready > 100:
                queued *= ready / 100
            busy = sum(min(len(ws.processing), ws.nthreads) for ws in sched.workers.values())
            # No task of the kind has finished: the scheduler's duration is a guess.
            guessed = any(ts.prefix.duration_average < 0 for ts in sample)
            return float(sched.total_occupancy + queued), float(busy), guessed
        except Exception:  # a distributed without these internals: no cap
            return None, 0.0, False

    def snapshot(self, target: int, idle: list[str]) -> Snapshot:
        cluster = self.cluster
        now = time.monotonic()
        self._observe_starts()
        unit_of: dict[str, str] = {}
        started_at: dict[str, float] = {}
        observed_units = getattr(cluster, "_observed", {})
        work, busy, guessed = self._work()
        queued: set[str] = set()
        for name, unit in getattr(cluster, "units", {}).items():
            obs = observed_units.get(name)
            for w in unit.worker_names:
                if w != name:
                    unit_of[w] = name
                if obs is not None:
                    started_at[w] = obs.started_at
                    if obs.phase is Phase.PENDING:
                        queued.add(w)
        return Snapshot(now=now, target=target, plan=frozenset(self.plan),
                        requested=frozenset(self.requested), observed=frozenset(self.observed),
                        idle=tuple(idle), unit_of=unit_of, started_at=started_at,
                        start_times=tuple(self._start_times),
                        boot_times=tuple(self._boot_times), work=work, busy=busy,
                        guessed=guessed, queued=frozenset(queued))

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
              ) -> tuple[int, list[str], float, float]:
    """The load of one pool of workers, read from a ``distributed.Scheduler``.

    A task belongs to the pool when the pool's worker ``resources`` satisfy its resource
    restrictions, or, for a task without restrictions, when the pool is ``general`` (takes
    unrestricted work). Returns the workers the pool needs to run its work within
    ``target_duration`` (as the scheduler's ``adaptive_target``, with as many tasks at
    once per worker as its threads and resources allow, and never more workers than
    tasks), its connected idle workers (least data first), the thread-seconds of its work
    and its busy threads. Runs on the scheduler (pickled for a remote one): plain values in
    and out.
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
    work = 0.0
    for ts in chain(dask_scheduler.queued, dask_scheduler.unrunnable,
                    (ts for ws in workers for ts in ws.processing)):
        n = slots(ts)
        if n:
            d = duration(ts.prefix)
            work += d
            worker_seconds += d / n
            width += 1 / n
    target = min(math.ceil(worker_seconds / max(target_duration, 1e-3)), math.ceil(width))
    if width and not workers:
        target = max(1, target)
    idle = sorted((ws for ws in workers if not ws.processing), key=lambda ws: ws.nbytes)
    target = max(target, len(workers) - len(idle))  # busy workers stay
    busy = float(sum(min(len(ws.processing), ws.nthreads) for ws in workers))
    return target, [str(ws.name) for ws in idle], work, busy
