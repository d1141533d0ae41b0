"""Fixtures of the AWS backends' tests: moto's server in this process, tasks run locally.

One emulator and one :class:`~dask_deploy_testing.cloud.TaskRunner` serve the whole session;
tests use distinct cluster names instead of resetting it. Everything is on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dask_deploy_conformance import wait_for as wait_until
from dask_deploy_testing.cloud import MotoServer, TaskRunner, emulated_aws

REGION = "us-east-1"
LOOPBACK = "dask_deploy_testing.cloud:loopback"


@pytest.fixture(name="wait_until")
def _wait_until() -> Callable[..., None]:
    return wait_until


@pytest.fixture(scope="session")
def emulator() -> Iterator[tuple[MotoServer, TaskRunner]]:
    """moto on a free loopback port, a task runner, and AWS_* pointing at them."""
    with emulated_aws(REGION) as (server, runner):
        yield server, runner
        assert not runner.errors, f"the task runner reported errors: {runner.errors}"


@pytest.fixture
def runner(emulator: tuple[MotoServer, TaskRunner]) -> TaskRunner:
    return emulator[1]


@pytest.fixture
def boto(emulator: tuple[MotoServer, TaskRunner]) -> Callable[[str], Any]:
    """``boto("ecs")``: a boto3 client of the emulator, to check what the backend did."""
    import boto3

    server = emulator[0]
    return lambda service: boto3.client(service, endpoint_url=server.endpoint_url, region_name=REGION,
                                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(autouse=True)
def state_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test keeps its cluster records to itself."""
    path = tempfile.mkdtemp(prefix="ddc-", dir="/tmp")
    monkeypatch.setenv("DASK_DEPLOY_STATE_DIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def name() -> str:
    """A fresh cluster name (it tags everything the test creates)."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def options(emulator: tuple[MotoServer, TaskRunner], name: str) -> dict[str, Any]:
    """Options every test cluster gets: small tasks, loopback only, quick polling."""
    return {
        "name": name, "image": "dask-deploy:test", "resolve_address": LOOPBACK,
        "client_cidrs": ["127.0.0.1/32"], "scheduler_port": 0, "dashboard_address": ":0",
        "worker_cpu": 256, "worker_mem": 512, "scheduler_cpu": 256, "scheduler_mem": 512,
        "threads_per_worker": 1, "poll_interval": 0.2, "start_timeout": 90, "quiet": True,
    }


@pytest.fixture(scope="session")
def ecs_cluster(emulator: tuple[MotoServer, TaskRunner]) -> str:
    """An ECS cluster with four (emulated) container instances, for the ``ecs`` backend."""
    import boto3

    server = emulator[0]
    kw = {"endpoint_url": server.endpoint_url, "region_name": REGION,
          "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    ecs, ec2 = boto3.client("ecs", **kw), boto3.client("ec2", **kw)
    arn = ecs.create_cluster(clusterName="test-instances")["cluster"]["clusterArn"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    hosts = ec2.run_instances(ImageId=image, MinCount=4, MaxCount=4, InstanceType="m5.xlarge")
    for inst in hosts["Instances"]:
        ecs.register_container_instance(cluster=arn, instanceIdentityDocument=json.dumps(
            {"instanceId": inst["InstanceId"]}))
    return str(arn)


@pytest.fixture
def discover(emulator: tuple[MotoServer, TaskRunner]) -> Callable[..., list[Any]]:
    """``discover(backend, cluster_id)``: what AWS still holds, seen by a backend built from
    nothing but default options (as ``dask-deploy gc`` builds it)."""
    from dask_deploy_testing.cloud import run_hook

    return lambda backend, cluster_id, **opts: run_hook(backend, "deploy_discover", opts,
                                                        cluster_id=cluster_id)
