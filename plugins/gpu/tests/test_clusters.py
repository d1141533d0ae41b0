"""Real clusters (forked worker processes) on fake GPUs: what each worker sees, checked inside it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from dask_deploy import Cluster, SpecError
from dask_deploy_testing.fake_nvml import near_cpu
from distributed import Client

TIMEOUT = 120  # generous: other test runs share these cores


def make_probe() -> Callable[..., dict[str, Any]]:
    """A function for ``client.run``: what one worker sees (defined here so it pickles by value)."""

    def probe(dask_worker: Any = None) -> dict[str, Any]:
        import os

        from dask_deploy_gpu._nvml import nvml

        lib = nvml()  # the fake, from the environment this worker inherited
        lib.nvmlInit()
        try:
            first = os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0]
            h = (lib.nvmlDeviceGetHandleByIndex(int(first)) if first.isdigit()
                 else lib.nvmlDeviceGetHandleByUUID(first))
            uuid = lib.nvmlDeviceGetUUID(h)
        finally:
            lib.nvmlShutdown()
        threads = {int(t): sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
        return {"name": dask_worker.name, "uuid": uuid, "env": dict(os.environ),
                "affinity": sorted(os.sched_getaffinity(0)), "threads": threads}

    return probe


def on_each(client: Client) -> dict[str, dict[str, Any]]:
    """The probe's answer of every worker, by worker name."""
    return {r["name"]: r for r in client.run(make_probe()).values()}


def task_affinity(client: Client, name: str) -> list[int]:
    """The affinity of a task thread (created after the preload ran) on worker ``name``."""
    return client.submit(lambda: sorted(os.sched_getaffinity(0)), workers=[name], pure=False,
                         resources={"GPU": 1}).result(TIMEOUT)


def test_local_unit_with_four_gpus_becomes_four_pinned_workers(fake_gpus: Any, no_leaked_processes: None
                                                                ) -> None:
    fake = fake_gpus(4)
    with Cluster.from_name("local", n_workers=1, gpus=4, threads_per_worker=2, name="g-local") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(4, timeout=TIMEOUT)
        seen = on_each(client)
        assert sorted(seen) == [f"g-local-0-{i}" for i in range(4)]
        for i in range(4):
            w = seen[f"g-local-0-{i}"]
            ids = [str((i + k) % 4) for k in range(4)]
            assert w["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(ids)
            assert w["uuid"] == fake["gpus"][i]["uuid"]  # its first device is its own GPU
            assert w["affinity"] == near_cpu(i)
            assert all(cpus == near_cpu(i) for cpus in w["threads"].values()), w["threads"]
            assert task_affinity(client, f"g-local-0-{i}") == near_cpu(i)
        info = client.scheduler_info()["workers"].values()
        assert all(w["resources"] == {"GPU": 1} and w["nthreads"] == 1 for w in info)


def test_cuda_backend_runs_one_worker_per_gpu_named_after_it(fake_gpus: Any, no_leaked_processes: None
                                                             ) -> None:
    from distributed.system import MEMORY_LIMIT

    fake = fake_gpus(8)
    with Cluster.from_name("cuda", name="g-cuda8") as cluster, Client(cluster) as client:
        client.wait_for_workers(8, timeout=TIMEOUT)
        seen = on_each(client)
        assert sorted(seen) == [f"g-cuda8-0-{i}" for i in range(8)]
        for i in range(8):
            w = seen[f"g-cuda8-0-{i}"]
            assert w["env"]["CUDA_VISIBLE_DEVICES"].split(",") == [str((i + k) % 8) for k in range(8)]
            assert w["uuid"] == fake["gpus"][i]["uuid"]
            assert w["affinity"] == near_cpu(i)
            assert int(w["env"]["DASK_DEPLOY_DEVICE_MEMORY_LIMIT"]) == int(0.8 * fake["gpus"][i]["memory"])
        info = list(client.scheduler_info()["workers"].values())
        assert all(w["nthreads"] == 1 and w["resources"] == {"GPU": 1} for w in info)
        assert all(w["memory_limit"] == MEMORY_LIMIT // 8 for w in info)


def test_cuda_backend_on_mig_instances_scales_by_whole_units(fake_gpus: Any, no_leaked_processes: None,
                                                             ) -> None:
    fake = fake_gpus(2, mig={1: 3})
    migs = [m["uuid"] for m in fake["gpus"][1]["mig"]][:2]
    with Cluster.from_name("cuda", CUDA_VISIBLE_DEVICES=",".join(migs), name="g-mig") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=TIMEOUT)
        seen = on_each(client)
        assert sorted(seen) == sorted(f"g-mig-0-{u}" for u in migs)
        for i, uuid in enumerate(migs):
            w = seen[f"g-mig-0-{uuid}"]
            assert w["env"]["CUDA_VISIBLE_DEVICES"] == ",".join([*migs[i:], *migs[:i]])
            assert w["uuid"] == uuid
            assert w["affinity"] == near_cpu(1)  # the parent GPU's CPUs
        # Visible to scaling (and so to Adaptive): down to nothing, back up as a new unit.
        cluster.scale(0)
        _wait(lambda: not client.scheduler_info()["workers"], "workers to leave")
        cluster.scale(2)
        client.wait_for_workers(2, timeout=TIMEOUT)
        assert sorted(on_each(client)) == sorted(f"g-mig-1-{u}" for u in migs)


def _wait(cond: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {TIMEOUT}s waiting for {what}"
        time.sleep(0.05)


def test_affinity_that_cannot_be_set_warns_and_the_worker_still_runs(fake_gpus: Any, monkeypatch: Any,
                                                                     no_leaked_processes: None) -> None:
    # Also: the cuda backend expands by itself, without the gpu extension.
    monkeypatch.setenv("DASK_DEPLOY_DISABLE_PLUGINS", "gpu")
    allowed = sorted(os.sched_getaffinity(0))
    words = ((os.cpu_count() or 1) + 63) // 64
    outside = [c for c in range(64 * words) if c not in allowed]
    if not outside:
        pytest.skip("every CPU NVML can report is usable here")
    fake = fake_gpus(1, cpus=lambda i: outside[:1])
    with Cluster.from_name("cuda", name="g-noaff") as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=TIMEOUT)
        (w,) = on_each(client).values()
        assert w["uuid"] == fake["gpus"][0]["uuid"]
        assert w["affinity"] == allowed  # left alone
        log = cluster.get_logs(cluster=False, scheduler=False)["g-noaff-0"]
        assert "none of the CPUs nearest this worker's GPU" in log


@pytest.mark.parametrize("backend", ["local", "cuda"])
def test_no_gpus_is_a_clear_error_and_leaves_nothing(backend: str, fake_gpus: Any,
                                                     no_leaked_processes: None) -> None:
    fake_gpus(0)
    options = {"gpus": 2, "n_workers": 1} if backend == "local" else {}
    with pytest.raises(SpecError, match=r"not found: looked for .*NVML.*found none|found 0 GPU"):
        Cluster.from_name(backend, name=f"g-none-{backend}", **options)


def test_composes_with_the_fake_backend(no_leaked_processes: None) -> None:
    # In-process workers of the conformance suite's fake backend: the count is trusted (no
    # NVML here), each unit of 3 GPUs yields 3 workers with rotated CUDA_VISIBLE_DEVICES.
    with Cluster.from_name("fake", n_workers=6, gpus=3, name="g-fake") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(6, timeout=TIMEOUT)
        names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
        assert names == sorted(f"g-fake-{u}-{i}" for u in range(2) for i in range(3))
        assert all(w["resources"] == {"GPU": 1} for w in client.scheduler_info()["workers"].values())
        envs = [w.env["CUDA_VISIBLE_DEVICES"] for unit in cluster.units.values() for w in unit.workers]
        assert envs == ["0,1,2", "1,2,0", "2,0,1"] * 2


def test_a_cpu_pool_and_a_gpu_pool(fake_gpus: Any, no_leaked_processes: None) -> None:
    """~6 s: the GPU pool's units become one worker per GPU with the GPU resource, the CPU
    pool's workers get none, and a task that needs a GPU makes the GPU pool adapt up."""
    fake = fake_gpus(2)
    pools = {"cpu": {}, "gpu": {"gpus": 2, "maximum": 2}}  # workers: one unit
    with Cluster.from_name("local", n_workers=1, pools=pools, name="g-pools") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(1, timeout=TIMEOUT)
        cluster.adapt(pool="gpu")  # its own bounds: 0 to 2 workers
        device = client.submit(lambda: os.environ["CUDA_VISIBLE_DEVICES"], pure=False,
                               resources={"GPU": 1}).result(TIMEOUT)
        assert device.split(",")[0] in ("0", "1")
        info = {w["name"]: w for w in client.scheduler_info()["workers"].values()}
        assert sorted(info) == ["g-pools-cpu-0", "g-pools-gpu-1-0", "g-pools-gpu-1-1"]
        assert info["g-pools-cpu-0"]["resources"] == {}
        assert all(info[f"g-pools-gpu-1-{i}"]["resources"] == {"GPU": 1} for i in (0, 1))
        env = {r["name"]: r["env"] for r in client.run(
            lambda dask_worker: {"name": dask_worker.name, "env": dict(os.environ)}).values()}
        assert "CUDA_VISIBLE_DEVICES" not in env["g-pools-cpu-0"]
        uuids = {fake["gpus"][i]["uuid"] for i in (0, 1)}
        seen = on_each_gpu_worker(client, ["g-pools-gpu-1-0", "g-pools-gpu-1-1"])
        assert {w["uuid"] for w in seen} == uuids  # one GPU each, none twice


def on_each_gpu_worker(client: Client, names: list[str]) -> list[dict[str, Any]]:
    return list(client.run(make_probe(), workers=[
        a for a, w in client.scheduler_info()["workers"].items() if w["name"] in names]).values())
