"""What the checks share: option merging, the cluster factory, fault injection, waiting, leaks.

Everything here uses the public API of ``dask_deploy`` only (``from_name``, ``SpecCluster``'s
documented attributes, ``installed_backends``, the hooks), so the suite keeps working while
the core changes inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ClusterFactory",
    "Faults",
    "StopFailure",
    "backend_info",
    "default_faults",
    "describe",
    "discover",
    "kill_worker",
    "parse_option",
    "wait_for",
]

#: Options the suite passes unless the backend's own options (``deploy_options``) say otherwise.
SUITE_DEFAULTS: Mapping[str, Any] = {"n_workers": 0, "threads_per_worker": 1, "silence_logs": logging.ERROR}
#: Options whose values are dicts: merged key by key instead of replaced.
_NESTED = ("worker_options", "scheduler_options", "env", "resources")


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line; VALUE is JSON if it parses, else a string.

    ``n_workers=2`` gives 2, ``hosts=["a","b"]`` a list, ``python=/usr/bin/python3`` a string.
    """
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ValueError(f"--deploy-option {text!r}: expected KEY=VALUE, e.g. start_timeout=30")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def merge_options(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; dict-valued options (worker_options, env, ...) merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in _NESTED and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                value = {**out[key], **value}
            out[key] = value
    return out


@functools.cache
def _installed() -> dict[str, Any]:
    from dask_deploy import installed_backends

    return dict(installed_backends())


def backend_info(name: str) -> Any:
    """The installed backend's :class:`dask_deploy.BackendInfo` (pytest fails if it is missing)."""
    infos = _installed()
    if name not in infos:  # registered since (dask_deploy.register_backend)?
        _installed.cache_clear()
        infos = _installed()
    if name not in infos:
        from dask_deploy import BackendNotFound

        raise BackendNotFound(f"no installed backend {name!r} (installed: {', '.join(infos) or 'none'}); "
                              "is its distribution installed in this environment?")
    return infos[name]


# --------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------


def kill_worker(cluster: Any, worker_name: str) -> None:
    """Kill one running worker of ``cluster`` abruptly, through the scheduler (any backend).

    The worker runs ``os._exit(1)``, as after SIGKILL. In-process backends (the fake) set a
    ``dask_deploy_kill`` callable on their ``distributed.Worker`` objects instead, so that a
    kill does not end the test process itself.
    """
    from distributed import Client

    async def die(dask_worker: Any = None) -> None:  # nested: pickled by value, no import
        import os as _os

        kill = getattr(dask_worker, "dask_deploy_kill", None)
        if callable(kill):
            kill()
        else:
            _os._exit(1)

    addresses = [a for a, w in cluster.scheduler_info["workers"].items() if w["name"] == worker_name]
    if not addresses:
        raise AssertionError(f"worker {worker_name!r} is not connected; cannot kill it")
    with Client(cluster, set_as_default=False) as client, contextlib.suppress(Exception):
        client.run(die, workers=addresses, wait=False)


def inject_start_failure(cluster: Any) -> None:
    """Make the next unit start of a fake-like backend fail (``cluster.backend.inject``)."""
    cluster.backend.inject(fail_starts=1)


class StopFailure:
    """An extension (``from_name(..., extensions={...})``) that makes ``deploy_stop_workers``
    fail on any backend: the backend's own stop runs to its end, then the call raises
    :class:`~dask_deploy.BackendError`, as a stop that could not confirm the workers are
    gone would. The default ``Faults.stop_failure`` for real backends; nothing leaks."""

    def __init__(self) -> None:
        from dask_deploy import hookimpl

        def deploy_stop_workers() -> Any:
            result = yield

            async def fail() -> None:
                from dask_deploy import BackendError

                if result is not None:
                    await result
                raise BackendError("dask-deploy conformance: injected stop failure (the "
                                   "workers were stopped, the stop reports that it failed)")

            return fail()

        self.deploy_stop_workers = hookimpl(wrapper=True)(deploy_stop_workers)


_FAIL_PRELOAD = "raise RuntimeError('dask-deploy conformance: injected start failure')"
_HANG_PRELOAD = "import time; time.sleep(600)"
_SLOW_PRELOAD = "import time; time.sleep(1.5)"


@dataclass(frozen=True)
class Faults:
    """How the suite injects faults into one backend. ``None`` means "cannot": the check skips.

    The defaults (:func:`default_faults`) work for any backend that runs real
    ``distributed.Worker`` processes and honours ``worker_options``; override the
    ``deploy_faults`` fixture where your backend needs something else.
    """

    #: Option overrides under which every worker start fails (the unit ends with an error).
    start_failure: Mapping[str, Any] | None = None
    #: Option overrides under which workers run but never connect to the scheduler.
    never_connects: Mapping[str, Any] | None = None
    #: Option overrides under which the cluster itself fails to start.
    cluster_start_failure: Mapping[str, Any] | None = None
    #: Option overrides under which stopping workers fails (``deploy_stop_workers`` raises).
    stop_failure: Mapping[str, Any] | None = None
    #: Option overrides under which each worker takes a second or more to connect.
    slow_start: Mapping[str, Any] | None = None
    #: ``kill(cluster, worker_name)``: kill one connected worker abruptly.
    kill: Callable[[Any, str], None] | None = kill_worker
    #: ``inject(cluster)``: make the next unit start of a running cluster fail.
    inject_start_failure: Callable[[Any], None] | None = None

    def replace(self, **changes: Any) -> Faults:
        return dataclasses.replace(self, **changes)


def default_faults(info: Any) -> Faults:
    """The fake's switches where the backend has them (``fail_start``, ...), else generic ones.

    Generic: a worker preload that raises (start failure), one that sleeps (never connects),
    an invalid scheduler option (cluster start failure), and the :class:`StopFailure`
    extension (stop failure: the backend stops, then the hook call raises). A ``managed``
    backend gets the stop failure and the kill only.
    """
    fields = {f.name for f in dataclasses.fields(info.options)} if info.options else set()
    if "managed" in info.capabilities:
        # The service starts the scheduler and the workers with its own commands: a worker
        # preload or a scheduler option cannot reach them (the backend refuses both), so
        # only faults from outside remain; a backend's tests may add its own ways.
        return Faults(stop_failure={"extensions": {"dask-deploy-conformance-stop-failure":
                                                   StopFailure()}})
    if {"fail_start", "never_connect", "fail_prepare"} <= fields:
        return Faults(start_failure={"fail_start": True}, never_connects={"never_connect": True},
                      cluster_start_failure={"fail_prepare": True}, slow_start={"start_delay": 1.0},
                      stop_failure={"fail_stop": True},
                      inject_start_failure=inject_start_failure)
    return Faults(
        start_failure={"worker_options": {"preload": [_FAIL_PRELOAD]}},
        never_connects={"worker_options": {"preload": [_HANG_PRELOAD]}},
        cluster_start_failure={"scheduler_options": {"dask_deploy_conformance_invalid": True}},
        slow_start={"worker_options": {"preload": [_SLOW_PRELOAD]}},
        stop_failure={"extensions": {"dask-deploy-conformance-stop-failure": StopFailure()}},
    )


# --------------------------------------------------------------------------------------
# Observing a cluster
# --------------------------------------------------------------------------------------


def _settled(read: Callable[[], Any]) -> Any:
    """Read state that the cluster's event loop thread may change while we iterate it."""
    for _ in range(100):
        try:
            return read()
        except RuntimeError:  # "dictionary/set changed size during iteration": read again
            time.sleep(0.001)
    return read()


def connected(cluster: Any) -> dict[str, str]:
    """Worker name -> address of every worker the scheduler knows."""
    return dict(_settled(lambda: {str(w["name"]): a for a, w in
                                  dict(cluster.scheduler_info.get("workers", {})).items()}))


def plan(cluster: Any) -> set[str]:
    """The workers the cluster plans to run (``cluster.plan``), read safely from any thread."""
    return set(_settled(lambda: set(cluster.plan)))


def requested(cluster: Any) -> set[str]:
    """The workers the cluster asked the backend for (``cluster.requested``), read safely."""
    return set(_settled(lambda: set(cluster.requested)))


def describe(cluster: Any) -> str:
    """A few lines of what the cluster thinks and sees, for assertion messages."""
    lines = [f"cluster {getattr(cluster, 'name', '?')} status={getattr(cluster, 'status', '?')}"]
    with contextlib.suppress(Exception):
        lines.append(f"  plan={sorted(plan(cluster))}")
        lines.append(f"  requested={sorted(requested(cluster))}")
        lines.append(f"  connected={sorted(connected(cluster))}")
        lines.append(f"  error={cluster.error}")
    with contextlib.suppress(Exception):
        log = [line for _, line in list(cluster._cluster_manager_logs)[-8:]]
        lines.append("  recent cluster log:\n    " + "\n    ".join(log))
    return "\n".join(lines)


def wait_for(predicate: Callable[[], Any], timeout: float = 120.0, what: str = "a condition",
             cluster: Any = None, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy and return that value; on timeout fail naming
    ``what``, the last value and (given ``cluster``) the cluster's state.

    Tests share it (also outside the suite): the default timeout is generous because other
    test runs share the machine's cores; it only matters when the wait fails.
    """
    deadline = time.monotonic() + timeout
    while True:
        if value := predicate():
            return value
        if time.monotonic() > deadline:
            detail = f"\n{describe(cluster)}" if cluster is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting until {what} "
                                 f"(last: {value!r}){detail}")
        time.sleep(interval)


async def async_wait_for(predicate: Callable[[], object], timeout: float, what: str,
                         cluster: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = f"\n{describe(cluster)}" if cluster is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting until {what}{detail}")
        await asyncio.sleep(0.05)


def expected_workers(cluster: Any, n: int) -> int:
    """How many workers ``scale(n)`` yields: whole units (a unit may run several workers)."""
    per_unit = getattr(cluster, "workers_per_unit", 1) or 1
    return math.ceil(n / per_unit) * per_unit


def converged(cluster: Any, n: int) -> bool:
    """Exactly the planned workers run and are connected, and there are ``n`` of them."""
    seen, planned = set(connected(cluster)), plan(cluster)
    return len(planned) == n and seen == planned and requested(cluster) == planned


# --------------------------------------------------------------------------------------
# Leaks
# --------------------------------------------------------------------------------------


def discover(info: Any, spec: Any) -> list[Any] | None:
    """What the backend itself still runs for ``spec.name`` (None: it cannot enumerate).

    Uses a fresh plugin object from ``BackendInfo.factory`` and the pluggy hook, as
    ``dask-deploy gc`` would from another process.
    """
    import pluggy
    from dask_deploy import hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    plugin = info.factory(spec)
    pm.register(plugin)

    async def call() -> Any:
        try:
            result = pm.hook.deploy_discover(cluster=spec, cluster_id=spec.name)
            return None if result is None else list(await result)
        finally:
            teardown = pm.hook.deploy_teardown(cluster=dataclasses.replace(spec, shutdown_on_close=False))
            if teardown is not None:
                with contextlib.suppress(Exception):
                    await teardown

    return asyncio.run(call())


def _records() -> list[Any]:
    """The core's records of clusters (``dask_deploy.list_clusters``), where it has them."""
    import dask_deploy

    lister = getattr(dask_deploy, "list_clusters", None)
    if lister is None:
        return []
    with contextlib.suppress(Exception):
        return list(lister())
    return []


def _processes() -> dict[int, Any]:
    import psutil

    me = psutil.Process()
    out = {}
    with contextlib.suppress(psutil.Error):
        for p in me.children(recursive=True):
            out[p.pid] = p
    return out


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _tagged(name: str) -> list[Any]:
    """Processes anywhere on this machine whose command line names the cluster."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if any(name in part for part in p.info["cmdline"] or []) and _alive(p):
                found.append(p)
    return found


#: Names of every cluster this interpreter's checks started (``ClusterFactory.merged``): the
#: session-end check looks, machine-wide, for processes of these clusters and only these
#: (other test runs share the machine). Names are random (``conf-<hex>``), so a name found
#: in a command line or an environment is this session's.
SESSION_CLUSTERS: set[str] = set()


def processes_of(names: set[str] | frozenset[str]) -> dict[int, tuple[Any, str]]:
    """Live processes anywhere on this machine tagged with one of the cluster ``names``:
    the name in their command line (worker names, agents' ``--cluster``) or in an
    environment variable (``DASK_DEPLOY_CLUSTER``, a batch job's name). pid -> (process,
    which cluster). This process and its ancestors are left out."""
    import psutil

    if not names:
        return {}
    me = psutil.Process()
    skip = {me.pid, *(p.pid for p in me.parents())}
    found: dict[int, tuple[Any, str]] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid in skip:
            continue
        with contextlib.suppress(psutil.Error, TypeError):
            text = " ".join(p.info["cmdline"] or [])
            hit = next((n for n in names if n in text), None)
            if hit is None:
                env = p.environ()
                hit = next((n for n in names for v in env.values() if n in v), None)
            if hit is not None and _alive(p):
                found[p.pid] = (p, hit)
    return found


@dataclass
class ClusterFactory:
    """Starts clusters of the backend under test and guarantees they are closed.

    ``factory(**overrides)`` starts one (sync) and returns the ``SpecCluster``;
    ``factory.options(**overrides)`` gives the merged options for starting one yourself
    (async tests). Every cluster gets a fresh name, so leak checks can find what is its.
    """

    backend: str
    options: Mapping[str, Any]
    timeout: float = 60.0
    clusters: list[Any] = field(default_factory=list)
    #: Local processes that existed before each cluster was made (leak check baseline).
    baseline: dict[str, set[int]] = field(default_factory=dict)

    @property
    def info(self) -> Any:
        return backend_info(self.backend)

    def merged(self, **overrides: Any) -> dict[str, Any]:
        opts = merge_options(SUITE_DEFAULTS, self.options, overrides)
        opts.setdefault("name", f"conf-{uuid.uuid4().hex[:10]}")
        SESSION_CLUSTERS.add(opts["name"])
        self.baseline.setdefault(opts["name"], set(_processes()))
        return opts

    def __call__(self, **overrides: Any) -> Any:
        from dask_deploy import from_name

        opts = self.merged(**overrides)
        cluster = from_name(self.backend, **opts)
        self.clusters.append(cluster)
        return cluster

    def track(self, cluster: Any) -> Any:
        """Have an (async) cluster closed at teardown too."""
        self.clusters.append(cluster)
        return cluster

    def leaks(self, name: str, spec: Any = None, timeout: float | None = None) -> list[str]:
        """What still runs for cluster ``name``: backend discover, then local processes.

        Waits up to ``timeout`` for things to go (processes take a moment to be reaped).
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        before = self.baseline.get(name, set())
        while True:
            found = []
            if spec is not None:
                handles = discover(self.info, spec)
                found += [f"discover: {h.name} ({h.backend_id})" for h in handles or []]
            found += [f"record: {r.name} (a cluster record in the state directory)"
                      for r in _records() if r.name == name]
            procs = {p.pid: p for p in _tagged(name)}
            procs.update({pid: p for pid, p in _processes().items() if pid not in before and _alive(p)})
            for pid, p in sorted(procs.items()):
                with contextlib.suppress(Exception):
                    found.append(f"process {pid}: {' '.join(p.cmdline())[:200]}")
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def close_all(self) -> None:
        for cluster in self.clusters:
            with contextlib.suppress(BaseException):
                if getattr(cluster, "asynchronous", False):
                    continue  # closed by its own test's event loop, or not at all
                cluster.close(timeout=self.timeout)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.clusters)


def wait_converged(cluster: Any, n: int, timeout: float) -> None:
    """Wait until exactly ``n`` planned workers are connected; fail fast on a crash loop."""
    want = expected_workers(cluster, n)

    def done() -> bool:
        if cluster.error is not None:
            raise AssertionError(f"crash loop while converging to {want} workers: {cluster.error}\n"
                                 f"{describe(cluster)}")
        return converged(cluster, want)

    wait_for(done, timeout, f"exactly {want} planned workers are connected", cluster)
