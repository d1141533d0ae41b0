"""What the ECS / Fargate and EC2 backends share: the hook skeleton around "machines".

A subclass says how to start a batch of machines (tasks or instances), poll, stop and list
them; this class does the rest the same way for both: per-cluster resources, the remote
scheduler's start (its ports come from its log line, its address from AWS, mapped through
``resolve_address``), handing batch members their names, logs, discovery and teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from dask_deploy import (
    BackendError,
    ClusterSpec,
    Handle,
    Phase,
    Pool,
    SchedulerInfo,
    SpecError,
    Status,
    Unit,
    hookimpl,
)
from dask_deploy.toolkit import wait_until, worker_role

from ._aws import AWS, KIND_TAG, Infra, delete_infra, discover_infra
from ._entry import MARKER, METADATA_KEY
from ._options import AWSOptions, as_options

__all__ = ["ENTRY", "STOP_REASON", "Machine", "MachineBackend", "kind_tags"]

logger = logging.getLogger("dask_deploy_cloud")

#: The stop reason we give AWS: a machine stopped with it ended on purpose (GONE, not FAILED).
STOP_REASON = "dask-deploy: stopped by its cluster"
#: The module every task or instance runs (the image must have dask-deploy[cloud]).
ENTRY = ["python", "-m", "dask_deploy_cloud._entry"]
#: Kinds of handle that are machines (the rest are per-cluster resources, for gc).
MACHINES = ("task", "instance")


@dataclass(frozen=True)
class Machine:
    """A started task or instance as the subclass reports it: id, phase and addresses."""

    id: str
    status: Status
    private_ip: str | None = None
    public_ip: str | None = None
    #: AWS's own state name (``lastStatus`` of a task, ``State.Name`` of an instance).
    state: str = ""


def _port(address: str | None) -> int:
    """The port of a ``host:port`` option (-1 for none)."""
    if not address:
        return -1
    return int(address.rsplit(":", 1)[-1] or 0)


class MachineBackend:
    """One cluster on one AWS backend. Subclasses set ``kind`` and the machine methods
    (``_prepare``, ``_start``, ``_describe``, ``_stop``, ``_discover_machines``, ...)."""

    kind: ClassVar[str] = "task"
    options_class: ClassVar[type[AWSOptions]] = AWSOptions

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.options: Any = as_options(spec.backend_options, self.options_class)
        self.aws = AWS(self.options.region_name)
        self.infra = Infra(self.aws, spec, self.options)
        self.resolve = self.options.resolver
        #: The scheduler's address as the workers dial it (private), and as we dial it.
        self._worker_address: str | None = None
        self._client_address: str | None = None
        self._prepared = False

    # -- what a subclass provides -------------------------------------------------------

    async def _prepare(self) -> None:
        """Create what this kind of machine needs (task definitions, roles, AMI lookup)."""

    async def _start(self, role: str, count: int, command: list[str], pool: str | None = None
                     ) -> tuple[list[Machine], str]:
        """Start ``count`` machines running ``command``; the started ones and why any are missing.

        ``pool``: whose workers they run (its image, gpus and ``options_of(pool)``); None
        for the scheduler."""
        raise NotImplementedError

    async def _describe(self, handles: Sequence[Handle], public: bool = False) -> dict[str, Machine]:
        """Current state of the handles' machines by id (missing: AWS forgot them).

        ``public``: also find their public addresses (may cost more calls).
        """
        raise NotImplementedError

    async def _stop(self, handles: Sequence[Handle]) -> None:
        """Ask AWS to stop these machines (gracefully: SIGTERM, then kill)."""
        raise NotImplementedError

    async def _discover_machines(self, cluster_id: str | None) -> list[Handle]:
        raise NotImplementedError

    async def _discover_extra(self, cluster_id: str | None) -> list[Handle]:
        """Per-cluster resources beyond the shared ones (task definitions, ECS cluster)."""
        return []

    def _log_stream(self, machine_id: str) -> str:
        raise NotImplementedError

    def _identity(self) -> str:
        """How a batch member finds its own id (``--identity`` of the entry)."""
        raise NotImplementedError

    def _pool(self, name: str | None) -> Pool:
        """The pool of that name (its worker spec); for None (the scheduler) the cluster's
        own worker spec and options."""
        found = [p for p in self.spec.all_pools if p.name == name]
        return found[0] if found else Pool("scheduler", self.spec.worker)

    def _options_of(self, pool: str | None) -> Any:
        """The backend options of a pool's workers (None: the cluster's own)."""
        own = self.spec.options_of(pool) if pool is not None else None
        return own if isinstance(own, self.options_class) else self.options

    # -- preparation --------------------------------------------------------------------

    def _client_ports(self) -> list[int] | None:
        s = self.spec.scheduler
        if s.placement == "local":
            return None  # the client's scheduler dials the workers on their own ports
        ports = [s.port] + ([_port(s.dashboard_address)] if s.dashboard_address else [])
        return None if 0 in ports else ports

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        # What this makes is tagged with the cluster; teardown deletes it by those tags
        # (the core calls teardown only after this returned or raised).
        for option, image in [("image", self.spec.worker.image),
                              *((f"pools[{p.name!r}].image", p.worker.image) for p in self.spec.pools)]:
            if not (image or "").strip():
                raise SpecError(option, image, "expected a container image with dask-deploy[cloud] "
                                "installed (e.g. built FROM ghcr.io/dask/dask with pip install "
                                "'dask-deploy[cloud]')")
        infra = self.infra
        await infra.network()
        await asyncio.gather(infra.security_group(self._client_ports()), infra.secret(cluster.tls),
                             infra.log_group())
        await self._prepare()
        self._prepared = True

    async def _ready(self) -> None:
        # The core runs deploy_prepare concurrently with the scheduler's start and awaits it
        # before; for a local scheduler, workers may be started only after it, as here.
        if not self._prepared:
            raise BackendError(f"cluster {self.spec.name}: AWS resources are not ready "
                               "(deploy_prepare failed or was not called)")

    def _common_args(self) -> list[str]:
        args = ["--cluster", self.spec.name, "--region", self.infra.region]
        if self.infra.secret_arn:
            args += ["--tls-secret", self.infra.secret_arn]
        return args

    # -- scheduler ----------------------------------------------------------------------

    @hookimpl
    async def deploy_start_scheduler(self, cluster: ClusterSpec) -> SchedulerInfo:
        await self._ready()
        s = cluster.scheduler
        dash = _port(s.dashboard_address) if s.dashboard_address else -1
        command = [*ENTRY, "scheduler", *self._common_args(), "--host", "0.0.0.0",
                   "--port", str(s.port), "--dashboard-port", str(dash),
                   "--options", json.dumps({"idle_timeout": s.idle_timeout, **s.options})]
        machines, why = await self._start("scheduler", 1, command)
        if not machines:
            raise BackendError(f"AWS did not start the scheduler of {cluster.name}: {why}")
        m = machines[0]
        handle = self._handle(f"{cluster.name}-scheduler", m.id, "scheduler")
        try:
            return await self._wait_scheduler(handle)
        except BaseException:  # also when cancelled: what this call started, it stops
            with contextlib.suppress(Exception):
                await self._stop_and_wait([handle])
            raise

    async def _wait_scheduler(self, handle: Handle) -> SchedulerInfo:
        """Wait for the scheduler's log line and its address, then for it to answer."""
        deadline = time.monotonic() + self.spec.start_timeout
        proto = "tls" if self.spec.tls else "tcp"
        phase = Phase.PENDING

        async def announced() -> tuple[Machine, tuple[int, int | None]] | None:
            nonlocal phase
            public = not self.options.use_private_ip
            m = (await self._describe([handle], public)).get(handle.backend_id)
            phase = m.status.phase if m else Phase.GONE
            if phase in (Phase.FAILED, Phase.GONE):
                why = m.status.reason if m else "AWS no longer knows it"
                log = await self.deploy_get_logs(self.spec, handle)
                raise BackendError(f"the scheduler of {self.spec.name} ({handle.backend_id}) ended "
                                   f"before it was ready: {why}; its log:\n{log[-2000:]}")
            if phase == Phase.RUNNING and m is not None and m.private_ip:
                ports = self._announced(await self.deploy_get_logs(self.spec, handle))
                if ports is not None:
                    return m, ports
            return None

        m, (port, dash) = await wait_until(
            announced, self.spec.start_timeout, f"the scheduler of {self.spec.name} being ready",
            interval=min(1.0, self.spec.poll_interval),
            why=lambda: (f"phase {phase.value}; raise start_timeout, or see its log with "
                         "cluster.get_logs()"))
        ip = m.private_ip if self.options.use_private_ip else (m.public_ip or m.private_ip)
        host = self.resolve(ip)
        self._worker_address = f"{proto}://{m.private_ip}:{port}"
        self._client_address = f"{proto}://{host}:{port}"
        await self._until_answers(self._client_address, deadline)
        return SchedulerInfo(handle, self._client_address, f"{host}:{dash}" if dash else None)

    @staticmethod
    def _announced(log: str) -> tuple[int, int | None] | None:
        for line in log.splitlines():
            if line.startswith(MARKER):
                info = json.loads(line[len(MARKER):])
                return int(info["port"]), info.get("dashboard")
        return None

    def _connection_args(self) -> dict[str, Any]:
        return self.spec.tls.security().get_connection_args("client") if self.spec.tls else {}

    async def _until_answers(self, address: str, deadline: float) -> None:
        from distributed.core import rpc

        last: list[BaseException] = []

        async def answers() -> bool | None:
            try:
                async with rpc(address, connection_args=self._connection_args(), timeout=5) as r:
                    await r.identity()
                    return True
            except (OSError, asyncio.TimeoutError) as e:
                last[:] = [e]
                return None

        await wait_until(answers, max(0.0, deadline - time.monotonic()),
                         f"the scheduler of {self.spec.name} answering at {address}", interval=0.5,
                         why=lambda: f"{last[0] if last else ''}; check resolve_address and client_cidrs")

    @hookimpl
    async def deploy_stop_scheduler(self, cluster: ClusterSpec, handle: Handle) -> None:
        await self._stop_and_wait([handle])

    # -- workers ------------------------------------------------------------------------

    def _handle(self, name: str, machine_id: str, role: str, **data: Any) -> Handle:
        return Handle(self.spec.backend, self.spec.name, name, machine_id,
                      {"kind": self.kind, "role": role,
                       "log": self._log_stream(machine_id) if machine_id else "", **data})

    def _batches(self, units: Sequence[Unit]) -> list[list[Unit]]:
        """Batches of units with the same workers (one pool's): a batch starts them all
        with its first unit's workers."""
        size, groups = self.batch_size, dict[tuple[str, str], list[Unit]]()
        for unit in units:  # (WorkerSpec holds mappings, so it is not hashable: key by repr)
            groups.setdefault((unit.pool, repr(unit.workers)), []).append(unit)
        return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]

    batch_size: ClassVar[int] = 10

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        await self._ready()
        address = scheduler_address
        if cluster.scheduler.placement == "remote":
            address = await self._scheduler_for_workers(scheduler_address)
        results = await asyncio.gather(*(self._start_batch(address, scheduler_address, b)
                                         for b in self._batches(units)), return_exceptions=True)
        handles: list[Handle] = []
        errors = []
        for batch, result in zip(self._batches(units), results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                errors.append(result)
                handles += [self._handle(u.name, "", "worker", failed=f"start refused: {result}")
                            for u in batch]
            else:
                handles += result
        if len(errors) == len(results):
            raise BackendError(f"AWS refused to start workers of {cluster.name}: {errors[0]}")
        by_name = {h.name: h for h in handles}  # batches group units by pool: back in order
        return [by_name[u.name] for u in units]

    async def _scheduler_for_workers(self, client_address: str) -> str:
        """The scheduler's private address, which workers in the VPC dial."""
        if self._worker_address is None or self._client_address != client_address:
            # Re-attached from another process: ask AWS where our scheduler runs.
            ours = [h for h in await self._discover_machines(self.spec.name)
                    if h.data.get("role") == "scheduler"]
            m = (await self._describe(ours)).get(ours[0].backend_id) if ours else None
            if m is None or not m.private_ip:
                raise BackendError(f"the scheduler of {self.spec.name} is not running on AWS")
            proto, _, hostport = client_address.rpartition("://")
            self._worker_address = f"{proto}://{m.private_ip}:{hostport.rsplit(':', 1)[1]}"
            self._client_address = client_address
        return self._worker_address

    async def _start_batch(self, worker_address: str, publish_to: str, batch: list[Unit]
                           ) -> list[Handle]:
        workers = [{"suffix": w.suffix, "nthreads": w.nthreads, "memory_limit": w.memory_limit,
                    "resources": dict(w.resources), "env": dict(w.env), "options": dict(w.options),
                    "role": worker_role(w)}
                   for w in batch[0].workers]
        batch_id = os.urandom(6).hex()
        naming = (["--name", batch[0].name] if len(batch) == 1 else
                  ["--batch", batch_id, "--identity", self._identity(),
                   "--claim-timeout", str(self.spec.start_timeout)])
        command = [*ENTRY, "worker", *self._common_args(), "--host", "0.0.0.0",
                   "--scheduler", worker_address, "--workers", json.dumps(workers), *naming]
        machines, why = await self._start("worker", len(batch), command, batch[0].pool)
        if len(batch) > 1 and machines:
            try:
                await self._publish(publish_to, batch_id,
                                    {m.id: u.name for m, u in zip(machines, batch, strict=False)})
            except Exception:
                await self._stop_and_wait([self._handle(u.name, m.id, "worker")
                                           for m, u in zip(machines, batch, strict=False)])
                raise
        # Fewer machines than units when AWS could not place them all: the rest fail.
        handles = [self._handle(u.name, m.id, "worker") for m, u in zip(machines, batch, strict=False)]
        handles += [self._handle(u.name, "", "worker", failed=f"not placed: {why}")
                    for u in batch[len(machines):]]
        return handles

    async def _publish(self, scheduler_address: str, batch_id: str, names: dict[str, str]) -> None:
        """Tell the members of a batch their names, through the scheduler they will join."""
        from distributed.core import rpc

        async with rpc(scheduler_address, connection_args=self._connection_args(), timeout=30) as r:
            await r.set_metadata(keys=[METADATA_KEY, batch_id], value=names)

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        machines = [h for h in handles if h.data.get("kind") in MACHINES and h.backend_id]
        await self._stop_and_wait(machines)
        others = [h for h in handles if h.data.get("kind") not in MACHINES]
        if others:  # per-cluster resources handed to us by gc (see deploy_discover)
            errors = await delete_infra(self.aws, others)
            if errors:
                raise BackendError(f"could not delete: {'; '.join(errors)}")

    async def _stop_and_wait(self, handles: Sequence[Handle]) -> None:
        handles = [h for h in handles if h.backend_id]
        if not handles:
            return
        await self._stop(handles)
        deadline = time.monotonic() + self.stop_patience
        # Most stops are quick; AWS's slow ones (ENI detach) get polled less, but no less
        # often than the cluster polls anyway (poll_interval; a fixed 2 s cap saw a stop
        # done after 1.5 s only after 3 s).
        cap = self.spec.poll_interval
        delay = min(0.2, cap)
        while True:
            live = [h for h, s in zip(handles, await self._statuses(handles), strict=True)
                    if s.phase in (Phase.PENDING, Phase.RUNNING)]
            if not live:
                return
            if time.monotonic() > deadline:
                raise BackendError(f"{len(live)} of {self.spec.name}'s {self.kind}s did not stop "
                                   f"within {self.stop_patience:g} s: "
                                   f"{[h.backend_id for h in live]}; dask-deploy gc retries")
            await asyncio.sleep(delay)
            delay = min(2 * delay, cap)

    stop_patience: ClassVar[float] = 180.0

    async def _statuses(self, handles: Sequence[Handle]) -> list[Status]:
        found = await self._describe([h for h in handles if h.backend_id])
        out = []
        for h in handles:
            if h.data.get("failed"):
                out.append(Status(Phase.FAILED, h.data["failed"]))
            elif h.backend_id in found:
                out.append(found[h.backend_id].status)
            else:
                out.append(Status(Phase.GONE, "unknown to AWS"))
        return out

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        return await self._statuses(handles)

    @hookimpl
    async def deploy_get_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        if handle.data.get("failed"):
            return f"(never started: {handle.data['failed']})"
        stream = handle.data.get("log") or (self._log_stream(handle.backend_id)
                                            if handle.data.get("kind") in MACHINES else "")
        if not stream:
            return ""
        try:
            return await self.infra.read_log(stream)
        except BackendError as e:
            raise BackendError(f"the log of {handle.name} ({self.options.cloudwatch_logs_group}:"
                               f"{stream}) cannot be read: {e}") from e

    # -- discovery, gc, teardown --------------------------------------------------------

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        """Running tasks / instances, then the per-cluster resources (``data["kind"]`` says which).

        Handing all of them to ``deploy_stop_workers`` deletes them, machines first.
        """
        found = [*await self._discover_machines(cluster_id), *await self._discover_extra(cluster_id),
                 *await discover_infra(self.aws, self.spec.backend, cluster_id)]
        return with_liveness(found)

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        # Called once, after every creating call returned and what they started was
        # stopped: what is left are the per-cluster resources, found by their tags. Only
        # if prepare reached AWS (it found the region first): else nothing was made.
        try:
            if cluster.shutdown_on_close and self.infra.region:
                leftovers = await self.deploy_discover(cluster, cluster.name)
                if leftovers:
                    await self.deploy_stop_workers(cluster, leftovers)
        except Exception as e:  # must not raise: gc finds whatever is left by its tags
            logger.warning("cleaning up AWS resources of %s failed (%s); run dask-deploy gc",
                           cluster.name, e)
        finally:
            await self.aws.close()


def with_liveness(handles: Sequence[Handle]) -> list[Handle]:
    """Every handle of a cluster with its cluster's owner tags and liveness hints.

    A resource listed without tags (a task definition) takes them from its cluster's other
    resources, and a cluster whose scheduler is remote gets ``scheduler_running``: whether
    its scheduler task or instance is among the live machines found.
    """
    shared: dict[str, dict[str, Any]] = {}
    for h in handles:
        info = shared.setdefault(h.cluster, {})
        for key in ("owner", "created", "owner_pid", "detached", "placement"):
            if key in h.data:
                info.setdefault(key, h.data[key])
        if h.data.get("kind") in MACHINES and h.data.get("role") == "scheduler":
            info["scheduler_running"] = True
    for info in shared.values():
        if info.get("placement") == "remote":
            info.setdefault("scheduler_running", False)
    return [dataclasses.replace(h, data={**shared[h.cluster], **h.data}) for h in handles]


def kind_tags(infra: Infra, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Tags of a machine: the cluster, its kind and role."""
    return {**infra.tags, KIND_TAG: role, **(extra or {})}

