"""GPU expansion as a pure function of the spec: rotation, suffixes, splits, detection, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from dask_deploy import ClusterSpec, SpecError, WorkerSpec
from dask_deploy_gpu import expand as extension
from dask_deploy_gpu._expand import PRELOAD
from dask_deploy_gpu.plugin import CUDAOptions, expand_cuda
from dask_deploy_testing.fake_nvml import near_cpu


def spec(backend: str, **worker: Any) -> ClusterSpec:
    return ClusterSpec(backend=backend, name="t", worker=WorkerSpec(**worker))


def run(cluster: ClusterSpec, workers: list[WorkerSpec] | None = None) -> list[WorkerSpec] | None:
    """The expanded draft, or None when the extension left it alone."""
    draft = list(workers or [cluster.worker])
    before = list(draft)
    extension.deploy_expand_resources(cluster=cluster, workers=draft)
    return None if draft == before else draft


def test_no_gpus_leaves_workers_alone() -> None:
    assert run(spec("local", nthreads=2)) is None
    assert run(spec("slurm")) is None


@pytest.mark.parametrize("backend", ["ssh", "slurm", "k8s", "ecs"])
def test_remote_backends_trust_the_requested_count(backend: str) -> None:
    # No NVML on this machine (and no fake): remote units are not checked here.
    out = run(spec(backend, gpus=4, nthreads=8, memory_limit="16GiB", resources={"ssd": 1}))
    assert out is not None
    assert [w.suffix for w in out] == ["-0", "-1", "-2", "-3"]
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in out] == ["0,1,2,3", "1,2,3,0", "2,3,0,1", "3,0,1,2"]
    assert all(w.gpus == 1 and w.nthreads == 2 and w.memory_limit == 4 << 30 for w in out)
    assert all(dict(w.resources) == {"ssd": 1, "GPU": 1} for w in out)
    # No client-side NVML, so no affinity and no preload that may not exist over there.
    assert all("DASK_DEPLOY_CPU_AFFINITY" not in w.env and "preload" not in w.options for w in out)


def test_remote_unit_uses_the_devices_in_its_env_and_keeps_earlier_suffixes() -> None:
    # As a jobqueue-like expansion would leave them: two processes, two GPUs each.
    workers = [WorkerSpec(gpus=2, suffix="-0", env={"CUDA_VISIBLE_DEVICES": "0,1"}),
               WorkerSpec(gpus=2, suffix="-1", env={"CUDA_VISIBLE_DEVICES": "2,3"})]
    out = run(spec("slurm"), workers)
    assert out is not None
    assert [(w.suffix, w.env["CUDA_VISIBLE_DEVICES"]) for w in out] == [
        ("-0-0", "0,1"), ("-0-1", "1,0"), ("-1-0", "2,3"), ("-1-1", "3,2")]
    assert len({w.suffix for w in out}) == 4


def test_expansion_is_idempotent() -> None:
    first = run(spec("ssh", gpus=2))
    assert first is not None
    assert run(spec("ssh"), first) is None


def test_local_unit_is_checked_with_nvml_and_gets_affinity(fake_gpus: Any) -> None:
    fake = fake_gpus(8)
    out = run(spec("local", gpus=8, nthreads=1))
    assert out is not None and len(out) == 8
    for i, w in enumerate(out):
        assert w.env["CUDA_VISIBLE_DEVICES"].split(",")[0] == str(i)
        assert w.env["DASK_DEPLOY_GPU_DEVICE"] == str(i)
        assert w.env["DASK_DEPLOY_CPU_AFFINITY"] == str(near_cpu(i)[0])
        assert w.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert PRELOAD in w.options["preload"]
    assert len(fake["gpus"]) == 8


def test_local_unit_respects_the_process_cuda_visible_devices(fake_gpus: Any, monkeypatch: Any) -> None:
    fake = fake_gpus(4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"3,{fake['gpus'][1]['uuid']}")
    out = run(spec("local", gpus=2, options={"preload": "mymodule"}))
    assert out is not None
    uuid1 = fake["gpus"][1]["uuid"]
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in out] == [f"3,{uuid1}", f"{uuid1},3"]
    assert [w.env["DASK_DEPLOY_CPU_AFFINITY"] for w in out] == [str(near_cpu(3)[0]), str(near_cpu(1)[0])]
    assert out[0].options["preload"] == ["mymodule", PRELOAD]


def test_local_auto_memory_is_the_units_share_split(fake_gpus: Any) -> None:
    from distributed.system import MEMORY_LIMIT

    fake_gpus(4)
    out = run(spec("local", gpus=4, nthreads=len(os.sched_getaffinity(0))))
    assert out is not None
    total = sum(w.memory_limit for w in out)  # type: ignore[misc]
    assert 0 < total <= MEMORY_LIMIT


def test_clear_error_when_nvml_finds_no_gpus(fake_gpus: Any) -> None:
    fake_gpus(0)
    with pytest.raises(SpecError) as info:
        run(spec("local", gpus=2))
    msg = str(info.value)
    assert "gpus=2" in msg and "NVML" in msg and "0,1" in msg and "found 0 GPU" in msg


def test_clear_error_when_there_is_no_driver(fake_gpus: Any) -> None:
    fake_gpus(spec={"gpus": [], "missing_library": True})
    with pytest.raises(SpecError, match=r"(?s)looked for devices 0 .*libnvidia-ml.*Library Not Found"):
        run(spec("cuda", gpus=1))


def test_clear_error_for_a_device_that_is_not_there(fake_gpus: Any, monkeypatch: Any) -> None:
    fake_gpus(2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,5")
    with pytest.raises(SpecError, match=r"no device matches '5'.*found 2 GPU"):
        run(spec("local", gpus=2))


def test_more_gpus_than_visible_devices_is_refused() -> None:
    with pytest.raises(SpecError, match=r"only 1 device\(s\) are visible .*'7'"):
        run(spec("ssh", gpus=2, env={"CUDA_VISIBLE_DEVICES": "7"}))


# -- the cuda backend's own expansion ----------------------------------------------------


def test_cuda_names_workers_after_devices_and_mig_instances(fake_gpus: Any) -> None:
    fake = fake_gpus(2, mig={1: 3})
    cluster = ClusterSpec(backend="cuda", name="t", worker=WorkerSpec(memory_limit="auto"), n_workers=4,
                          backend_options=CUDAOptions())
    out = expand_cuda(cluster, [cluster.worker], cluster.backend_options)
    migs = [m["uuid"] for m in fake["gpus"][1]["mig"]]
    assert [w.suffix for w in out] == ["-0", *(f"-{u}" for u in migs)]
    assert out[1].env["CUDA_VISIBLE_DEVICES"] == ",".join([*migs, "0"])
    # A MIG instance is pinned near its parent GPU; its memory limit is its own memory's share.
    assert out[1].env["DASK_DEPLOY_CPU_AFFINITY"] == str(near_cpu(1)[0])
    mig_memory = fake["gpus"][1]["mig"][0]["memory"]
    assert int(out[1].env["DASK_DEPLOY_DEVICE_MEMORY_LIMIT"]) == int(0.8 * mig_memory)
    assert int(out[0].env["DASK_DEPLOY_DEVICE_MEMORY_LIMIT"]) == int(0.8 * fake["gpus"][0]["memory"])
    assert len({w.memory_limit for w in out}) == 1 and all(w.nthreads == 1 for w in out)


def test_cuda_n_workers_beyond_the_devices_is_refused(fake_gpus: Any) -> None:
    fake_gpus(2)
    cluster = ClusterSpec(backend="cuda", name="t", n_workers=3, backend_options=CUDAOptions())
    with pytest.raises(SpecError, match=r"n_workers=3.*2 are visible"):
        expand_cuda(cluster, [cluster.worker], cluster.backend_options)


@pytest.mark.parametrize(("value", "expected"), [
    ("0,2", ("0", "2")), (1, ("1",)), ([0, "MIG-x"], ("0", "MIG-x")), (None, None)])
def test_cuda_visible_devices_option_forms(value: Any, expected: Any) -> None:
    assert CUDAOptions(CUDA_VISIBLE_DEVICES=value).devices == expected


@pytest.mark.parametrize("value", ["", [], [-1], True, {"a": 1}, [0.5]])
def test_cuda_visible_devices_option_rejects(value: Any) -> None:
    with pytest.raises(SpecError, match="CUDA_VISIBLE_DEVICES"):
        CUDAOptions(CUDA_VISIBLE_DEVICES=value)


@pytest.mark.parametrize(("value", "expected"), [
    (0.5, 50), ("auto", 100), (None, None), (0, None), (1000, 1000), ("1kB", 1000)])
def test_device_memory_limit_forms(value: Any, expected: Any) -> None:
    assert CUDAOptions(device_memory_limit=value).device_memory(100) == expected


@pytest.mark.parametrize("value", [-1, "lots", True, [1]])
def test_device_memory_limit_rejects(value: Any) -> None:
    with pytest.raises(SpecError, match="device_memory_limit"):
        CUDAOptions(device_memory_limit=value)


def test_unknown_interface_is_refused() -> None:
    with pytest.raises(SpecError, match=r"interface='no-such-if0'.*lo"):
        CUDAOptions(interface="no-such-if0")


def test_extension_module_is_light() -> None:
    # It is loaded into every cluster: no NVML layer, no cuda backend, no fake at import.
    code = ("import sys, dask_deploy; before = set(sys.modules); import dask_deploy_gpu.expand; "
            "print(sorted(m for m in set(sys.modules) - before if 'dask_deploy' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["dask_deploy_gpu", "dask_deploy_gpu._expand", "dask_deploy_gpu.affinity",
                         "dask_deploy_gpu.expand"]


def test_entry_points_are_registered() -> None:
    from dask_deploy import get_plugin_manager, installed_backends
    from dask_deploy._plugins import EXTENSION_GROUP, _entry_points

    assert installed_backends()["cuda"].extra == "gpu"
    assert _entry_points(EXTENSION_GROUP)["gpu"].load() is extension
    assert get_plugin_manager().get_plugin("gpu") is extension


def test_cuda_refuses_gpus_above_one_with_the_gpu_extension_loaded(fake_gpus: Any) -> None:
    # The cuda backend's expansion is tryfirst, so it runs before the gpu extension (which
    # would otherwise split gpus=2 into two workers first and hide this error).
    from dask_deploy import SpecCluster
    from dask_deploy._plugins import cluster_plugin_manager

    fake_gpus(2)
    cluster = ClusterSpec(backend="cuda", name="t-cuda2", worker=WorkerSpec(gpus=2),
                          backend_options=CUDAOptions())
    c = SpecCluster.__new__(SpecCluster)
    c._hook = cluster_plugin_manager(cluster, extensions={"gpu": extension})[0].hook
    with pytest.raises(SpecError, match="one GPU"):
        c._expand(cluster)
