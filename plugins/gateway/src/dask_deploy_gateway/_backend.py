"""The gateway backend: one dask-gateway cluster per dask-deploy cluster.

What the gateway gives and what the core wants differ in two ways, and this module bridges
them (limits in the package README):

* **Workers are a count.** The server starts and names workers itself (a uuid each) and
  its API only sets how many there are; when there are more than that, the *scheduler*
  picks which to close. The core starts and stops named units. So a start raises the
  count (``Gateway.scale_cluster``) and queues the units' worker names; each worker that
  then joins the scheduler takes the oldest queued name (``deploy_worker_name``, which the
  core asks for every joining worker). A stop lowers the count and retires exactly the
  unit's worker in one step on the scheduler (a function sent with ``run_function``), so
  that the gateway never sees more workers than its count and never picks a victim itself.
* **The server owns the scheduler and its TLS identity**: the scheduler handle carries the
  cluster's ``GatewaySecurity`` (``SchedulerInfo.security``), which the cluster then uses.

Ownership tags (owner, created, owner pid, cluster id) cannot go into a gateway cluster's
name (the server makes it) nor, portably, into its options (the server defines them), so
they are written into the scheduler's metadata under ``"dask-deploy"``; ``deploy_discover``
lists the gateway's running clusters and reads them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from dask_deploy import (
    BackendError,
    ClusterSpec,
    Handle,
    Phase,
    SchedulerInfo,
    SpecError,
    StartTimeout,
    Status,
    Unit,
    WorkerSpec,
    created_tag,
    hookimpl,
    owner_tag,
)
from dask_deploy.toolkit import wait_until
from dask_gateway import Gateway
from dask_gateway.client import ClusterStatus
from distributed.core import rpc
from distributed.protocol import pickle

from ._options import GatewayOptions

__all__ = ["METADATA_KEY", "GatewayBackend"]

#: Scheduler metadata key under which the ownership tags live.
METADATA_KEY = "dask-deploy"


def _retire_on_scheduler() -> Callable[..., Any]:
    """The scheduler-side half of a stop, defined in a closure so that it is pickled by
    value: the gateway's scheduler need not have this package installed."""

    async def retire(addresses: list[str], drop: int, dask_scheduler: Any = None) -> list[str]:
        service = dask_scheduler.services.get("gateway")
        present = [a for a in addresses if a in dask_scheduler.workers]
        names = {dask_scheduler.workers[a].name for a in present}
        if service is not None:
            # One synchronous step: the gateway's heartbeat compares its count with its
            # active workers and closes workers of *its* choice when there are too many;
            # lowering the count while moving ours to "closing" leaves it nothing to pick.
            service.count = max(0, service.count - drop)
            service.active_workers.difference_update(names)
            service.closing_workers.update(names)
        if present:
            await dask_scheduler.retire_workers(workers=present, close_workers=True, remove=True)
        return present

    return retire


def _status(report: Any) -> Status:
    status = report.status
    if status == ClusterStatus.RUNNING:
        return Status(Phase.RUNNING)
    if status == ClusterStatus.PENDING:
        return Status(Phase.PENDING)
    if status == ClusterStatus.FAILED:
        return Status(Phase.FAILED, f"the gateway reports cluster {report.name} failed")
    return Status(Phase.GONE, f"gateway cluster {report.name} is {status.name.lower()}")


#: Generic worker options the server decides for itself, and what to use instead.
_SERVER_DECIDES = {"threads_per_worker": "nthreads", "memory_limit": "memory_limit",
                   "resources": "resources", "env": "env", "image": "image",
                   "worker_options": "options"}


def _refuse_worker_options(spec: ClusterSpec) -> None:
    """The server starts the workers with its own options: a generic worker option given
    here would be dropped silently, so it is refused, naming the server's way."""
    default = WorkerSpec()
    for worker in (spec.worker, *(p.worker for p in spec.pools)):
        for option, field_name in _SERVER_DECIDES.items():
            value = getattr(worker, field_name)
            if value != getattr(default, field_name):
                raise SpecError(option, value, "the dask-gateway server starts the workers with "
                                "its own settings: pass them in cluster_options (what the server "
                                "offers: Gateway().cluster_options())")


def _refuse_scheduler_options(spec: ClusterSpec) -> None:
    """The server starts the scheduler too: scheduler options would be dropped silently, so
    they are refused (a local scheduler is refused when a cluster starts: deploy_prepare)."""
    if spec.scheduler.options:
        raise SpecError("scheduler_options", dict(spec.scheduler.options), "the dask-gateway "
                        "server starts the scheduler with its own settings: pass them in "
                        "cluster_options, as the server allows")


class GatewayBackend:
    """The per-cluster plugin: a ``dask_gateway.Gateway`` client and the unit bookkeeping."""

    def __init__(self, spec: ClusterSpec) -> None:
        _refuse_worker_options(spec)
        _refuse_scheduler_options(spec)
        self.opts: GatewayOptions = spec.backend_options or GatewayOptions()
        self._gateway: Gateway | None = None
        self.gateway_name: str | None = None  # the server's name of our cluster
        self.security: Any = None
        self.address: str | None = None
        self._rpc: Any = None
        self.target = 0  # the worker count we asked the gateway for
        #: Planned worker names waiting for a gateway worker, oldest first.
        self.pending: deque[str] = deque()
        #: Worker address -> planned name, and back.
        self.alias: dict[str, str] = {}
        self.address_of: dict[str, str] = {}
        self.logs: dict[str, str] = {}  # logs of workers we stopped (read before the stop)
        self.gateway_names: dict[str, str] = {}  # planned name -> the server's worker name
        self._lock = asyncio.Lock()

    # -- the gateway client ------------------------------------------------------------

    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = Gateway(address=self.opts.address, proxy_address=self.opts.proxy_address,
                                    public_address=self.opts.public_address, auth=self.opts.auth,
                                    asynchronous=True)
        return self._gateway

    async def _report(self, name: str) -> Any:
        try:
            return await self.gateway().get_cluster(name)
        except Exception as e:
            raise BackendError(f"the gateway at {self.gateway().address} did not report cluster "
                               f"{name}: {type(e).__name__}: {e}") from e

    def _scheduler(self) -> Any:
        if self._rpc is None:
            assert self.address is not None
            self._rpc = rpc(self.address, connection_args=self.security.get_connection_args("client"))
        return self._rpc

    async def _tags(self, cluster: ClusterSpec) -> dict[str, Any]:
        return {"cluster": cluster.name, "owner": owner_tag(), "created": created_tag(),
                "owner_pid": os.getpid(), "detached": not cluster.shutdown_on_close}

    # -- scheduler ---------------------------------------------------------------------

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        if cluster.scheduler.placement != "remote":  # it would get no gateway workers
            raise SpecError("scheduler", cluster.scheduler.placement, "a dask-gateway cluster's "
                            "scheduler is the server's: leave scheduler unset (or 'remote')")
        try:
            await self.gateway().get_versions()
        except Exception as e:
            raise BackendError(f"cannot reach the dask-gateway server at {self.gateway().address}: "
                               f"{type(e).__name__}: {e} (check address= and auth=)") from e

    @hookimpl
    async def deploy_start_scheduler(self, cluster: ClusterSpec) -> SchedulerInfo:
        gw = self.gateway()
        try:
            name = await gw.submit(**dict(self.opts.cluster_options))
        except Exception as e:
            raise BackendError(f"the gateway at {gw.address} refused a new cluster "
                               f"({type(e).__name__}: {e}); cluster_options must be among "
                               "the server's options (Gateway.cluster_options())") from e
        self.gateway_name = name  # recorded before the next await: teardown stops it
        try:
            try:
                report = await asyncio.wait_for(gw._wait_for_start(name), cluster.start_timeout)
            except asyncio.TimeoutError:
                raise StartTimeout(f"gateway cluster {name} did not start within "
                                   f"{cluster.start_timeout}s") from None
            except Exception as e:
                raise BackendError(f"gateway cluster {name} failed to start: {e}") from e
            self.security, self.address = report.security, report.scheduler_address
            tags = await self._tags(cluster)
            await self._scheduler().set_metadata(keys=[METADATA_KEY], value=tags)
        except BaseException:
            with contextlib.suppress(Exception):
                await gw.stop_cluster(name)
            raise
        handle = Handle(cluster.backend, cluster.name, "scheduler", name,
                        {"kind": "scheduler", "gateway_cluster": name, **tags})
        return SchedulerInfo(handle, report.scheduler_address, security=report.security)

    async def _stop_cluster(self, name: str, grace: float) -> None:
        gw = self.gateway()
        try:
            await gw.stop_cluster(name)
        except Exception as e:
            raise BackendError(f"the gateway did not stop cluster {name}: {e}") from e

        # wait_until waits for a result that is not None: False would end it at once.
        async def gone() -> bool | None:
            return _status(await self._report(name)).phase is not Phase.RUNNING or None

        await wait_until(gone, grace, f"gateway cluster {name} to stop", why=lambda: "it may still run")

    @hookimpl
    async def deploy_stop_scheduler(self, cluster: ClusterSpec, handle: Handle) -> None:
        await self._stop_cluster(handle.backend_id, self.opts.stop_grace)

    # -- workers -----------------------------------------------------------------------

    @hookimpl
    def deploy_worker_name(self, cluster: ClusterSpec, address: str, name: str) -> str | None:
        known = self.alias.get(address)
        if known is not None or not self.pending:
            return known
        planned = self.pending.popleft()
        self.alias[address], self.address_of[planned] = planned, address
        self.gateway_names[planned] = name
        return planned

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        assert self.gateway_name is not None
        names = [w for u in units for w in u.worker_names]
        async with self._lock:
            for w in names:  # a replaced unit reuses its name: forget its old worker
                old = self.address_of.pop(w, None)
                if old is not None:
                    self.alias.pop(old, None)
            self.pending.extend(names)
            self.target += len(names)
            try:
                await self.gateway().scale_cluster(self.gateway_name, self.target)
            except Exception as e:
                self.target -= len(names)
                for w in names:
                    with contextlib.suppress(ValueError):
                        self.pending.remove(w)
                raise BackendError(f"the gateway refused to scale {self.gateway_name} to "
                                   f"{self.target + len(names)} workers: {e}") from e
        return [Handle(cluster.backend, cluster.name, u.name, self.gateway_name,
                       {"workers": list(u.worker_names), "gateway_cluster": self.gateway_name})
                for u in units]

    async def _workers(self) -> dict[str, Any]:
        info = await self._scheduler().identity()
        return dict(info.get("workers", {}))

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        clusters = [h for h in handles if h.data.get("kind") == "scheduler"]
        for h in clusters:  # from deploy_discover (dask-deploy gc): the whole gateway cluster
            await self._stop_cluster(h.backend_id, self.opts.stop_grace)
        units = [h for h in handles if h.data.get("kind") != "scheduler"]
        if not units or self.address is None:
            return
        async with self._lock:
            try:
                connected = await self._workers()
            except Exception as e:
                raise BackendError(f"cannot reach the scheduler of {self.gateway_name}: {e}") from e
            retire: list[str] = []
            drop = 0
            dead = 0
            for h in units:
                for w in h.data.get("workers", [h.name]):
                    if w in self.pending:  # not joined yet: the gateway cancels one start
                        self.pending.remove(w)
                        drop += 1
                    elif (addr := self.address_of.get(w)) is not None:
                        if addr in connected:
                            retire.append(addr)
                            with contextlib.suppress(Exception):
                                logs = await self._scheduler().worker_logs(workers=[addr])
                                self.logs[w] = self._log_text(w, addr, logs.get(addr, []))
                        else:
                            dead += 1  # left on its own; the gateway may be replacing it
                        drop += 1
            # A worker that died was counted; the gateway starts another for it, which joins
            # with no planned name: retire such spares first, so the count stays ours.
            spares = [a for a in connected if a not in self.alias]
            retire += spares[:dead]
            self.target = max(0, self.target - drop)
            if drop or retire:
                try:
                    result = await self._scheduler().run_function(
                        function=pickle.dumps(_retire_on_scheduler()),
                        args=pickle.dumps((retire, drop)), kwargs=pickle.dumps({}))
                except Exception as e:
                    result = {"status": "error", "exception_text": f"{type(e).__name__}: {e}"}
                if not isinstance(result, dict) or result.get("status") != "OK":
                    why = result.get("exception_text") if isinstance(result, dict) else result
                    raise BackendError(f"could not retire workers {retire} of {self.gateway_name} "
                                       f"on its scheduler: {why}")

        async def gone() -> bool | None:
            return not set(retire) & set(await self._workers()) or None

        await wait_until(gone, self.opts.stop_grace, f"workers {retire} to leave",
                         why=lambda: "they may still run")

    # -- observing ---------------------------------------------------------------------

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        sched: Status | None = None
        connected: dict[str, Any] | None = None
        out: list[Status] = []
        for h in handles:
            if h.data.get("kind") == "scheduler":
                sched = _status(await self._report(h.backend_id))
                out.append(sched)
                continue
            if self.address is None:
                out.append(Status(Phase.GONE, "no gateway cluster"))
                continue
            if connected is None:
                try:
                    connected = await self._workers()
                except Exception as e:
                    raise BackendError(f"cannot reach the scheduler of {self.gateway_name}: {e}") from e
            lost = [w for w in h.data.get("workers", [h.name])
                    if (a := self.address_of.get(w)) is not None and a not in connected]
            if lost:
                out.append(Status(Phase.FAILED, f"gateway worker(s) of {', '.join(lost)} left the "
                                                "scheduler"))
            else:
                out.append(Status(Phase.RUNNING))  # joined, or the gateway is starting it
        return out

    def _log_text(self, planned: str, address: str, lines: Sequence[Any]) -> str:
        # The worker calls itself by the server's name: say which planned worker it is.
        head = f"{planned}: dask-gateway worker {self.gateway_names.get(planned, '?')} at {address}"
        return "\n".join([head, *(str(m) for _, m in reversed(list(lines)))])  # oldest first

    @hookimpl
    async def deploy_get_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        if handle.data.get("kind") == "scheduler":
            lines = await self._scheduler().get_logs()
            return "\n".join(m for _, m in lines)
        parts = []
        for w in handle.data.get("workers", [handle.name]):
            addr = self.address_of.get(w)
            if addr is not None:
                with contextlib.suppress(Exception):
                    logs = await self._scheduler().worker_logs(workers=[addr])
                    if addr in logs and not isinstance(logs[addr], str):
                        self.logs[w] = self._log_text(w, addr, logs[addr])
            if w in self.logs:
                parts.append(self.logs[w])
            elif addr is not None:
                raise BackendError(f"the log of {w} is lost: the dask-gateway API keeps no logs "
                                   "of workers that died")
        return "\n".join(parts)

    @hookimpl
    async def deploy_dashboard_route(self, cluster: ClusterSpec, scheduler: SchedulerInfo) -> str | None:
        if self.gateway_name is None:
            return None
        report = await self._report(self.gateway_name)
        if not report.dashboard_link:
            return None
        # The gateway's link is the dashboard's /status page; the proxy wants its base.
        link = str(report.dashboard_link).rstrip("/")
        return link[: -len("/status")] if link.endswith("/status") else link

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        gw = self.gateway()
        try:
            reports = await gw.list_clusters()
        except Exception as e:
            raise BackendError(f"cannot list the clusters of the gateway at {gw.address}: {e}") from e
        out = []
        for report in reports:
            tags: dict[str, Any] = {}
            if report.status == ClusterStatus.RUNNING and report.security is not None:
                comm = rpc(report.scheduler_address,
                           connection_args=report.security.get_connection_args("client"))
                try:
                    tags = dict(await asyncio.wait_for(
                        comm.get_metadata(keys=[METADATA_KEY], default=None), 10) or {})
                except Exception:
                    tags = {}  # unreachable: reported untagged, gc leaves it alone
                finally:
                    await comm.close_rpc()
            owner_cluster = tags.get("cluster")
            if owner_cluster is None or (cluster_id is not None and owner_cluster != cluster_id):
                continue
            out.append(Handle(cluster.backend, str(owner_cluster), "scheduler", report.name,
                              {"kind": "scheduler", "gateway_cluster": report.name,
                               "scheduler_running": report.status == ClusterStatus.RUNNING, **tags}))
        return out

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        if self._rpc is not None:
            with contextlib.suppress(Exception):
                await self._rpc.close_rpc()
        if self._gateway is not None:
            with contextlib.suppress(Exception):
                await self._gateway.close()
        self._rpc = self._gateway = None


