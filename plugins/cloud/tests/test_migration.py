"""dask-cloudprovider's documented ``FargateCluster`` / ``ECSCluster`` / ``EC2Cluster``
examples, with only the class name changed: the spec they give (and, for two of them, the
task definition registered with moto over HTTP); refused ones say why in one line."""

from __future__ import annotations

import textwrap
import warnings
from typing import Any

import dask.config
import pytest
import yaml
from dask_deploy import Cluster, SpecError
from dask_deploy._options import build_spec

ARN = "arn:aws:ecs:us-east-1:123456789012:cluster/mycluster"

#: (origin, code, expected facts or the refusal's words). Code as dask-cloudprovider's docs.
EXAMPLES: list[tuple[str, str, dict[str, Any] | str]] = [
    # doc/source/aws.rst, "Fargate/ECS": a cluster of its own
    ("aws.rst FargateCluster()", "FargateCluster()", {"backend": "fargate"}),
    # aws.rst: an existing ECS cluster of EC2 container instances
    ("aws.rst ECSCluster", f'ECSCluster(cluster_arn="{ARN}")', {"cluster_arn": ARN}),
    # aws.rst "GPU Support"
    ("aws.rst ECSCluster GPU", f'ECSCluster(cluster_arn="{ARN}", worker_gpu=1)',
     {"gpus": 1}),
    # aws.rst FargateCluster with sizes, image, environment and idle timeout
    ("aws.rst FargateCluster sized",
     'FargateCluster(image="daskdev/dask:latest", n_workers=2, worker_cpu=1024, '
     'worker_mem=4096, scheduler_timeout="15 minutes", '
     'environment={"EXTRA_PIP_PACKAGES": "s3fs"})',
     {"image": "daskdev/dask:latest", "n_workers": 2, "worker_cpu": 1024,
      "worker_mem": 4096, "idle_timeout": 900.0, "env": {"EXTRA_PIP_PACKAGES": "s3fs"}}),
    # aws.rst: Fargate Spot and private addresses
    ("aws.rst FargateCluster spot", "FargateCluster(fargate_spot=True, "
                                    "fargate_use_private_ip=True, worker_nthreads=2)",
     {"fargate_spot": True, "use_private_ip": True, "nthreads": 2}),
    # aws.rst: IAM policies for the tasks (needs a role of one's own here)
    ("aws.rst task_role_policies", 'FargateCluster(task_role_policies=['
                                   '"arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"])',
     "task_role_arn"),
    # aws.rst: EFS volumes
    ("aws.rst volumes", 'FargateCluster(mount_points=[{"sourceVolume": "efs", '
                        '"containerPath": "/data"}], volumes=[{"name": "efs"}])',
     "volumes are not supported"),
    # aws.rst "EC2": environment for the image
    ("aws.rst EC2Cluster env", 'EC2Cluster(env_vars={"EXTRA_PIP_PACKAGES": "s3fs"})',
     {"env": {"EXTRA_PIP_PACKAGES": "s3fs"}}),
    # aws.rst EC2 networking and access
    ("aws.rst EC2Cluster network",
     'EC2Cluster(region="us-east-1", subnet_id="subnet-0123", security_groups=["sg-0123"], '
     'key_name="mykey", instance_type="t3.large", n_workers=2)',
     {"region_name": "us-east-1", "subnets": ("subnet-0123",), "key_name": "mykey",
      "worker_instance_type": "t3.large", "scheduler_instance_type": "t3.large",
      "n_workers": 2}),
    # aws.rst RAPIDS on EC2: dask-cuda's worker class (GPU workers are gpus= here)
    ("aws.rst EC2Cluster RAPIDS",
     'EC2Cluster(instance_type="g4dn.xlarge", docker_image="rapidsai/rapidsai:latest", '
     'worker_class="dask_cuda.CUDAWorker", bootstrap=False, filesystem_size=120)', "gpus="),
    # aws.rst EC2 with a given AMI and instance profile
    ("aws.rst EC2Cluster ami", 'EC2Cluster(ami="ami-0123", docker_image="daskdev/dask:latest", '
                               'iam_instance_profile={"Name": "dask"}, filesystem_size=60)',
     {"ami": "ami-0123", "image": "daskdev/dask:latest", "iam_instance_profile": "dask",
      "filesystem_size": 60}),
    # credentials in code: refused (they would be written into the cluster record)
    ("aws.rst credentials", 'EC2Cluster(aws_access_key_id="AKIA", aws_secret_access_key="x")',
     "configuration chain"),
]

CLASSES = {"FargateCluster": "fargate", "ECSCluster": "ecs", "EC2Cluster": "ec2"}


def _build(code: str) -> Any:
    cls = code.split("(", 1)[0]

    def build(**options: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return build_spec(CLASSES[cls], options)[0]

    return eval(code.replace(f"{cls}(", "build(", 1), {"build": build})


def _facts(spec: Any) -> dict[str, Any]:
    o = spec.backend_options
    facts = {k: getattr(o, k) for k in o.__dataclass_fields__}
    facts.update(backend=spec.backend, gpus=spec.worker.gpus, image=spec.worker.image,
                 n_workers=spec.n_workers, idle_timeout=spec.scheduler.idle_timeout,
                 env=dict(spec.worker.env), nthreads=spec.worker.nthreads)
    return facts


@pytest.mark.parametrize("origin,code,expected", EXAMPLES, ids=[o for o, _, _ in EXAMPLES])
def test_cloudprovider_example(origin: str, code: str, expected: dict[str, Any] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(SpecError, match=expected) as e:
            _build(code)
        assert "\n" not in str(e.value)
        return
    facts = _facts(_build(code))
    for key, value in expected.items():
        assert facts[key] == value, (key, facts[key], origin)


def test_cloudprovider_yaml_is_read_when_deploy_section_is_absent() -> None:
    # doc/source/config.rst (cloudprovider.yaml, its ecs section as shipped, values changed)
    config = yaml.safe_load(textwrap.dedent("""
        cloudprovider:
          ecs:
            fargate_scheduler: false
            fargate_spot: false
            fargate_workers: false
            fargate_use_private_ip: true
            scheduler_cpu: 1024
            scheduler_mem: 4096
            worker_cpu: 2048
            worker_mem: 8192
            worker_gpu: 0
            n_workers: 0
            scheduler_timeout: "5 minutes"
            image: "daskdev/dask:latest"
            cpu_architecture: "X86_64"
            cluster_name_template: "dask-{uuid}"
            cloudwatch_logs_default_retention: 30
            tags: {}
            skip_cleanup: false
        """))
    with dask.config.set(config), dask.config.set({"deploy.fargate": {}}), \
            warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the shipped defaults warn about nothing
        spec, _ = build_spec("fargate", {})
    facts = _facts(spec)
    assert (facts["worker_cpu"], facts["worker_mem"], facts["use_private_ip"]) == (2048, 8192, True)
    # The anchor's shipped default image is nobody's choice: ours (a pinned version) stays.
    assert facts["image"] != "daskdev/dask:latest"


def test_fargate_example_registers_the_task_definition_it_asks_for(
        options: dict[str, Any], runner: Any, boto: Any, discover: Any, name: str) -> None:
    """aws.rst's sized FargateCluster, against moto: the worker task definition has the
    example's CPU, memory, image and environment."""
    code = ('FargateCluster(image="daskdev/dask:latest", n_workers=0, worker_cpu=1024, '
            'worker_mem=4096, scheduler_timeout="15 minutes", '
            'environment={"EXTRA_PIP_PACKAGES": "s3fs"})')
    test_only = {k: v for k, v in options.items()
                 if k not in ("worker_cpu", "worker_mem", "image")}

    def from_name(**example: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return Cluster.from_name("fargate", scheduler="local", **{
                **test_only, "dashboard_address": None, **example})

    with runner.holding(), eval(code.replace("FargateCluster(", "from_name(", 1),
                                {"from_name": from_name}) as cluster:
        arn = cluster.backend.task_definitions["worker"]
        td = boto("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
        (container,) = td["containerDefinitions"]
        assert (td["cpu"], td["memory"]) == ("1024", "4096")
        assert container["image"] == "daskdev/dask:latest"
        assert {"name": "EXTRA_PIP_PACKAGES", "value": "s3fs"} in container["environment"]
    assert discover("fargate", name) == []
