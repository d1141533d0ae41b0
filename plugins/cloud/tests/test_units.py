"""Pure parts, no emulator: options, state mapping, address mapping, backend registration."""

from __future__ import annotations

import pytest
from dask_deploy import Phase, SpecError
from dask_deploy._plugins import backend_capabilities, backend_info, installed_backends
from dask_deploy_cloud import EC2Options, ECSOptions
from dask_deploy_cloud._base import STOP_REASON
from dask_deploy_cloud._ec2 import instance_status
from dask_deploy_cloud._ecs import task_status
from dask_deploy_testing.cloud import to_loopback
from hypothesis import given, settings
from hypothesis import strategies as st


def test_backends_registered_lazily() -> None:
    infos = installed_backends()
    assert {"ecs", "fargate", "ec2"} <= set(infos)
    for name in ("ecs", "fargate", "ec2"):
        info = backend_info(name)
        assert info.extra == "cloud"
        assert info.defaults["security"] is True and info.defaults["scheduler"] == "remote"
        assert {"scale", "logs_after_death"} <= info.capabilities
        # derived from the hooks the backend implements, not declared
        assert "remote_scheduler" in backend_capabilities(name)


def test_default_ports_only_for_a_remote_scheduler() -> None:
    defaults = backend_info("fargate").defaults
    assert defaults["scheduler_port"]({"scheduler": "remote"}) == 8786
    assert defaults["dashboard_address"]({"scheduler": "remote"}) == ":8787"
    # In this process the core's loopback defaults stay.
    assert defaults["scheduler_port"]({"scheduler": "local"}) == 0
    assert defaults["dashboard_address"]({"scheduler": "local"}) == "127.0.0.1:0"
    assert defaults["threads_per_worker"]({"worker_cpu": 2048}) == 2
    # A remote scheduler ends itself when idle (a dead client leaves nothing running forever).
    assert defaults["idle_timeout"]({"scheduler": "remote"}) == 1200
    assert defaults["idle_timeout"]({"scheduler": "local"}) is None


async def test_idle_timeout_default_is_overridable() -> None:
    from dask_deploy._cluster import from_name

    def idle(**extra: object) -> object:
        cluster = from_name("fargate", image="x", asynchronous=True, **extra)  # not started
        cluster.status = cluster.status.closed  # nothing to close
        return cluster.spec.scheduler.idle_timeout

    assert idle() == 1200
    assert idle(idle_timeout=None) is None
    assert idle(idle_timeout=30) == 30
    assert idle(scheduler="local") is None


@pytest.mark.parametrize(("option", "value"), [
    ("client_cidrs", ["not-a-cidr"]),
    ("client_cidrs", "10.0.0.0/8"),  # a string, not a list
    ("tags", {"dask-deploy:cluster": "x"}),  # reserved
    ("tags", {"a": 1}),
    ("resolve_address", "no_such_module:f"),
    ("resolve_address", "dask_deploy_testing.cloud"),  # not module:function
    ("subnets", "subnet-1"),
    ("worker_cpu", 0),
    ("stop_timeout", 500),
    ("use_private_ip", "yes"),
])
def test_bad_ecs_options_name_the_option(option: str, value: object) -> None:
    with pytest.raises(SpecError) as err:
        ECSOptions(**{option: value})
    assert err.value.option == option


def test_options_normalise_to_plain_values() -> None:
    opts = ECSOptions(subnets=["subnet-1"], client_cidrs=["0.0.0.0/0"], tags={"team": "x"},
                      resolve_address="dask_deploy_testing.cloud:loopback")
    assert opts.subnets == ("subnet-1",)
    assert opts.client_cidrs == ("0.0.0.0/0",)  # allowed when asked for explicitly
    assert opts.resolver("10.1.2.3") == "127.0.0.1"
    assert ECSOptions().resolver("10.1.2.3") == "10.1.2.3"
    with pytest.raises(SpecError):
        EC2Options(filesystem_size=1)


def test_task_status() -> None:
    assert task_status({"lastStatus": "PROVISIONING"}).phase == Phase.PENDING
    assert task_status({"lastStatus": "RUNNING"}).phase == Phase.RUNNING
    assert task_status({"lastStatus": "STOPPING"}).phase == Phase.RUNNING
    stopped = {"lastStatus": "STOPPED", "stopCode": "UserInitiated", "stoppedReason": STOP_REASON}
    assert task_status(stopped).phase == Phase.GONE
    done = {"lastStatus": "STOPPED", "stopCode": "EssentialContainerExited",
            "containers": [{"name": "dask", "exitCode": 0}]}
    assert task_status(done).phase == Phase.GONE
    failed = task_status({"lastStatus": "STOPPED", "stopCode": "TaskFailedToStart",
                          "stoppedReason": "CannotPullContainerError: no such image",
                          "containers": [{"name": "dask", "reason": "pull failed"}]})
    assert failed.phase == Phase.FAILED
    assert "TaskFailedToStart" in failed.reason and "CannotPullContainerError" in failed.reason
    crashed = task_status({"lastStatus": "STOPPED", "stopCode": "EssentialContainerExited",
                           "containers": [{"name": "dask", "exitCode": 137, "reason": "OutOfMemoryError"}]})
    assert crashed.phase == Phase.FAILED and "137" in crashed.reason and "OutOfMemory" in crashed.reason


def test_instance_status() -> None:
    def inst(state: str, code: str = "", message: str = "") -> dict[str, object]:
        return {"State": {"Name": state}, "StateReason": {"Code": code, "Message": message}}

    assert instance_status(inst("pending")).phase == Phase.PENDING
    assert instance_status(inst("running")).phase == Phase.RUNNING
    ours = "Client.UserInitiatedShutdown"
    assert instance_status(inst("shutting-down", ours)).phase == Phase.RUNNING  # not gone yet
    assert instance_status(inst("terminated", ours)).phase == Phase.GONE
    spot = instance_status(inst("terminated", "Server.SpotInstanceTermination", "spot reclaimed"))
    assert spot.phase == Phase.FAILED and "spot reclaimed" in spot.reason
    exited = instance_status(inst("terminated", "Client.InstanceInitiatedShutdown", "shutdown"))
    assert exited.phase == Phase.FAILED and "container ended" in exited.reason


def test_to_loopback_rewrites_every_emulator_address() -> None:
    assert to_loopback("tls://10.194.2.3:8786") == "tls://127.0.0.1:8786"
    assert to_loopback("--host 0.0.0.0") == "--host 127.0.0.1"
    assert to_loopback("172.31.0.4 54.214.94.85") == "127.0.0.1 127.0.0.1"
    assert to_loopback("127.0.0.5 v1.2.3.4.5") == "127.0.0.5 v1.2.3.4.5"


@pytest.mark.parametrize(("backend", "pool", "option"), [
    ("ecs", {"scheduler_cpu": 2048}, "scheduler_cpu"), ("ecs", {"fargate_spot": True}, "fargate_spot"),
    ("fargate", {"cluster_arn": "c"}, "cluster_arn"), ("ec2", {"key_name": "k"}, "key_name"),
    ("ec2", {"scheduler_instance_type": "m5.large"}, "scheduler_instance_type"),
])
def test_what_a_pool_may_not_set_is_refused(backend: str, pool: dict[str, object],
                                            option: str) -> None:
    """Options that are the cluster's (its scheduler, network, ECS cluster) are refused per
    pool in one line naming the option and the fix."""
    from dask_deploy._options import build_spec

    with pytest.raises(SpecError, match=rf"pools\['b'\].{option}=.*set it for the whole cluster"):
        build_spec(backend, {"name": "p", "region_name": "us-east-1", "image": "img:1",
                             "pools": {"a": {}, "b": pool}})


def test_pool_options_are_checked_and_fargate_pools_have_no_gpus() -> None:
    from dask_deploy._options import build_spec
    from dask_deploy_cloud._ecs import FargateBackend

    with pytest.raises(SpecError, match=r"pools\['b'\].worker_cpu=64.*>= 128"):
        build_spec("fargate", {"name": "p", "pools": {"a": {}, "b": {"worker_cpu": 64}}})
    spec, _ = build_spec("fargate", {"name": "p", "region_name": "us-east-1", "image": "img:1",
                                     "pools": {"a": {}, "b": {"gpus": 1}}})
    with pytest.raises(SpecError, match=r"pools\['b'\].gpus=1.*Fargate has no GPUs"):
        FargateBackend(spec)


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from(["worker_instance_type", "gpu_instance_type", "ami",
                               "filesystem_size", "image"]),
       value=st.one_of(st.text(max_size=12), st.integers(-2, 64), st.none(), st.booleans(),
                       st.lists(st.text(max_size=4), max_size=2)))
def test_hostile_pool_options_are_refused_or_stay_one_word(option: str, value: object) -> None:
    """A pool's value is refused in one line naming the pool's option, or reaches only that
    pool's launches; an image stays one word of its boot script, whatever it holds."""
    import shlex

    from dask_deploy._options import build_spec
    from dask_deploy_cloud._ec2 import EC2Backend

    try:
        spec, _ = build_spec("ec2", {"name": "p", "region_name": "us-east-1", "image": "img:1",
                                     "pools": {"a": {}, "b": {option: value}}})
        backend = EC2Backend(spec)
    except SpecError as e:
        # (the core names a pool's generic option, image, like the cluster's)
        assert str(e).startswith((f"invalid pools['b'].{option}", "invalid image=")), e
        assert "\n" not in str(e), e
        return
    if option == "image":
        (b,) = [p for p in spec.pools if p.name == "b"]
        script = backend.user_data("worker", ["python", "-m", "x"], "b")
        if b.worker.image:
            assert shlex.quote(b.worker.image) + " python -m x" in script.split("\n")[-3]
    else:
        assert getattr(spec.options_of("b"), option) == value
        assert getattr(spec.options_of("a"), option) == getattr(spec.backend_options, option)


def test_a_pool_s_own_worker_cpu_sets_its_threads() -> None:
    """One thread per vCPU of the pool's own task, unless threads_per_worker is given."""
    from dask_deploy._options import build_spec

    def threads(**options: object) -> dict[str, int]:
        spec, _ = build_spec("fargate", {"name": "p", **options})
        return {p.name: p.worker.nthreads for p in spec.pools}

    pools = {"a": {}, "b": {"worker_cpu": 8192}, "c": {"worker_cpu": 8192, "threads_per_worker": 3}}
    assert threads(pools=pools) == {"a": 4, "b": 8, "c": 3}
    assert threads(pools=pools, worker_cpu=1024) == {"a": 1, "b": 8, "c": 3}
    assert threads(pools=pools, threads_per_worker=2) == {"a": 2, "b": 2, "c": 3}


def test_a_batch_holds_the_units_of_one_pool() -> None:
    """A batch starts every unit with its first unit's workers: pools never share one."""
    from dask_deploy import Unit, WorkerSpec
    from dask_deploy._options import build_spec
    from dask_deploy_cloud._ecs import ECSBackend

    spec, _ = build_spec("ecs", {"name": "p", "region_name": "us-east-1",
                                 "pools": {"a": {}, "b": {"resources": {"B": 1}}}})
    backend = ECSBackend(spec)
    a, b = (WorkerSpec(), ), (WorkerSpec(resources={"B": 1}), )
    units = [Unit("p-a-0", a, "a"), Unit("p-b-1", b, "b"), Unit("p-a-2", a, "a")]
    assert [[u.name for u in batch] for batch in backend._batches(units)] == \
        [["p-a-0", "p-a-2"], ["p-b-1"]]
