"""AWS plumbing shared by the three backends: clients, tags, and the per-cluster resources.

Every resource carries the tag ``dask-deploy:cluster=<cluster name>`` (and ``dask-deploy:kind``),
so that ``deploy_discover`` finds leftovers by asking AWS, never our own records. The
per-cluster resources are: a security group (only the client's address and the group itself
may connect), the TLS secret (Secrets Manager; only the cluster's role may read it) and IAM
roles. Each is created in ``deploy_prepare`` and deleted in ``deploy_teardown``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from dask_deploy import TLS, BackendError, ClusterSpec, Handle, SpecError, created_tag, owner_tag

from ._options import AWSOptions

__all__ = ["AWS", "BACKEND_TAG", "CLUSTER_TAG", "KIND_TAG", "Infra", "ours", "owner_data", "tag_list"]

logger = logging.getLogger("dask_deploy_cloud")

CLUSTER_TAG = "dask-deploy:cluster"
#: Which backend made it: gc of one backend must not pull resources from under another's.
BACKEND_TAG = "dask-deploy:backend"
KIND_TAG = "dask-deploy:kind"
#: Ownership tags on everything a cluster creates (``gc`` leaves other users' alone).
OWNER_TAG = "dask-deploy:owner"
CREATED_TAG = "dask-deploy:created"
#: What ``gc`` judges liveness by: the creating client's pid (only on clusters that stop
#: with it: a detached one outlives it), ``shutdown_on_close`` and the scheduler's placement.
OWNER_PID_TAG = "dask-deploy:owner-pid"
SHUTDOWN_TAG = "dask-deploy:shutdown-on-close"
SCHEDULER_TAG = "dask-deploy:scheduler"
#: IAM path of every role and instance profile we create (lets discover list only ours).
IAM_PATH = "/dask-deploy/"
#: Errors AWS returns while a new IAM role or profile is still propagating (retried).
PROPAGATING = ("unable to assume", "Invalid IAM Instance Profile", "iamInstanceProfile",
               "not authorized to perform: iam:PassRole")


def tag_list(tags: Mapping[str, str], key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    """Tags in the shape an API wants: ECS says ``key``/``value``, the rest ``Key``/``Value``."""
    return [{key: k, value: v} for k, v in tags.items()]


def tags_of(items: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """A tag list of any API (``Key``/``key``) as a dict."""
    return {t.get("Key", t.get("key", "")): t.get("Value", t.get("value", "")) for t in items or ()}


def cluster_tags(spec: ClusterSpec) -> dict[str, str]:
    """The ownership and liveness tags of everything the cluster ``spec`` creates."""
    tags = {OWNER_TAG: owner_tag(), CREATED_TAG: str(created_tag()),
            SHUTDOWN_TAG: str(spec.shutdown_on_close).lower(), SCHEDULER_TAG: spec.scheduler.placement}
    if spec.shutdown_on_close:
        tags[OWNER_PID_TAG] = str(os.getpid())
    return tags


def owner_data(tags: Mapping[str, str]) -> dict[str, Any]:
    """``handle.data`` of a discovered resource from its tags: ``owner``, ``created``,
    ``owner_pid``, ``detached`` (what ``dask-deploy gc`` judges by)."""
    data: dict[str, Any] = {}
    if OWNER_TAG in tags:
        data["owner"] = tags[OWNER_TAG]
    for key, tag, conv in (("created", CREATED_TAG, float), ("owner_pid", OWNER_PID_TAG, int)):
        with contextlib.suppress(KeyError, ValueError):
            data[key] = conv(tags[tag])
    if SHUTDOWN_TAG in tags:
        data["detached"] = tags[SHUTDOWN_TAG] == "false"
    if SCHEDULER_TAG in tags:
        data["placement"] = tags[SCHEDULER_TAG]
    return data


_loader: Any = None


def _session() -> Any:
    """A fresh aiobotocore session (credentials of its own) that shares one process-wide
    loader of botocore's model files: a session of its own parses the endpoint and service
    JSON again, ~0.12 CPU-s per client, ~0.6 s per cluster and per ``deploy_discover``."""
    global _loader
    from aiobotocore.session import get_session

    session = get_session()
    if _loader is None:
        _loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _loader)
    return session


class AWS:
    """The aiobotocore clients of one cluster, opened on first use and closed together.

    ``calls`` counts API calls by operation (the benchmark reports calls per worker).
    """

    def __init__(self, region: str | None) -> None:
        self.region = region
        self.calls: collections.Counter[str] = collections.Counter()
        self._clients: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    async def client(self, service: str) -> Any:
        async with self._lock:  # the core calls no hook after teardown closed these
            if service not in self._clients:
                from aiobotocore.config import AioConfig

                config = AioConfig(retries={"mode": "standard", "max_attempts": 4},
                                   connect_timeout=10, read_timeout=60)
                self._clients[service] = await self._stack.enter_async_context(
                    _session().create_client(service, region_name=self.region, config=config))
            return self._clients[service]

    async def __call__(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        """Call ``service.operation``; AWS errors become BackendError naming the call."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self.client(service)
        self.calls[f"{service}.{operation}"] += 1
        try:
            return await getattr(client, operation)(**kwargs)  # type: ignore[no-any-return]
        except ClientError as e:
            err = e.response.get("Error", {})
            raise AWSError(service, operation, err.get("Code", ""), err.get("Message", str(e))) from e
        except BotoCoreError as e:
            raise AWSError(service, operation, type(e).__name__, str(e)) from e

    async def region_name(self) -> str:
        return str((await self.client("ecs")).meta.region_name)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._stack.aclose()
        self._clients.clear()


class AWSError(BackendError):
    """An AWS API call failed; ``code`` is AWS's error code (``ResourceNotFoundException``...)."""

    def __init__(self, service: str, operation: str, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"AWS {service}.{operation} failed: {code}: {message}")


async def retry_propagation(call: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """Run ``call``, retrying while a just-created IAM role is not usable yet."""
    delay = 1.0
    while True:
        try:
            return await call()
        except AWSError as e:
            if time.monotonic() + delay > deadline or not any(p in str(e) for p in PROPAGATING):
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 8.0)


def _trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def _policy(*statements: tuple[Sequence[str], str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": list(actions), "Resource": resource}
        for actions, resource in statements]})


LOG_WRITE = ("logs:CreateLogStream", "logs:PutLogEvents")
IMAGE_PULL = ("ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
              "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage")


def detect_client_cidr(use_private_ip: bool) -> str:
    """This client's address as a /32: the local one inside a VPC, else the public one."""
    if use_private_ip:
        from distributed.utils import get_ip

        return f"{get_ip()}/32"
    try:  # AWS's own echo service: the address AWS sees our connections come from
        with urllib.request.urlopen("https://checkip.amazonaws.com", timeout=10) as r:
            return f"{r.read().decode().strip()}/32"
    except OSError as e:
        raise SpecError("client_cidrs", None,
                        f"could not find this client's public address ({e}); pass client_cidrs="
                        "['<your address>/32'] (or use_private_ip=True inside the VPC)") from None


class Infra:
    """The per-cluster resources (network, security group, secret, roles, log group).

    ``ports`` are the TCP ports the client must reach (scheduler and dashboard); ``None``
    means they are chosen at start (port 0), so the client's address may reach every port.
    """

    def __init__(self, aws: AWS, spec: ClusterSpec, options: AWSOptions) -> None:
        self.aws, self.spec, self.options = aws, spec, options
        self.tags = {**options.tags, **cluster_tags(spec), CLUSTER_TAG: spec.name,
                     BACKEND_TAG: spec.backend}
        self.vpc: str = ""
        self.subnets: list[str] = []
        self.security_groups: list[str] = []
        self.secret_arn: str | None = None
        self.region: str = ""

    def kind_tags(self, kind: str) -> dict[str, str]:
        return {**self.tags, KIND_TAG: kind}

    async def network(self) -> None:
        """Find the VPC and subnets (default VPC unless ``vpc`` / ``subnets`` say otherwise)."""
        aws, opts = self.aws, self.options
        self.region = await aws.region_name()
        if opts.subnets:
            self.subnets = list(opts.subnets)
            if not opts.vpc:
                desc = await aws("ec2", "describe_subnets", SubnetIds=self.subnets[:1])
                self.vpc = desc["Subnets"][0]["VpcId"]
        if opts.vpc:
            self.vpc = opts.vpc
        if not self.vpc:
            vpcs = await aws("ec2", "describe_vpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}])
            if not vpcs["Vpcs"]:
                raise SpecError("vpc", None, f"region {self.region} has no default VPC; pass vpc= "
                                "and subnets=")
            self.vpc = vpcs["Vpcs"][0]["VpcId"]
        if not self.subnets:
            subnets = await aws("ec2", "describe_subnets",
                                Filters=[{"Name": "vpc-id", "Values": [self.vpc]}])
            self.subnets = [s["SubnetId"] for s in subnets["Subnets"]]
            if not self.subnets:
                raise SpecError("subnets", None, f"VPC {self.vpc} has no subnets; pass subnets=")

    async def security_group(self, ports: Sequence[int] | None) -> None:
        """Create the cluster's group: members talk freely, the client reaches ``ports``."""
        if self.options.security_groups:
            self.security_groups = list(self.options.security_groups)
            return
        cidrs = list(self.options.client_cidrs or [detect_client_cidr(self.options.use_private_ip)])
        aws = self.aws
        name = f"dask-deploy-{self.spec.name}"
        try:
            group = await aws("ec2", "create_security_group", GroupName=name, VpcId=self.vpc,
                              Description=f"dask-deploy cluster {self.spec.name}",
                              TagSpecifications=[{"ResourceType": "security-group",
                                                  "Tags": tag_list(self.kind_tags("security-group"))}])
        except AWSError as e:
            if e.code != "InvalidGroup.Duplicate":
                raise
            # Ours from an earlier start (re-attach): it has its rules already.
            found = await aws("ec2", "describe_security_groups", Filters=[
                {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [self.vpc]}])
            self.security_groups = [found["SecurityGroups"][0]["GroupId"]]
            return
        gid = group["GroupId"]
        self.security_groups = [gid]
        client_rules = ([{"IpProtocol": "tcp", "FromPort": lo, "ToPort": hi} for lo, hi in _ranges(ports)]
                        if ports else [{"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535}])
        await aws("ec2", "authorize_security_group_ingress", GroupId=gid, IpPermissions=[
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gid}]},
            *({**rule, "IpRanges": [{"CidrIp": c, "Description": "dask-deploy client"} for c in cidrs]}
              for rule in client_rules)])

    async def secret(self, tls: TLS | None) -> None:
        """Store the cluster's TLS identity where only its own tasks or instances can read it."""
        if tls is None:
            return
        name = f"dask-deploy/{self.spec.name}/tls"
        value = json.dumps({"cert": tls.cert, "key": tls.key})
        try:
            created = await self.aws(
                "secretsmanager", "create_secret", Name=name,
                Description=f"TLS identity of dask-deploy cluster {self.spec.name}",
                SecretString=value, Tags=tag_list(self.kind_tags("secret")))
        except AWSError as e:
            if e.code != "ResourceExistsException":
                raise
            # Left by an earlier start of this name: never re-use its key material; this
            # start's identity becomes the current version, and the tags name this owner.
            created = await self.aws("secretsmanager", "put_secret_value", SecretId=name,
                                     SecretString=value)
            await self.aws("secretsmanager", "tag_resource", SecretId=created["ARN"],
                           Tags=tag_list(self.kind_tags("secret")))
        self.secret_arn = created["ARN"]

    async def role(self, suffix: str, service: str, statements: Sequence[tuple[Sequence[str], str]]
                   ) -> str:
        """Create a role that ``service`` assumes, with these inline permissions; its ARN."""
        name = f"{self.spec.name}-{suffix}"
        try:
            created = await self.aws("iam", "create_role", RoleName=name, Path=IAM_PATH,
                                     AssumeRolePolicyDocument=_trust(service),
                                     Description=f"dask-deploy cluster {self.spec.name}",
                                     Tags=tag_list(self.kind_tags("role")))
        except AWSError as e:
            if e.code != "EntityAlreadyExists":
                raise
            created = await self.aws("iam", "get_role", RoleName=name)
        await self.aws("iam", "put_role_policy", RoleName=name, PolicyName="dask-deploy",
                       PolicyDocument=_policy(*statements))
        return str(created["Role"]["Arn"])

    async def instance_profile(self, role_arn: str) -> str:
        """An instance profile holding the role ``role_arn`` (same name); its ARN."""
        name = role_arn.rsplit("/", 1)[-1]
        try:
            created = await self.aws("iam", "create_instance_profile", InstanceProfileName=name,
                                     Path=IAM_PATH, Tags=tag_list(self.kind_tags("instance-profile")))
        except AWSError as e:
            if e.code != "EntityAlreadyExists":
                raise
            return str((await self.aws("iam", "get_instance_profile", InstanceProfileName=name))
                       ["InstanceProfile"]["Arn"])
        await self.aws("iam", "add_role_to_instance_profile", InstanceProfileName=name, RoleName=name)
        return str(created["InstanceProfile"]["Arn"])

    def secret_statement(self) -> list[tuple[Sequence[str], str]]:
        return [(["secretsmanager:GetSecretValue"], self.secret_arn)] if self.secret_arn else []

    def log_arn(self) -> str:
        return f"arn:aws:logs:{self.region}:*:log-group:{self.options.cloudwatch_logs_group}:*"

    async def log_group(self) -> None:
        """Create the log group if missing (kept on close: logs outlive clusters)."""
        group = self.options.cloudwatch_logs_group
        try:
            await self.aws("logs", "create_log_group", logGroupName=group,
                           tags={"dask-deploy": "logs"})
        except AWSError as e:
            if e.code != "ResourceAlreadyExistsException":
                raise
            return
        await self.aws("logs", "put_retention_policy", logGroupName=group,
                       retentionInDays=self.options.cloudwatch_logs_default_retention)

    async def read_log(self, stream: str, limit: int = 10_000) -> str:
        """The text of one log stream, oldest first ("" if nothing was written yet)."""
        lines: list[str] = []
        token: str | None = None
        while len(lines) < limit:
            kwargs: dict[str, Any] = {"logGroupName": self.options.cloudwatch_logs_group,
                                      "logStreamName": stream, "startFromHead": True}
            if token:
                kwargs["nextToken"] = token
            try:
                page = await self.aws("logs", "get_log_events", **kwargs)
            except AWSError as e:
                if e.code == "ResourceNotFoundException":
                    return ""  # the stream appears with the first line the process writes
                raise
            lines.extend(ev["message"] for ev in page["events"])
            if not page["events"] or page.get("nextForwardToken") in (None, token):
                break
            token = page["nextForwardToken"]
        return "\n".join(lines[-limit:])


def _ranges(ports: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in sorted(set(ports)):
        if out and p == out[-1][1] + 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


# --------------------------------------------------------------------------------------
# Discovery and deletion of the per-cluster resources (for teardown and gc)
# --------------------------------------------------------------------------------------


def ours(tags: Mapping[str, str], backend: str, cluster_id: str | None) -> bool:
    """Whether tags mark a resource of ``backend`` for ``cluster_id`` (None: any cluster)."""
    return CLUSTER_TAG in tags and tags.get(BACKEND_TAG) == backend and \
        (cluster_id is None or tags[CLUSTER_TAG] == cluster_id)


def tag_filters(backend: str, cluster_id: str | None) -> list[dict[str, Any]]:
    """EC2 ``Filters`` for resources of ``backend`` (and ``cluster_id``, if given)."""
    return [{"Name": f"tag:{BACKEND_TAG}", "Values": [backend]},
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster_id]} if cluster_id else
            {"Name": "tag-key", "Values": [CLUSTER_TAG]}]


async def discover_infra(aws: AWS, backend: str, cluster_id: str | None) -> list[Handle]:
    """Security groups, secrets, roles and instance profiles tagged with ``cluster_id``."""
    found: list[Handle] = []
    groups = await aws("ec2", "describe_security_groups", Filters=tag_filters(backend, cluster_id))
    for g in groups["SecurityGroups"]:
        tags = tags_of(g.get("Tags"))
        found.append(Handle(backend, tags[CLUSTER_TAG], g["GroupName"], g["GroupId"],
                            {"kind": "security-group", **owner_data(tags)}))
    sm_filter = [{"Key": "tag-key", "Values": [CLUSTER_TAG]}]
    token: str | None = None
    while True:
        page = await aws("secretsmanager", "list_secrets", Filters=sm_filter,
                         **({"NextToken": token} if token else {}))
        for s in page["SecretList"]:
            tags = tags_of(s.get("Tags"))
            if ours(tags, backend, cluster_id):
                found.append(Handle(backend, tags[CLUSTER_TAG], s["Name"], s["ARN"],
                                    {"kind": "secret", **owner_data(tags)}))
        token = page.get("NextToken")
        if not token:
            break
    roles = await aws("iam", "list_roles", PathPrefix=IAM_PATH)
    for r in roles["Roles"]:
        tags = tags_of((await aws("iam", "list_role_tags", RoleName=r["RoleName"]))["Tags"])
        if ours(tags, backend, cluster_id):
            found.append(Handle(backend, tags[CLUSTER_TAG], r["RoleName"], r["Arn"],
                                {"kind": "role", **owner_data(tags)}))
    profiles = await aws("iam", "list_instance_profiles", PathPrefix=IAM_PATH)
    for p in profiles["InstanceProfiles"]:
        tags = tags_of(p.get("Tags")) or tags_of(
            (await aws("iam", "list_instance_profile_tags", InstanceProfileName=p["InstanceProfileName"]))
            ["Tags"])
        if ours(tags, backend, cluster_id):
            found.append(Handle(backend, tags[CLUSTER_TAG], p["InstanceProfileName"], p["Arn"],
                                {"kind": "instance-profile", **owner_data(tags)}))
    return found


#: Deletion order: what others depend on goes last.
DELETE_ORDER = ("task-definition", "secret", "instance-profile", "role", "security-group", "ecs-cluster")


async def delete_infra(aws: AWS, handles: Sequence[Handle], patience: float = 120.0) -> list[str]:
    """Delete discovered resources in dependency order; the errors of what remains."""
    errors: list[str] = []
    for kind in DELETE_ORDER:
        for h in (h for h in handles if h.data.get("kind") == kind):
            try:
                await _delete(aws, kind, h, patience)
            except AWSError as e:
                if "NotFound" not in e.code and "NoSuchEntity" not in e.code:
                    errors.append(str(e))
    return errors


async def _delete(aws: AWS, kind: str, h: Handle, patience: float) -> None:
    if kind == "secret":
        await aws("secretsmanager", "delete_secret", SecretId=h.backend_id, ForceDeleteWithoutRecovery=True)
    elif kind == "instance-profile":
        prof = await aws("iam", "get_instance_profile", InstanceProfileName=h.name)
        for role in prof["InstanceProfile"].get("Roles", []):
            await aws("iam", "remove_role_from_instance_profile", InstanceProfileName=h.name,
                      RoleName=role["RoleName"])
        await aws("iam", "delete_instance_profile", InstanceProfileName=h.name)
    elif kind == "role":
        for name in (await aws("iam", "list_role_policies", RoleName=h.name))["PolicyNames"]:
            await aws("iam", "delete_role_policy", RoleName=h.name, PolicyName=name)
        await aws("iam", "delete_role", RoleName=h.name)
    elif kind == "security-group":
        # The network interfaces of stopped tasks linger a little: retry while they do.
        deadline = time.monotonic() + patience
        while True:
            try:
                await aws("ec2", "delete_security_group", GroupId=h.backend_id)
                return
            except AWSError as e:
                if e.code != "DependencyViolation" or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(5)
    elif kind == "task-definition":
        await aws("ecs", "deregister_task_definition", taskDefinition=h.backend_id)
    elif kind == "ecs-cluster":
        await aws("ecs", "delete_cluster", cluster=h.backend_id)
