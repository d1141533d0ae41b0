"""``ec2`` against moto: the calls it makes, its user data (no secrets) and its cleanup.

The task runner also boots each instance's container command from its user data, so the
cluster really works (scheduler and workers on "instances").
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import pytest
from dask_deploy import Cluster, CrashLoopError
from distributed import Client

pytestmark = pytest.mark.timeout(300)

ECS_ONLY = ("worker_cpu", "worker_mem", "scheduler_cpu", "scheduler_mem")


@pytest.fixture
def ec2_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in ECS_ONLY}


def instances_of(boto: Any, name: str) -> list[dict[str, Any]]:
    pages = boto("ec2").describe_instances(Filters=[{"Name": "tag:dask-deploy:cluster", "Values": [name]}])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def user_data(boto: Any, instance_id: str) -> str:
    got = boto("ec2").describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(got["UserData"]["Value"]).decode()


def test_ec2_lifecycle(ec2_options: dict[str, Any], boto: Any, discover: Any, name: str) -> None:
    with Cluster.from_name("ec2", n_workers=2, env={"FOO": "bar"}, **ec2_options) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        assert client.submit(lambda: __import__("os").environ["FOO"]).result() == "bar"
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        calls = cluster.backend.aws.calls
        assert calls["ec2.run_instances"] == 2  # the scheduler, then both workers in one call
        instances = instances_of(boto, name)
        assert len(instances) == 3
        assert Counter(i["State"]["Name"] for i in instances) == {"running": 3}
        tls = cluster.spec.tls
        assert tls is not None
        # moto associates the profile with only the first instance of a multi-count launch.
        profiles = {i["IamInstanceProfile"]["Arn"] for i in instances if "IamInstanceProfile" in i}
        assert profiles == {f"arn:aws:iam::123456789012:instance-profile/dask-deploy/{name}-node"}
        for inst in instances:
            tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
            assert tags["dask-deploy:backend"] == "ec2"
            assert inst["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only
            script = user_data(boto, inst["InstanceId"])
            assert "docker run" in script and "--log-driver awslogs" in script
            assert "--tls-secret arn:aws:secretsmanager:" in script  # a reference, not the secret
            body = "".join(tls.key.strip().splitlines()[1:-1])
            assert "PRIVATE KEY" not in script and body[:40] not in script and body[-40:] not in script
        found = Counter(h.data["kind"] for h in discover("ec2", name))
        assert found == {"instance": 3, "security-group": 1, "secret": 1, "role": 1,
                         "instance-profile": 1}
        assert "Scheduler at" in cluster.get_logs()["Scheduler"]
    assert {i["State"]["Name"] for i in instances_of(boto, name)} == {"terminated"}
    assert discover("ec2", name) == []


def test_ec2_failed_worker(ec2_options: dict[str, Any], discover: Any, name: str) -> None:
    with Cluster.from_name("ec2", scheduler="local", n_workers=1, max_failures=1,
                           worker_options={"no_such_option": 1},
                           **{**ec2_options, "dashboard_address": None}) as cluster:
        with pytest.raises(CrashLoopError):
            cluster.wait_for_workers(1, timeout=120)
        logs = cluster.get_logs()
        assert "instance shut down" in logs["Cluster"]
        assert "no_such_option" in logs[f"{name}-0"]
    assert discover("ec2", name) == []


def test_ec2_gpus_pick_gpu_instances(ec2_options: dict[str, Any], boto: Any, runner: Any,
                                     discover: Any, name: str, wait_until: Any) -> None:
    gpu_ami = boto("ssm").get_parameter(
        Name="/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id")["Parameter"]["Value"]
    # About the launch only: nothing needs to run.
    with runner.holding(), Cluster.from_name("ec2", scheduler="local", gpus=1, n_workers=1,
                                             **{**ec2_options, "dashboard_address": None}) as cluster:
        wait_until(lambda: len(instances_of(boto, name)) == 1, what="the worker instance")
        (inst,) = instances_of(boto, name)
        assert inst["InstanceType"] == "g4dn.xlarge"
        assert inst["ImageId"] == gpu_ami
        assert "--gpus all" in user_data(boto, inst["InstanceId"])
        assert cluster.backend.aws.calls["ec2.run_instances"] == 1
    assert discover("ec2", name) == []


def test_ec2_pools_launch_their_own_instance_types(ec2_options: dict[str, Any], boto: Any,
                                                   runner: Any, discover: Any, name: str,
                                                   wait_until: Any) -> None:
    """Each pool's instances carry its instance type, image and AMI (a GPU pool's the GPU
    one); scaling one pool leaves the others' instances alone. About the launches only:
    nothing needs to run."""
    gpu_ami = boto("ssm").get_parameter(
        Name="/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id")["Parameter"]["Value"]
    pools = {"cpu": {"n_workers": 1},
             "big": {"n_workers": 1, "worker_instance_type": "m5.2xlarge", "image": "other:2"},
             "gpu": {"n_workers": 1, "gpus": 1, "gpu_instance_type": "g5.xlarge"}}

    def live() -> dict[str, str]:
        return {i["InstanceId"]: i["InstanceType"] for i in instances_of(boto, name)
                if i["State"]["Name"] in ("pending", "running")}

    with runner.holding(), Cluster.from_name("ec2", scheduler="local", pools=pools,
                                             **{**ec2_options, "dashboard_address": None}) as cluster:
        wait_until(lambda: len(live()) == 3, what="one instance per pool")
        by_type = {t: i for i, t in live().items()}
        cpu, big, gpu = by_type["t3.xlarge"], by_type["m5.2xlarge"], by_type["g5.xlarge"]
        assert " dask-deploy:test python " in user_data(boto, cpu)
        assert " other:2 python " in user_data(boto, big)
        assert "--gpus all" in user_data(boto, gpu) and "--gpus" not in user_data(boto, big)
        images = {i["InstanceId"]: i["ImageId"] for i in instances_of(boto, name)}
        assert images[gpu] == gpu_ami != images[cpu] == images[big]
        cluster.scale(3, pool="big")
        wait_until(lambda: sorted(live().values()) == ["g5.xlarge", *["m5.2xlarge"] * 3, "t3.xlarge"],
                   what="two more instances of pool big")
        cluster.scale(0, pool="big")
        wait_until(lambda: live() == {cpu: "t3.xlarge", gpu: "g5.xlarge"},
                   what="pool big's instances terminated, the others untouched")
    assert {i["State"]["Name"] for i in instances_of(boto, name)} == {"terminated"}
    assert discover("ec2", name) == []
