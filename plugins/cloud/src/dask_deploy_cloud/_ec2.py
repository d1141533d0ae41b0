"""The ``ec2`` backend: the scheduler and each worker unit on an instance of its own.

Each instance runs ``image`` with docker (host networking, ``awslogs`` driver to
``<group>/<cluster>/<instance id>``) and shuts itself down, and so terminates, when the
container ends. The user data is a short script with **no secret** in it: the container
reads the TLS identity from Secrets Manager with the cluster's instance profile. Workers start
``run_instances`` ``MinCount=MaxCount=n`` at a time (all or none: a refused batch is retried
by the core with backoff); IMDSv2 only; tagged with the cluster. A batch holds one pool's
units: they launch with that pool's instance type, AMI, root volume and image.
"""

from __future__ import annotations

import itertools
import shlex
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from dask_deploy import ClusterSpec, Handle, Phase, Status

from ._aws import (
    CLUSTER_TAG,
    KIND_TAG,
    LOG_WRITE,
    owner_data,
    retry_propagation,
    tag_filters,
    tag_list,
    tags_of,
)
from ._base import Machine, MachineBackend, kind_tags
from ._options import EC2Options, gpu_instance_type

__all__ = ["EC2Backend", "instance_status"]

AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
_LIVE = ["pending", "running", "stopping", "stopped"]


def instance_status(instance: dict[str, Any]) -> Status:
    """Our phase of an EC2 instance; terminations we did not ask for are failures."""
    state = instance["State"]["Name"]
    if state == "pending":
        return Status(Phase.PENDING)
    if state == "running":
        return Status(Phase.RUNNING)
    reason = instance.get("StateReason", {})
    if reason.get("Code") == "Client.UserInitiatedShutdown":
        # Ours: still up while shutting down, so that stopping waits for the end.
        return Status(Phase.RUNNING if state == "shutting-down" else Phase.GONE, "terminated")
    why = reason.get("Message") or instance.get("StateTransitionReason") or state
    if reason.get("Code") == "Client.InstanceInitiatedShutdown":
        why = f"its container ended and the instance shut down ({why}); see its log"
    return Status(Phase.FAILED, why)


class EC2Backend(MachineBackend):
    """``ec2``: one instance per scheduler and per worker unit."""

    kind: ClassVar[str] = "instance"
    options_class = EC2Options
    batch_size: ClassVar[int] = 100

    def __init__(self, spec: ClusterSpec) -> None:
        super().__init__(spec)
        self.options: EC2Options
        #: The AMI of each pool's workers by pool name; None: the scheduler's.
        self.amis: dict[str | None, str] = {}
        self.profile: dict[str, str] = {}
        self.root_device: dict[str, str] = {}
        self._subnet = itertools.count()

    async def _prepare(self) -> None:
        opts, infra, spec = self.options, self.infra, self.spec
        # Each pool's own ami option, else the latest public one for CPU or GPU workers
        # (each looked up once).
        wanted: dict[str | None, tuple[str | None, str]] = {None: (opts.ami, AMI_PARAMETER)}
        for p in spec.all_pools:
            wanted[p.name] = (self._options_of(p.name).ami,
                              GPU_AMI_PARAMETER if p.worker.gpus else AMI_PARAMETER)
        public: dict[str, str] = {}
        for param in sorted({param for ami, param in wanted.values() if not ami}):
            got = await self.aws("ssm", "get_parameter", Name=param)
            public[param] = got["Parameter"]["Value"]
        self.amis = {key: ami or public[param] for key, (ami, param) in wanted.items()}
        images = await self.aws("ec2", "describe_images", ImageIds=sorted(set(self.amis.values())))
        self.root_device = {i["ImageId"]: i["RootDeviceName"] for i in images["Images"]
                            if i.get("RootDeviceName")}
        if opts.iam_instance_profile:
            key = "Arn" if opts.iam_instance_profile.startswith("arn:") else "Name"
            self.profile = {key: opts.iam_instance_profile}
        else:
            role = await infra.role("node", "ec2.amazonaws.com",
                                    [*infra.secret_statement(), (LOG_WRITE, infra.log_arn())])
            self.profile = {"Arn": await infra.instance_profile(role)}

    def _log_stream(self, machine_id: str) -> str:
        return f"{self.spec.name}/{machine_id}"

    def _identity(self) -> str:
        return "env"

    def user_data(self, role: str, command: Sequence[str], pool: str | None = None) -> str:
        """The boot script: start the container, shut down when it ends. No secrets.

        ``pool``: whose image, env and gpus a worker has (None: the scheduler)."""
        spec, opts, infra = self.spec, self.options, self.infra
        worker = self._pool(pool).worker
        metadata = "http://169.254.169.254/latest"
        lines = [
            "#!/bin/bash",
            f"# dask-deploy cluster {spec.name}: the {role}. No secret is written here: the",
            "# container reads the cluster's TLS identity with this instance's role.",
            "set -u",
            f'TOKEN=$(curl -s -X PUT {metadata}/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 300")',
            "export DASK_DEPLOY_INSTANCE_ID=$(curl -s -H \"X-aws-ec2-metadata-token: $TOKEN\" "
            f"{metadata}/meta-data/instance-id)",
            "systemctl disable --now ecs 2>/dev/null || true",
        ]
        if opts.bootstrap:
            lines += ["command -v docker >/dev/null || dnf install -y docker || yum install -y docker"
                      " || { apt-get update && apt-get install -y docker.io; }",
                      "systemctl start docker || service docker start"]
        docker = ["docker run --rm --network host --log-driver awslogs",
                  f"--log-opt awslogs-region={infra.region}",
                  f"--log-opt {shlex.quote('awslogs-group=' + opts.cloudwatch_logs_group)}",
                  f'--log-opt "awslogs-stream={spec.name}/$DASK_DEPLOY_INSTANCE_ID"',
                  "-e DASK_DEPLOY_INSTANCE_ID",
                  *(f"-e {shlex.quote(f'{k}={v}')}" for k, v in worker.env.items()),
                  *(["--gpus all"] if role == "worker" and worker.gpus else []),
                  shlex.quote(worker.image or ""), shlex.join(command)]
        lines += [" ".join(docker), "shutdown -h now"]
        return "\n".join(lines) + "\n"

    def _instance_type(self, role: str, pool: str | None = None) -> str:
        if role == "scheduler":
            return self.options.scheduler_instance_type
        opts, gpus = self._options_of(pool), self._pool(pool).worker.gpus
        if gpus:
            return opts.gpu_instance_type or gpu_instance_type(gpus)
        return opts.worker_instance_type

    async def _start(self, role: str, count: int, command: list[str], pool: str | None = None
                     ) -> tuple[list[Machine], str]:
        infra = self.infra
        opts = self._options_of(pool)
        ami = self.amis[pool]
        tags = tag_list(kind_tags(infra, role))
        kwargs: dict[str, Any] = {
            "ImageId": ami, "InstanceType": self._instance_type(role, pool),
            "MinCount": count, "MaxCount": count,
            "UserData": self.user_data(role, command, pool), "IamInstanceProfile": self.profile,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "NetworkInterfaces": [{
                "DeviceIndex": 0, "SubnetId": infra.subnets[next(self._subnet) % len(infra.subnets)],
                "Groups": infra.security_groups, "AssociatePublicIpAddress": not opts.use_private_ip,
                "DeleteOnTermination": True}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
        }
        if ami in self.root_device:
            kwargs["BlockDeviceMappings"] = [{"DeviceName": self.root_device[ami], "Ebs": {
                "VolumeSize": opts.filesystem_size, "DeleteOnTermination": True}}]
        if opts.key_name:
            kwargs["KeyName"] = opts.key_name
        deadline = time.monotonic() + self.spec.start_timeout
        result = await retry_propagation(lambda: self.aws("ec2", "run_instances", **kwargs), deadline)
        machines = [Machine(i["InstanceId"], instance_status(i), i.get("PrivateIpAddress"),
                            i.get("PublicIpAddress")) for i in result["Instances"]]
        return machines, "EC2 started fewer instances than asked (capacity)"

    async def _instances(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.aws("ec2", "describe_instances", Filters=filters,
                                  **({"NextToken": token} if token else {}))
            out += [i for r in page["Reservations"] for i in r["Instances"]]
            token = page.get("NextToken")
            if not token:
                return out

    async def _describe(self, handles: Sequence[Handle], public: bool = False) -> dict[str, Machine]:
        ids = [h.backend_id for h in handles]
        found: dict[str, Machine] = {}
        for i in range(0, len(ids), 200):  # a filter takes up to 200 values; ids that AWS
            # forgot are left out instead of failing the whole call
            for inst in await self._instances([{"Name": "instance-id", "Values": ids[i:i + 200]}]):
                found[inst["InstanceId"]] = Machine(inst["InstanceId"], instance_status(inst),
                                                    inst.get("PrivateIpAddress"),
                                                    inst.get("PublicIpAddress"), inst["State"]["Name"])
        return found

    async def _stop(self, handles: Sequence[Handle]) -> None:
        # Only instances still up: an unknown id fails the whole call, and one that shut
        # itself down is terminated already.
        known = await self._describe(handles)
        ids = [i for i, m in known.items() if m.state not in ("shutting-down", "terminated")]
        for i in range(0, len(ids), 1000):
            await self.aws("ec2", "terminate_instances", InstanceIds=ids[i:i + 1000])

    async def _discover_machines(self, cluster_id: str | None) -> list[Handle]:
        found = []
        for inst in await self._instances([*tag_filters(self.spec.backend, cluster_id),
                                           {"Name": "instance-state-name", "Values": _LIVE}]):
            tags = tags_of(inst.get("Tags"))
            cid, role, iid = tags[CLUSTER_TAG], tags.get(KIND_TAG, "worker"), inst["InstanceId"]
            found.append(Handle(self.spec.backend, cid, f"{cid}-{role}-{iid}", iid,
                                {"kind": "instance", "role": role, "log": f"{cid}/{iid}",
                                 **owner_data(tags)}))
        return found
