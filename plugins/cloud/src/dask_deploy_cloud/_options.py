"""The options of the ``ecs``, ``fargate`` and ``ec2`` backends (dask-cloudprovider's names).

Plain frozen dataclasses with no AWS import, so that listing backends stays cheap. Only what
can be checked without talking to AWS is validated here; the rest (a VPC that does not exist,
``cluster_arn`` missing for ``ecs``) fails when the cluster starts, with the option named.
"""

from __future__ import annotations

import importlib
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dask_deploy import SpecError

__all__ = ["AWSOptions", "EC2Options", "ECSOptions", "Resolver"]

#: Maps an address that AWS gave a task or instance to the address this client dials.
Resolver = Callable[[str], str]


def _opt_str(value: object, option: str, what: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise SpecError(option, value, f"expected {what} or None")


def _str_tuple(value: object, option: str, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) \
            or not all(isinstance(v, str) and v for v in value):
        raise SpecError(option, value, f"expected a list of {what} or None")
    return tuple(value)


def _int_at_least(value: object, option: str, minimum: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(option, value, f"expected {what} (an integer >= {minimum})")


def load_resolver(value: object) -> Resolver | None:
    """``resolve_address`` (``"module:function"``) imported; None when not set.

    A dotted name rather than a function object, so that the cluster's record stays plain
    JSON and another process can re-attach with the same hook.
    """
    if value is None:
        return None
    if isinstance(value, str) and ":" in value:
        module, _, attr = value.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise SpecError("resolve_address", value, f"cannot import it ({e})") from None
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    raise SpecError("resolve_address", value,
                    'expected "module:function" naming a function (address -> address to dial), or None')


@dataclass(frozen=True)
class AWSOptions:
    """Options shared by the three AWS backends.

    Credentials, region and endpoint come from the standard AWS configuration chain
    (environment, ``~/.aws``, instance or task role); ``AWS_ENDPOINT_URL`` points every
    client at an emulator.
    """

    #: AWS region; default: the configuration chain's (``AWS_DEFAULT_REGION``, profile).
    region_name: str | None = None
    #: VPC to run in; default: the account's default VPC.
    vpc: str | None = None
    #: Subnets to run in; default: every subnet of ``vpc``.
    subnets: Sequence[str] | None = None
    #: Security groups to use instead of the per-cluster one this backend creates.
    security_groups: Sequence[str] | None = None
    #: Addresses (CIDR) allowed to reach the scheduler and dashboard; default: this client
    #: only. ``["0.0.0.0/0"]`` opens them to the internet: only ever on explicit request.
    client_cidrs: Sequence[str] | None = None
    #: Extra tags for every resource (the cluster tag ``dask-deploy:cluster`` is always set).
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Talk to the scheduler over its private address (client inside the VPC) and give
    #: tasks / instances no public address.
    use_private_ip: bool = False
    #: CloudWatch Logs group for scheduler and worker output (created if missing, kept
    #: after close so that logs of failed clusters can still be read).
    cloudwatch_logs_group: str = "/dask-deploy"
    #: Days that group keeps logs when this backend creates it.
    cloudwatch_logs_default_retention: int = 30
    #: Address resolution hook, ``"module:function"`` naming ``f(address_aws_gave) ->
    #: address_to_dial``: for tunnels, NAT and emulators. Default: dial it as is.
    resolve_address: str | None = None

    def __post_init__(self) -> None:
        _opt_str(self.region_name, "region_name", "an AWS region such as 'us-east-1'")
        _opt_str(self.vpc, "vpc", "a VPC id such as 'vpc-0123'")
        object.__setattr__(self, "subnets", _str_tuple(self.subnets, "subnets", "subnet ids"))
        object.__setattr__(self, "security_groups",
                           _str_tuple(self.security_groups, "security_groups", "security group ids"))
        cidrs = _str_tuple(self.client_cidrs, "client_cidrs", "CIDR blocks such as '203.0.113.7/32'")
        for cidr in cidrs or ():
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SpecError("client_cidrs", self.client_cidrs,
                                f"{cidr!r} is not a CIDR block such as '203.0.113.7/32'") from None
        object.__setattr__(self, "client_cidrs", cidrs)
        if not isinstance(self.tags, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()):
            raise SpecError("tags", self.tags, "expected a mapping of strings to strings")
        if any(k.startswith("dask-deploy:") for k in self.tags):
            raise SpecError("tags", self.tags, "keys starting with 'dask-deploy:' are reserved")
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))
        if not isinstance(self.use_private_ip, bool):
            raise SpecError("use_private_ip", self.use_private_ip, "expected True or False")
        _opt_str(self.cloudwatch_logs_group, "cloudwatch_logs_group", "a log group name")
        _int_at_least(self.cloudwatch_logs_default_retention, "cloudwatch_logs_default_retention",
                      1, "days")
        load_resolver(self.resolve_address)

    @property
    def resolver(self) -> Resolver:
        return load_resolver(self.resolve_address) or (lambda address: address)


@dataclass(frozen=True)
class ECSOptions(AWSOptions):
    """Options of ``ecs`` (tasks on a cluster's EC2 container instances) and ``fargate``."""

    #: ECS cluster to run in. ``ecs`` needs one with container instances; ``fargate``
    #: creates (and on close deletes) a cluster of its own when it is not given.
    cluster_arn: str | None = None
    #: CPU units (1024 = one vCPU) and memory (MiB) of each worker and of the scheduler task.
    worker_cpu: int = 4096
    worker_mem: int = 16384
    scheduler_cpu: int = 1024
    scheduler_mem: int = 4096
    #: Role that ECS uses to pull the image and write logs; default: one made per cluster.
    execution_role_arn: str | None = None
    #: Role the containers run as (it reads the cluster's TLS secret); default: per cluster.
    task_role_arn: str | None = None
    #: Fargate platform version (``fargate`` only); default: AWS's latest.
    platform_version: str | None = None
    #: Run workers on Fargate Spot capacity (``fargate`` only).
    fargate_spot: bool = False
    #: Seconds a stopping container gets between SIGTERM and SIGKILL (ECS ``stopTimeout``).
    stop_timeout: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _opt_str(self.cluster_arn, "cluster_arn", "an ECS cluster ARN or name")
        for opt in ("worker_cpu", "worker_mem", "scheduler_cpu", "scheduler_mem"):
            _int_at_least(getattr(self, opt), opt, 128, "CPU units or MiB")
        _opt_str(self.execution_role_arn, "execution_role_arn", "an IAM role ARN")
        _opt_str(self.task_role_arn, "task_role_arn", "an IAM role ARN")
        _opt_str(self.platform_version, "platform_version", "a Fargate platform version")
        if not isinstance(self.fargate_spot, bool):
            raise SpecError("fargate_spot", self.fargate_spot, "expected True or False")
        _int_at_least(self.stop_timeout, "stop_timeout", 2, "seconds")
        if self.stop_timeout > 120:
            raise SpecError("stop_timeout", self.stop_timeout, "expected at most 120 s (the ECS limit)")


@dataclass(frozen=True)
class EC2Options(AWSOptions):
    """Options of ``ec2``: one instance per scheduler and per worker unit, running ``image``."""

    #: Machine image; default: the latest ECS-optimised Amazon Linux 2023 AMI (it has docker),
    #: or its GPU variant for GPU workers, looked up through SSM public parameters.
    ami: str | None = None
    #: Instance types of the scheduler and of each worker unit.
    scheduler_instance_type: str = "t3.medium"
    worker_instance_type: str = "t3.xlarge"
    #: Instance type for workers with ``gpus`` (default: a type with that many GPUs).
    gpu_instance_type: str | None = None
    #: Root volume size in GiB.
    filesystem_size: int = 40
    #: SSH key pair to install (none by default: nothing listens for SSH).
    key_name: str | None = None
    #: Instance profile (name or ARN) to use instead of the per-cluster one.
    iam_instance_profile: str | None = None
    #: Install docker at boot when the image lacks it (off for the default ECS-optimised AMI).
    bootstrap: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for opt in ("ami", "gpu_instance_type", "key_name", "iam_instance_profile"):
            _opt_str(getattr(self, opt), opt, "a string")
        for opt in ("scheduler_instance_type", "worker_instance_type"):
            _opt_str(getattr(self, opt), opt, "an instance type such as 't3.medium'")
        _int_at_least(self.filesystem_size, "filesystem_size", 8, "GiB")
        if not isinstance(self.bootstrap, bool):
            raise SpecError("bootstrap", self.bootstrap, "expected True or False")


def gpu_instance_type(gpus: int) -> str:
    """An instance type with at least ``gpus`` NVIDIA GPUs (g4dn family)."""
    for count, itype in ((1, "g4dn.xlarge"), (4, "g4dn.12xlarge"), (8, "g4dn.metal")):
        if gpus <= count:
            return itype
    raise SpecError("gpus", gpus, "at most 8 GPUs per instance; set gpu_instance_type for more")


def as_options(value: Any, cls: type[AWSOptions]) -> Any:
    """The backend options of a spec, defaulted (gc builds specs with no options at all)."""
    return value if isinstance(value, cls) else cls()
