"""The ``ecs`` and ``fargate`` backends: the scheduler and each worker unit as an ECS task.

Task definitions, two families per cluster (scheduler, worker: one revision per distinct
pool worker, with the pool's image, env, ``worker_cpu``/``worker_mem`` and gpus), carry no
secret: the container command comes per start as an override, and the TLS identity is read
by the container from Secrets Manager with the cluster's task role. Workers start
``run_task`` ``count`` (up to 10) at a time; tasks use ``awsvpc`` networking (an address
each), log with the ``awslogs`` driver to ``<group>/<cluster>/dask/<task id>``, and are
tagged ``dask-deploy:cluster=<name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from dask_deploy import ClusterSpec, Handle, Phase, SpecError, Status

from ._aws import (
    CLUSTER_TAG,
    IMAGE_PULL,
    KIND_TAG,
    LOG_WRITE,
    AWSError,
    ours,
    owner_data,
    retry_propagation,
    tag_list,
    tags_of,
)
from ._base import ENTRY, STOP_REASON, Machine, MachineBackend, kind_tags
from ._options import ECSOptions

__all__ = ["ECSBackend", "FargateBackend", "task_status"]

CONTAINER = "dask"
FAMILY_PREFIX = "dask-deploy-"
_PENDING = {"PROVISIONING", "PENDING", "ACTIVATING"}


def task_status(task: dict[str, Any]) -> Status:
    """Our phase of an ECS task (``describe_tasks`` entry), with ECS's reason when it failed."""
    last = task.get("lastStatus", "")
    if last in _PENDING:
        return Status(Phase.PENDING)
    if last != "STOPPED":
        return Status(Phase.RUNNING)  # RUNNING, or on its way down (DEACTIVATING, STOPPING)
    reason = task.get("stoppedReason", "")
    code = task.get("stopCode", "")
    if code == "UserInitiated" or reason.startswith(STOP_REASON):
        return Status(Phase.GONE, "stopped")
    containers = task.get("containers", [])
    exits = [c.get("exitCode") for c in containers]
    if containers and all(e == 0 for e in exits) and code in ("", "EssentialContainerExited"):
        return Status(Phase.GONE, "exited")
    details = "; ".join(f"container {c.get('name')}: exit code {c.get('exitCode')}"
                        + (f" ({c['reason']})" if c.get("reason") else "") for c in containers)
    return Status(Phase.FAILED, f"{code or 'stopped'}: {reason or 'no reason given'}"
                                + (f"; {details}" if details else ""))


def _private_ip(task: dict[str, Any]) -> str | None:
    for att in task.get("attachments", []):
        for d in att.get("details", []):
            if d.get("name") == "privateIPv4Address":
                return str(d["value"])
    return None


def _eni(task: dict[str, Any]) -> str | None:
    for att in task.get("attachments", []):
        for d in att.get("details", []):
            if d.get("name") == "networkInterfaceId":
                return str(d["value"])
    return None


@dataclass(frozen=True)
class _Definition:
    """What a task definition holds besides the cluster's roles and logs."""

    image: str
    env: tuple[tuple[str, str], ...]
    cpu: int
    mem: int
    gpus: int


class ECSBackend(MachineBackend):
    """``ecs``: tasks on the EC2 container instances of an existing cluster (``cluster_arn``)."""

    kind: ClassVar[str] = "task"
    options_class = ECSOptions
    fargate: ClassVar[bool] = False

    def __init__(self, spec: ClusterSpec) -> None:
        super().__init__(spec)
        self.options: ECSOptions
        for pool in spec.all_pools if self.fargate else ():
            if pool.worker.gpus:
                option = f"pools[{pool.name!r}].gpus" if spec.pools else "gpus"
                raise SpecError(option, pool.worker.gpus, "Fargate has no GPUs: use the ecs "
                                "backend with GPU container instances, or ec2")
        self.cluster_arn: str | None = self.options.cluster_arn
        #: Task definition ARNs by role (``"worker"``: the default pool's), and those of
        #: each pool's workers by pool name.
        self.task_definitions: dict[str, str] = {}
        self.pool_definitions: dict[str, str] = {}

    # -- preparation --------------------------------------------------------------------

    async def _prepare(self) -> None:
        spec, opts, infra = self.spec, self.options, self.infra
        if not self.fargate and not self.cluster_arn:
            raise SpecError("cluster_arn", None, "the ecs backend runs tasks on the container "
                            "instances of an existing ECS cluster: pass cluster_arn=, or use the "
                            "fargate backend (which creates a cluster)")
        if not self.cluster_arn:
            spot = any(self._options_of(p.name).fargate_spot for p in spec.all_pools)
            providers = ["FARGATE", "FARGATE_SPOT"] if spot else ["FARGATE"]
            created = await self.aws("ecs", "create_cluster", clusterName=f"dask-deploy-{spec.name}",
                                     capacityProviders=providers,
                                     tags=tag_list(infra.kind_tags("ecs-cluster"), "key", "value"))
            self.cluster_arn = created["cluster"]["clusterArn"]
        execution = opts.execution_role_arn or await infra.role(
            "exec", "ecs-tasks.amazonaws.com", [(LOG_WRITE, infra.log_arn()), (IMAGE_PULL, "*")])
        task_role = opts.task_role_arn or (await infra.role(
            "task", "ecs-tasks.amazonaws.com", infra.secret_statement()) if infra.secret_arn else None)
        roles = {"executionRoleArn": execution, **({"taskRoleArn": task_role} if task_role else {})}
        # One worker task definition per distinct pool worker (image, env, cpu, memory,
        # gpus), each a revision of the cluster's one worker family, so that discovery and
        # teardown find them all by that family's name.
        keys = {p.name: self._definition(p.name) for p in spec.all_pools}
        distinct = list(dict.fromkeys(keys.values()))
        register = [("worker", key) for key in distinct]
        if spec.scheduler.placement == "remote":
            register.append(("scheduler", self._definition(None)))
        arns = await asyncio.gather(*(self._register(role, key, roles) for role, key in register))
        by_key = {key: arn for (role, key), arn in zip(register, arns, strict=True)
                  if role == "worker"}
        self.pool_definitions = {pool: by_key[key] for pool, key in keys.items()}
        self.task_definitions = {role: arn for (role, _), arn in zip(register, arns, strict=True)
                                 if role == "scheduler"}
        self.task_definitions["worker"] = next(iter(self.pool_definitions.values()))

    def _definition(self, pool: str | None) -> _Definition:
        """What the task definition of a pool's workers (None: the scheduler's) holds."""
        p = self._pool(pool)
        opts = self._options_of(pool)
        if pool is None:
            return _Definition(p.worker.image or "", tuple(p.worker.env.items()),
                               opts.scheduler_cpu, opts.scheduler_mem, 0)
        return _Definition(p.worker.image or "", tuple(p.worker.env.items()),
                           opts.worker_cpu, opts.worker_mem, p.worker.gpus)

    async def _register(self, role: str, d: _Definition, roles: dict[str, str]) -> str:
        infra = self.infra
        container: dict[str, Any] = {
            "name": CONTAINER, "image": d.image, "essential": True,
            # Container-level cpu/memory as well as task-level: Fargate wants the task's,
            # ECS on EC2 places by the container's.
            "cpu": d.cpu, "memory": d.mem, "command": ENTRY, "stopTimeout": self.options.stop_timeout,
            "environment": [{"name": k, "value": v} for k, v in d.env],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": self.options.cloudwatch_logs_group,
                "awslogs-region": infra.region, "awslogs-stream-prefix": self.spec.name}},
        }
        if d.gpus:
            container["resourceRequirements"] = [{"type": "GPU", "value": str(d.gpus)}]
        created = await self.aws(
            "ecs", "register_task_definition", family=self._family(self.spec.name, role),
            networkMode="awsvpc", requiresCompatibilities=["FARGATE" if self.fargate else "EC2"],
            cpu=str(d.cpu), memory=str(d.mem), containerDefinitions=[container], **roles,
            tags=tag_list(infra.kind_tags("task-definition"), "key", "value"))
        return str(created["taskDefinition"]["taskDefinitionArn"])

    # -- machines -----------------------------------------------------------------------

    def _log_stream(self, machine_id: str) -> str:
        return f"{self.spec.name}/{CONTAINER}/{machine_id.rsplit('/', 1)[-1]}"

    def _identity(self) -> str:
        return "ecs"

    async def _start(self, role: str, count: int, command: list[str], pool: str | None = None
                     ) -> tuple[list[Machine], str]:
        opts, infra = self._options_of(pool), self.infra
        definition = (self.pool_definitions[pool] if pool is not None
                      else self.task_definitions[role])
        vpc: dict[str, Any] = {"subnets": infra.subnets, "securityGroups": infra.security_groups}
        if self.fargate:
            vpc["assignPublicIp"] = "DISABLED" if opts.use_private_ip else "ENABLED"
        kwargs: dict[str, Any] = {
            "cluster": self.cluster_arn, "taskDefinition": definition, "count": count,
            "overrides": {"containerOverrides": [{"name": CONTAINER, "command": command}]},
            "networkConfiguration": {"awsvpcConfiguration": vpc}, "startedBy": "dask-deploy",
            "tags": tag_list(kind_tags(infra, role), "key", "value"),
        }
        if self.fargate and opts.fargate_spot and role == "worker":
            kwargs["capacityProviderStrategy"] = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
        else:
            kwargs["launchType"] = "FARGATE" if self.fargate else "EC2"
        if self.fargate and opts.platform_version:
            kwargs["platformVersion"] = opts.platform_version
        deadline = time.monotonic() + self.spec.start_timeout
        result = await retry_propagation(lambda: self.aws("ecs", "run_task", **kwargs), deadline)
        why = "; ".join(f"{f.get('reason', '')} {f.get('detail', '')}".strip()
                        for f in result.get("failures", [])) or "ECS placed fewer tasks than asked"
        return [self._machine(t) for t in result["tasks"]], why

    def _machine(self, task: dict[str, Any], public_ip: str | None = None) -> Machine:
        return Machine(task["taskArn"], task_status(task), _private_ip(task), public_ip,
                       task.get("lastStatus", ""))

    def _handle(self, name: str, machine_id: str, role: str, **data: Any) -> Handle:
        return super()._handle(name, machine_id, role, ecs_cluster=self.cluster_arn, **data)

    async def _describe(self, handles: Sequence[Handle], public: bool = False) -> dict[str, Machine]:
        by_cluster: dict[str, list[str]] = {}
        for h in handles:
            by_cluster.setdefault(h.data.get("ecs_cluster") or self.cluster_arn or "", []).append(
                h.backend_id)
        tasks: list[dict[str, Any]] = []
        for cluster, arns in by_cluster.items():
            for i in range(0, len(arns), 100):
                page = await self.aws("ecs", "describe_tasks", cluster=cluster, tasks=arns[i:i + 100])
                tasks += page["tasks"]
        public_ips: dict[str, str] = {}
        enis = [e for t in tasks if (e := _eni(t))]
        if public and enis:
            desc = await self.aws("ec2", "describe_network_interfaces", NetworkInterfaceIds=enis)
            public_ips = {n["NetworkInterfaceId"]: n["Association"]["PublicIp"]
                          for n in desc["NetworkInterfaces"] if n.get("Association", {}).get("PublicIp")}
        return {t["taskArn"]: self._machine(t, public_ips.get(_eni(t) or "")) for t in tasks}

    async def _stop(self, handles: Sequence[Handle]) -> None:
        limit = asyncio.Semaphore(10)

        async def stop(h: Handle) -> None:
            async with limit:
                cluster = h.data.get("ecs_cluster") or self.cluster_arn
                with contextlib.suppress(AWSError):  # already gone: fine
                    await self.aws("ecs", "stop_task", cluster=cluster, task=h.backend_id,
                                   reason=STOP_REASON)

        await asyncio.gather(*(stop(h) for h in handles))

    # -- discovery ----------------------------------------------------------------------

    def _family(self, cluster_id: str, role: str) -> str:
        """Task definition family: backend and cluster in the name, as families cannot be
        listed by tag."""
        return f"{FAMILY_PREFIX}{self.spec.backend}-{cluster_id}-{role}"

    async def _pages(self, operation: str, key: str, **kwargs: Any) -> list[Any]:
        """All items under ``key`` of a paginated ECS list call."""
        out: list[Any] = []
        token: str | None = None
        while True:
            page = await self.aws("ecs", operation, **kwargs, **({"nextToken": token} if token else {}))
            out += page[key]
            token = page.get("nextToken")
            if not token:
                return out

    async def _clusters(self) -> list[dict[str, Any]]:
        """Active ECS clusters to look in: ours if we know it, else every one in the region."""
        arns = [self.cluster_arn] if self.cluster_arn else []
        if not arns:
            arns = await self._pages("list_clusters", "clusterArns")
        out: list[dict[str, Any]] = []
        for i in range(0, len(arns), 100):
            page = await self.aws("ecs", "describe_clusters", clusters=arns[i:i + 100], include=["TAGS"])
            out += [c for c in page["clusters"] if c.get("status") == "ACTIVE"]
        return out

    async def _discover_machines(self, cluster_id: str | None) -> list[Handle]:
        found: list[Handle] = []
        for cluster in await self._clusters():
            arns = await self._pages("list_tasks", "taskArns", cluster=cluster["clusterArn"],
                                     desiredStatus="RUNNING")
            for i in range(0, len(arns), 100):
                page = await self.aws("ecs", "describe_tasks", cluster=cluster["clusterArn"],
                                      tasks=arns[i:i + 100], include=["TAGS"])
                for t in page["tasks"]:
                    tags = tags_of(t.get("tags"))
                    if not ours(tags, self.spec.backend, cluster_id):
                        continue
                    cid = tags[CLUSTER_TAG]
                    role = tags.get(KIND_TAG, "worker")
                    tid = t["taskArn"].rsplit("/", 1)[-1]
                    found.append(Handle(self.spec.backend, cid, f"{cid}-{role}-{tid}", t["taskArn"], {
                        "kind": "task", "role": role, "ecs_cluster": cluster["clusterArn"],
                        "log": f"{cid}/{CONTAINER}/{tid}", **owner_data(tags)}))
        return found

    async def _discover_extra(self, cluster_id: str | None) -> list[Handle]:
        found: list[Handle] = []
        prefix = f"{FAMILY_PREFIX}{self.spec.backend}-"
        if cluster_id is not None:
            families = [self._family(cluster_id, role) for role in ("scheduler", "worker")]
        else:  # familyPrefix of list_task_definitions is a whole family name: list families first
            families = await self._pages("list_task_definition_families", "families",
                                         familyPrefix=prefix, status="ACTIVE")
        for family in families:
            if not family.startswith(prefix):
                continue
            cid, _, role = family[len(prefix):].rpartition("-")
            if role not in ("worker", "scheduler") or not cid:
                continue
            for arn in await self._pages("list_task_definitions", "taskDefinitionArns",
                                         familyPrefix=family, status="ACTIVE"):
                found.append(Handle(self.spec.backend, cid, family, arn, {"kind": "task-definition"}))
        clusters = await self._clusters() if not self.options.cluster_arn else []
        for c in clusters:
            tags = tags_of(c.get("tags"))
            if tags.get(KIND_TAG) == "ecs-cluster" and ours(tags, self.spec.backend, cluster_id):
                found.append(Handle(self.spec.backend, tags[CLUSTER_TAG], c["clusterName"],
                                    c["clusterArn"], {"kind": "ecs-cluster", **owner_data(tags)}))
        return found


class FargateBackend(ECSBackend):
    """``fargate``: serverless tasks; creates an ECS cluster of its own unless given one."""

    fargate: ClassVar[bool] = True
