"""``dask-deploy gc``: find and remove what crashed or killed clients left behind.

What is alive is judged from the backend side, never from this process's records (they may
live in another state directory, container or login node). Each backend's
``deploy_discover`` reports what it runs, with its ownership tags (``owner``, ``created``)
and what it can tell about liveness. A cluster is **alive**, and never touched, when

- it is younger than the grace period (``deploy.gc-grace``, default 60 s, the default
  ``start_timeout``): it may still be starting, before any record exists; or
- its owner's heartbeat is recent: the client that started it still runs
  (``owner_alive``, or an ``owner_pid`` on this host that runs); or
- its scheduler answers as that cluster (``scheduler_running`` from the backend, or the
  ``scheduler`` address answering :func:`cluster_identity` with the cluster's name),
  unless the cluster is known not to be detached and its client is known to be gone; or
- nothing can be told either way (no owner heartbeat, no scheduler to ask): left alone.

The records in this process's state directory are never evidence that a cluster is alive,
but one thing there is evidence that it is dead: a cluster that was not detached, whose
owning client ran on this host and is gone, and of which its backend runs nothing (what
a killed client leaves when its backend's own safety net, an agent that exits with its
client's connection, already stopped everything). Such a record is judged like any
resource (as a handle of kind ``record``) and removed by the core, not by the backend.

By default only the current user's resources are considered (``owner`` tag); untagged or
other users' resources are listed as left alone unless ``all_users``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _state
from ._errors import SpecError
from ._owner import owner_is_me, owner_tag, tags_of
from ._plugins import backend_info, cluster_plugin_manager, installed_backends
from ._specs import ClusterSpec, Handle

__all__ = ["Verdict", "cluster_identity", "collect_garbage", "gc_grace", "judge"]

#: Grace period when ``deploy.gc-grace`` is not set: the default ``start_timeout``.
DEFAULT_GRACE = 60.0


def gc_grace() -> float:
    """Seconds a cluster is left alone after its creation (``deploy.gc-grace``)."""
    import dask.config

    value = dask.config.get("deploy.gc-grace", default=None)
    return DEFAULT_GRACE if value is None else float(value)


async def cluster_identity(address: str, security: Any = None, timeout: float = 3.0
                           ) -> str | None:
    """The name of the cluster whose scheduler answers at ``address``.

    Schedulers started by a dask-deploy agent publish their cluster's tags in their
    metadata (key ``"dask-deploy"``). Returns that cluster name; ``""`` when something
    answers there but cannot be asked (TLS without this cluster's credentials, a scheduler
    that does not name its cluster); ``None`` when nothing answers.
    """
    from distributed.core import rpc

    from ._agent import METADATA_KEY

    try:
        args = security.get_connection_args("client") if security is not None else {}
        async with rpc(address, connection_args=args, timeout=timeout) as r:
            meta = await asyncio.wait_for(
                r.get_metadata(keys=[METADATA_KEY], default=None), timeout)
    except Exception:
        return "" if _port_open(address, timeout) else None
    return str(meta.get("cluster") or "") if isinstance(meta, Mapping) else ""


def _port_open(address: str, timeout: float) -> bool:
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Verdict:
    """What ``gc`` decided about one discovered resource, and why."""

    backend: str
    handle: Handle
    alive: bool
    why: str
    mine: bool | None  # None: untagged, owner unknown

    @property
    def cluster(self) -> str:
        return self.handle.cluster

    @property
    def owner(self) -> str | None:
        return tags_of(self.handle.data)[0]

    @property
    def age(self) -> float | None:
        created = tags_of(self.handle.data)[1]
        return None if created is None else max(0.0, time.time() - created)

    @property
    def kind(self) -> str:
        d = self.handle.data
        return str(d.get("kind") or d.get("role") or ("agent" if "pids" in d else "workers"))

    def line(self) -> str:
        age = "age ?" if self.age is None else f"age {self.age:.0f}s"
        return (f"{self.backend} {self.handle.cluster} {self.kind} {self.handle.name} "
                f"({self.handle.backend_id}) owner {self.owner or '?'} {age}: {self.why}")


def judge(handle: Handle, grace: float, scheduler_name: str | None = None,
          now: float | None = None) -> tuple[bool, str]:
    """Whether the cluster of ``handle`` is alive, and why (see the module's rules).

    ``scheduler_name`` is what :func:`cluster_identity` said at ``handle.data["scheduler"]``
    (None: nothing answered; not asked when the data has no address).
    """
    d = handle.data
    now = time.time() if now is None else now
    owner, created = tags_of(d)
    if created is not None and now - created < grace:
        return True, f"alive: created {now - created:.0f}s ago, within the {grace:g}s grace period"
    owner_alive: bool | None = d.get("owner_alive")
    pid = d.get("owner_pid")
    if owner_alive is None and isinstance(pid, int) and owner and \
            owner.rpartition("@")[2] == socket.gethostname():
        owner_alive = _pid_runs(pid)
    if owner_alive:
        return True, f"alive: its client {owner or ''}{f' (pid {pid})' if pid else ''} still runs"
    sched: bool | None = d.get("scheduler_running")
    address = d.get("scheduler")
    if address:
        if scheduler_name == handle.cluster:
            sched = True
        elif scheduler_name is None or scheduler_name:  # nothing there, or another cluster's
            sched = False
    detached = d.get("detached")
    gone = f"its client {owner or ''}{f' (pid {pid})' if pid else ''} is gone"
    if sched and not (detached is False and owner_alive is False):
        return True, f"alive: its scheduler{f' at {address}' if address else ''} answers as {handle.cluster}"
    if detached is False and owner_alive is False:
        return False, f"dead: {gone} and the cluster is not detached"
    if sched is False:
        where = f" at {address}" if address else ""
        return False, f"dead: no scheduler of {handle.cluster} answers{where}" + (
            f"; {gone}" if owner_alive is False else "")
    return True, "left alone: cannot tell whether it is in use (no owner heartbeat, no scheduler to ask)"


def _security_of(cluster: str) -> Any:
    """This cluster's TLS credentials if a record here has them: only to ask its scheduler."""
    with contextlib.suppress(Exception):
        record = _state.load(cluster)
        if record is not None and record.spec.tls is not None:
            return record.spec.tls.security()
    return None


async def _verdicts(backend: str, handles: Sequence[Handle], grace: float,
                    all_users: bool) -> list[Verdict]:
    out = []
    names: dict[str, str | None] = {}
    for h in handles:
        address = h.data.get("scheduler")
        if address and address not in names:
            names[address] = await cluster_identity(address, _security_of(h.cluster))
        alive, why = judge(h, grace, names.get(address) if address else None)
        mine = owner_is_me(tags_of(h.data)[0])
        if not mine and not all_users:
            alive, why = True, ("left alone: owner unknown (untagged)" if mine is None else
                                "left alone: another user's") + " (--all-users to include)"
        out.append(Verdict(backend, h, alive, why, mine))
    # A cluster is one thing: if any of its parts is alive, all of it is.
    kept = {v.handle.cluster for v in out if v.alive}
    return [v if v.alive or v.handle.cluster not in kept else
            dataclasses.replace(v, alive=True, why="left alone: another part of its cluster is alive")
            for v in out]


def _record_handles(backend: str, found: Sequence[Handle],
                    clusters: Iterable[str] | None) -> list[Handle]:
    """The records here of ``backend``'s clusters of which it runs nothing (``found``),
    owned by a client on this host and not detached, as handles that :func:`judge` can
    tell dead by their owner's pid alone.

    A detached record is never offered: its owner is nobody, and that the backend (asked
    with this gc's options: another namespace, other hosts) finds nothing of it does not
    mean it is gone.
    """
    seen = {h.cluster for h in found}
    wanted = set(clusters) if clusters is not None else None
    user = owner_tag().rpartition("@")[0]
    out = []
    for r in _state.list_clusters():
        if r.backend != backend or r.name in seen or r.detached or r.owner_pid is None \
                or r.owner_host != socket.gethostname() or (wanted is not None and r.name not in wanted):
            continue
        out.append(Handle(backend, r.name, f"{r.name}-record", str(_state.record_path(r.name)),
                          {"kind": "record", "owner": f"{user}@{r.owner_host}",
                           "created": r.created, "owner_pid": r.owner_pid, "detached": False}))
    return out


def _live_clusters() -> set[str]:
    """Clusters whose records here say they are used: kept out of the record clean-up."""
    return {r.name for r in _state.list_clusters()
            if r.owner_alive() or r.scheduler_answers()}


async def collect_garbage(backends: Iterable[str] | None = None,
                          options: Mapping[str, Mapping[str, Any]] | None = None,
                          dry_run: bool = False,
                          echo: Callable[[str], None] = print,
                          all_users: bool = False,
                          grace: float | None = None,
                          confirm: Callable[[list[Verdict]], bool] | None = None,
                          clusters: Iterable[str] | None = None,
                          ) -> list[Verdict]:
    """Find what dask-deploy left running, judge what is dead, and remove that if asked.

    Asks each backend's ``deploy_discover`` hook (the backend itself, not our records) for
    everything it runs for dask-deploy, judges each cluster (see the module docstring),
    prints every verdict, and - unless ``dry_run``, and only if ``confirm`` (given the
    dead ones) agrees - stops the dead with ``deploy_stop_workers``. A backend that
    cannot be reached is reported and nothing of it is judged. ``options[backend]`` are
    the backend options needed to reach it (hosts, namespace, region); ``clusters``
    narrows it to those cluster names. Returns the dead
    verdicts (removed unless ``dry_run`` or not confirmed).
    """
    options = options or {}
    grace = gc_grace() if grace is None else grace
    names = list(backends) if backends is not None else list(installed_backends())
    dead: list[Verdict] = []
    opened: list[tuple[str, ClusterSpec, Any]] = []
    try:
        for name in names:
            info = backend_info(name)
            try:
                opts = info.options(**options.get(name, {})) if info.options else None
            except (SpecError, TypeError) as e:
                echo(f"not checked: {name}: {e} (pass its options with -b {name} -o KEY=VALUE)")
                continue
            spec = ClusterSpec(backend=name, name="dask-deploy-gc", backend_options=opts)
            pm, _ = cluster_plugin_manager(spec, extensions={})
            opened.append((name, spec, pm))
            try:
                result = pm.hook.deploy_discover(cluster=spec, cluster_id=None)
                found = list(await result) if result is not None else []
                if clusters is not None:
                    wanted = set(clusters)
                    found = [h for h in found if h.cluster in wanted]
                found += _record_handles(name, found, clusters)
            except Exception as e:
                echo(f"not checked: {name} could not be reached: {type(e).__name__}: {e}")
                continue
            for v in await _verdicts(name, found, grace, all_users):
                if v.alive:
                    echo(f"keeping {v.line()}")
                else:
                    echo(f"{'would remove' if dry_run else 'dead'} {v.line()}")
                    dead.append(v)
        if dry_run or not dead or (confirm is not None and not confirm(dead)):
            return dead
        pms = {name: (spec, pm) for name, spec, pm in opened}
        for backend, cluster_id in sorted({(v.backend, v.handle.cluster) for v in dead}):
            spec, pm = pms[backend]
            handles = [v.handle for v in dead if v.backend == backend and v.handle.cluster == cluster_id]
            # A record is the core's, not the backend's: removed below, never passed to it.
            running = [h for h in handles if h.data.get("kind") != "record"]
            try:
                if running:
                    stop = pm.hook.deploy_stop_workers(
                        cluster=dataclasses.replace(spec, name=cluster_id), handles=running)
                    if stop is not None:
                        await stop
                echo(f"removed {backend} {cluster_id} ({len(handles)} resources)")
            except Exception as e:
                echo(f"failed to remove {backend} {cluster_id}: {type(e).__name__}: {e}")
            with contextlib.suppress(Exception):
                if _state.load(cluster_id) is not None and cluster_id not in _live_clusters():
                    _state.remove(cluster_id)
        return dead
    finally:
        for _, spec, pm in opened:
            with contextlib.suppress(Exception):
                teardown = pm.hook.deploy_teardown(cluster=spec)
                if teardown is not None:
                    await teardown
