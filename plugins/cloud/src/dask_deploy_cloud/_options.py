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
from typing import Any, ClassVar

from dask_deploy import Alias, CompatTable, Convert, SpecError

__all__ = ["EC2_COMPAT", "ECS_COMPAT", "FARGATE_COMPAT", "AWSOptions", "EC2Options",
           "ECSOptions", "Resolver"]

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


# --------------------------------------------------------------------------------------
# dask-cloudprovider's names (ECSCluster, FargateCluster, EC2Cluster), as data
# --------------------------------------------------------------------------------------

_CREDENTIALS = ("credentials come from the AWS configuration chain (environment, ~/.aws, "
                "role), never from options, which are written into the cluster record")


def _drop_if(option: str, fine: Sequence[Any], why: str) -> Any:
    def convert(value: object) -> dict[str, Any]:
        if value in fine or (isinstance(value, str) and value.upper() in fine):
            return {}
        raise SpecError(option, value, why)
    return convert


def _subnet(value: object) -> dict[str, Any]:
    if not isinstance(value, str) or not value:
        raise SpecError("subnet_id", value, "expected a subnet id such as 'subnet-0123'")
    return {"subnets": [value]}


def _instance_profile(value: object) -> dict[str, Any] | None:
    if isinstance(value, Mapping) and len(value) == 1 and set(value) <= {"Name", "Arn"}:
        return {"iam_instance_profile": next(iter(value.values()))}
    return None


def _tags(value: object) -> dict[str, Any]:
    return {"tags": value}


_ECS_SAME = (
    "scheduler_cpu", "scheduler_mem", "worker_cpu", "worker_mem", "n_workers",
    "cluster_arn", "execution_role_arn", "task_role_arn", "cloudwatch_logs_group",
    "cloudwatch_logs_default_retention", "vpc", "subnets", "security_groups", "tags",
    "region_name", "platform_version", "fargate_spot", "scheduler_port",
)
_NOT_USED_ON_ECS = (
    Alias("cluster_name_template", None, "warn", anchor_default="dask-{uuid}",
          reason="a cluster made for fargate is named after the dask-deploy cluster"),
    Alias("workers_name_start", None, "warn", anchor_default=0,
          reason="workers are named <cluster>-<n>"),
    Alias("workers_name_step", None, "warn", anchor_default=1,
          reason="workers are named <cluster>-<n>"),
    Alias("cloudwatch_logs_stream_prefix", None, "warn", anchor_default="{cluster_name}",
          reason="log streams are named after the cluster and unit"),
    Alias("skip_cleanup", None, "warn", anchor_default=False,
          reason="`dask-deploy gc` removes what a crashed session left behind"),
    Alias("find_address_timeout", "start_timeout", "warn", anchor_default=60,
          convert=Convert.to("start_timeout", Convert.seconds),
          reason="seconds a task may run without its worker connecting"),
)

#: ``ECSCluster`` (tasks on an ECS cluster's EC2 container instances: backend ``ecs``).
ECS_COMPAT = CompatTable(
    anchor="dask-cloudprovider ECSCluster",
    config=("cloudprovider.ecs",),
    entries=(
        *(Alias(n, n, "same") for n in _ECS_SAME),
        Alias("image", "image", "same", anchor_default="daskdev/dask:latest"),
        *(Alias(n, n, "same", where="option") for n in ("asynchronous", "loop", "security",
                                                          "name", "shutdown_on_close")),
        Alias("fargate_scheduler", None, "same", anchor_default=False,
              convert=_drop_if("fargate_scheduler", (False, None),
                               "Fargate is the fargate backend: Cluster.from_name('fargate')"),
              reason="False only; Fargate is the fargate backend"),
        Alias("fargate_workers", None, "same", anchor_default=False,
              convert=_drop_if("fargate_workers", (False, None),
                               "Fargate is the fargate backend: Cluster.from_name('fargate')"),
              reason="False only; Fargate is the fargate backend"),
        Alias("fargate_use_private_ip", "use_private_ip", "same"),
        Alias("worker_nthreads", "threads_per_worker", "same"),
        Alias("worker_gpu", "gpus", "same", anchor_default=0),
        Alias("environment", "env", "same"),
        Alias("scheduler_timeout", "idle_timeout", "same", anchor_default="5 minutes",
              convert=Convert.to("idle_timeout", Convert.seconds),
              reason='a duration such as "5 minutes" becomes seconds'),
        Alias("worker_extra_args", "worker_options", "warn", convert=Convert.cli_args,
              reason="command-line arguments become threads_per_worker, memory_limit, "
                     "resources and worker_options"),
        Alias("cpu_architecture", None, "same", anchor_default="X86_64",
              convert=_drop_if("cpu_architecture", ("X86_64", None),
                               "only X86_64 task definitions are made"),
              reason="X86_64 only"),
        Alias("scheduler_extra_args", None, "refuse",
              reason="pass keyword arguments of distributed.Scheduler as scheduler_options"),
        Alias("scheduler_task_definition_arn", None, "refuse",
              reason="task definitions are made per cluster (they carry its tag and TLS "
                     "secret): set image, scheduler_cpu, scheduler_mem"),
        Alias("worker_task_definition_arn", None, "refuse",
              reason="task definitions are made per cluster (they carry its tag and TLS "
                     "secret): set image, worker_cpu, worker_mem"),
        Alias("scheduler_task_kwargs", None, "refuse",
              reason="run_task arguments are the backend's: use subnets, security_groups, "
                     "tags"),
        Alias("worker_task_kwargs", None, "refuse",
              reason="run_task arguments are the backend's: use subnets, security_groups, "
                     "tags"),
        Alias("scheduler_address", None, "refuse",
              reason="to reach a running cluster use dask_deploy.attach(name)"),
        Alias("task_role_policies", None, "refuse",
              reason="attach the policies to a role of your own and pass task_role_arn= "
                     "(it must also read the cluster's TLS secret)"),
        Alias("mount_points", None, "refuse",
              reason="ECS volumes are not supported: read data from S3 or bake it into the image"),
        Alias("volumes", None, "refuse",
              reason="ECS volumes are not supported: read data from S3 or bake it into the image"),
        Alias("mount_volumes_on_scheduler", None, "refuse", anchor_default=False,
              reason="ECS volumes are not supported"),
        Alias("aws_access_key_id", None, "refuse", where="option", reason=_CREDENTIALS),
        Alias("aws_secret_access_key", None, "refuse", where="option", reason=_CREDENTIALS),
        *_NOT_USED_ON_ECS,
    ),
)

#: ``FargateCluster`` (backend ``fargate``): the same names, Fargate on both sides.
FARGATE_COMPAT = ECS_COMPAT.extended(
    Alias("fargate_scheduler", None, "same", anchor_default=False,
          convert=_drop_if("fargate_scheduler", (True, None),
                           "tasks on EC2 container instances are the ecs backend"),
          reason="True only; EC2 container instances are the ecs backend"),
    Alias("fargate_workers", None, "same", anchor_default=False,
          convert=_drop_if("fargate_workers", (True, None),
                           "tasks on EC2 container instances are the ecs backend"),
          reason="True only; EC2 container instances are the ecs backend"),
    anchor="dask-cloudprovider FargateCluster",
)

#: ``EC2Cluster`` (backend ``ec2``).
EC2_COMPAT = CompatTable(
    anchor="dask-cloudprovider EC2Cluster",
    config=("cloudprovider.ec2",),
    entries=(
        *(Alias(n, n, "same") for n in (
            "ami", "vpc", "security_groups", "filesystem_size", "key_name", "use_private_ip",
            "n_workers", "scheduler_instance_type", "worker_instance_type", "worker_options",
            "scheduler_options", "gpu_instance_type")),
        *(Alias(n, n, "same", where="option") for n in ("asynchronous", "loop", "security",
                                                          "name", "shutdown_on_close")),
        Alias("region", "region_name", "same"),
        Alias("bootstrap", "bootstrap", "same", anchor_default=True),
        Alias("instance_type", "worker_instance_type", "same", anchor_default="t2.micro",
              convert=lambda v: {"scheduler_instance_type": v, "worker_instance_type": v},
              reason="sets scheduler_instance_type and worker_instance_type"),
        Alias("subnet_id", "subnets", "same", convert=_subnet),
        Alias("docker_image", "image", "same", anchor_default="daskdev/dask:latest"),
        Alias("env_vars", "env", "same"),
        Alias("iam_instance_profile", "iam_instance_profile", "same", convert=_instance_profile,
              reason='{"Name": ...} or {"Arn": ...} becomes the name or ARN'),
        Alias("instance_tags", "tags", "warn", convert=_tags,
              reason="tags go on every resource of the cluster"),
        Alias("volume_tags", "tags", "warn", convert=_tags,
              reason="tags go on every resource of the cluster"),
        Alias("auto_shutdown", None, "warn", anchor_default=True,
              reason="idle_timeout ends an idle scheduler; `dask-deploy gc` removes leftovers"),
        Alias("debug", None, "warn", anchor_default=False,
              reason="cluster.get_logs() reads every instance's log"),
        Alias("worker_class", None, "same", convert=Convert.worker_class,
              anchor_default="dask.distributed.Nanny",
              reason="Nanny and Worker mean a worker process; for GPUs use gpus="),
        Alias("availability_zone", None, "refuse",
              reason="choose subnets= in that zone"),
        Alias("enable_detailed_monitoring", None, "refuse", anchor_default=False,
              reason="detailed CloudWatch monitoring is not switched on by dask-deploy"),
        Alias("docker_args", None, "refuse", anchor_default="",
              reason="the container is run by the backend's bootstrap; bake options into the image"),
        Alias("extra_bootstrap", None, "refuse",
              reason="user data carries only dask-deploy's bootstrap: bake software into the ami "
                     "or image"),
        Alias("aws_access_key_id", None, "refuse", where="option", reason=_CREDENTIALS),
        Alias("aws_secret_access_key", None, "refuse", where="option", reason=_CREDENTIALS),
    ),
)


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

    #: dask-cloudprovider's names and ``cloudprovider.ecs`` keys, translated by the core.
    anchor_compat: ClassVar[Mapping[str, CompatTable]] = MappingProxyType(
        {"ecs": ECS_COMPAT, "fargate": FARGATE_COMPAT})

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

    #: dask-cloudprovider's names and ``cloudprovider.ec2`` keys, translated by the core.
    anchor_compat: ClassVar[CompatTable] = EC2_COMPAT

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
