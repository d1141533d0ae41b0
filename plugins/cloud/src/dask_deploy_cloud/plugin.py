"""The ``ecs``, ``fargate`` and ``ec2`` backends, as the core finds them (entry points).

Cheap to import: aiobotocore is imported only when a cluster is built (the factories).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask_deploy import BackendInfo, ClusterSpec, hookimpl

from ._options import EC2Options, ECSOptions

__all__ = ["DEFAULT_IDLE_TIMEOUT", "deploy_backends"]

_CAPABILITIES = frozenset({"scale", "logs_after_death", "dashboard", "detach", "nanny"})


#: Options a pool may set for its own workers (``pools={"big": {"worker_cpu": 8192}}``),
#: besides the generic ``image``, ``gpus``, ``env``, ...: each pool's workers get a task
#: definition (ecs, fargate) or instance launch (ec2) of their own.
_ECS_POOL = frozenset({"worker_cpu", "worker_mem"})
_FARGATE_POOL = _ECS_POOL | {"fargate_spot"}
_EC2_POOL = frozenset({"worker_instance_type", "gpu_instance_type", "ami", "filesystem_size"})


def _remote(options: dict[str, Any]) -> bool:
    return options.get("scheduler", "remote") == "remote"


#: Seconds without any task after which a remote scheduler closes itself (its task or
#: instance ends, and the workers follow): a client that died leaves nothing running for
#: longer. ``idle_timeout=None`` turns it off.
DEFAULT_IDLE_TIMEOUT = 1200.0


def _threads(cpu_option: str, default_units: int) -> Any:
    # One thread per vCPU of the task, like a LocalCluster on a machine that size. A value
    # that is no count of CPU units gives 1 here: the options class then refuses it in
    # one line naming the option (this runs first).
    def threads(o: Mapping[str, Any]) -> int:
        units = o.get(cpu_option, default_units)
        if isinstance(units, bool) or not isinstance(units, int):
            return 1
        return max(1, units // 1024)
    return threads


def _defaults(**extra: Any) -> dict[str, Any]:
    # The scheduler runs as a task / instance of its own, with TLS (the secret never leaves
    # AWS's secret store); its well-known ports apply only there (a scheduler in this
    # process keeps the core's loopback defaults).
    return {
        "scheduler": "remote",
        "security": True,
        "scheduler_port": lambda o: 8786 if _remote(o) else 0,
        "dashboard_address": lambda o: ":8787" if _remote(o) else "127.0.0.1:0",
        "idle_timeout": lambda o: DEFAULT_IDLE_TIMEOUT if _remote(o) else None,
        "start_timeout": 300.0,
        "poll_interval": 2.0,
        **extra,
    }


def _ecs(spec: ClusterSpec) -> object:
    from ._ecs import ECSBackend

    return ECSBackend(spec)


def _fargate(spec: ClusterSpec) -> object:
    from ._ecs import FargateBackend

    return FargateBackend(spec)


def _ec2(spec: ClusterSpec) -> object:
    from ._ec2 import EC2Backend

    return EC2Backend(spec)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [
        BackendInfo(
            name="ecs", factory=_ecs, options=ECSOptions, capabilities=_CAPABILITIES, extra="cloud",
            summary="AWS ECS: scheduler and workers as tasks on an existing cluster's EC2 instances",
            defaults=_defaults(threads_per_worker=_threads("worker_cpu", 4096)),
            pool_options=_ECS_POOL),
        BackendInfo(
            name="fargate", factory=_fargate, options=ECSOptions, capabilities=_CAPABILITIES,
            extra="cloud", summary="AWS Fargate: scheduler and workers as serverless ECS tasks",
            defaults=_defaults(threads_per_worker=_threads("worker_cpu", 4096)),
            pool_options=_FARGATE_POOL),
        BackendInfo(
            name="ec2", factory=_ec2, options=EC2Options, capabilities=_CAPABILITIES, extra="cloud",
            summary="AWS EC2: scheduler and each worker unit on a VM of its own, running a container",
            defaults=_defaults(threads_per_worker=lambda o: 2), pool_options=_EC2_POOL),
    ]
