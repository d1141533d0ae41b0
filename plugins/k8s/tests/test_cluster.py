"""The k8s backend end to end: real kubernetes-asyncio over HTTPS against the emulator.

Each test names its cluster, so tests sharing the session's emulator never see each other's
objects; every test checks that nothing labelled with its cluster is left.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import dask
import pytest
from dask_deploy import Cluster, ClusterSpec, CrashLoopError, Phase, SchedulerLost
from dask_deploy_k8s import K8sOptions
from dask_deploy_k8s._backend import K8sBackend
from dask_deploy_testing.k8s import Emulator
from distributed import Client

pytestmark = pytest.mark.timeout(240)

Objects = Callable[..., dict[str, list[dict[str, Any]]]]


def selector(name: str) -> str:
    return f"dask-deploy/cluster={name}"


def names(items: list[dict[str, Any]]) -> list[str]:
    return sorted(i["metadata"]["name"] for i in items)


def nothing_left(objects: Objects, name: str) -> bool:
    return not any(objects(selector(name)).values())


def test_lifecycle_tls_ownership_logs_and_dashboard(emulator: Emulator, objects: Objects,
                                                    wait_until: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    name = "life"
    with Cluster.from_name("k8s", **emulator.backend_options(name=name, n_workers=2)) as cluster:
        # TLS by default: the client reaches the scheduler pod through a port-forward
        assert cluster.spec.tls is not None
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            assert client.submit(lambda x: x + 1, 1).result() == 2
            workers = client.scheduler_info()["workers"].values()
            assert sorted(w["name"] for w in workers) == ["life-0", "life-1"]
            assert all(w["host"].startswith("127.") for w in workers)  # each pod's own address

        objs = objects(selector(name))
        (secret,) = objs["secrets"]
        assert base64.b64decode(secret["data"]["tls.crt"]).decode() == cluster.spec.tls.cert
        (service,) = objs["services"]
        roles = sorted(p["metadata"]["labels"]["dask-deploy/role"] for p in objs["pods"])
        assert roles == ["scheduler", "worker", "worker"]
        # one parent: every other object is owned by the cluster's Secret
        for obj in [service, *objs["pods"]]:
            (ref,) = obj["metadata"]["ownerReferences"]
            assert ref["uid"] == secret["metadata"]["uid"] and ref["kind"] == "Secret"
        for pod in objs["pods"]:
            text = json.dumps(pod["spec"])
            assert "BEGIN" not in text and cluster.spec.tls.key.strip().splitlines()[1] not in text
            assert pod["spec"]["volumes"][0]["secret"]["secretName"] == name
            assert not pod["spec"]["automountServiceAccountToken"]
            if pod["metadata"]["labels"]["dask-deploy/role"] == "worker":  # workers use the Service
                assert f"tls://{service['spec']['clusterIP']}:8786" in text

        logs = cluster.get_logs()
        assert "Scheduler at" in logs["Scheduler"]
        assert "Start worker" in logs["life-0"] and "Start worker" in logs["life-1"]
        # status(): one row per unit, running and connected once a poll has seen them.
        wait_until(lambda: all(r.phase == "running" and r.connected for r in cluster.status().rows),
                   60, "every unit to show running and connected in status()")
        assert [r.unit for r in cluster.status().rows] == ["life-0", "life-1"]
        # The notebook widget renders the same table (its status tab).
        shown = cluster._widget().children[0].value
        assert "Backend: <b>k8s</b>" in shown and "2/2 workers connected" in shown and "life-1" in shown
        # dashboard_link honours distributed.dashboard.link (JupyterHub's template).
        port = urllib.parse.urlsplit(cluster.dashboard_link).port
        monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/me/")
        with dask.config.set({"distributed.dashboard.link":
                              "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"}):
            assert cluster.dashboard_link == f"/user/me/proxy/{port}/status"
        # the dashboard, through the core's proxy and our port-forward
        with urllib.request.urlopen(cluster.dashboard_link, timeout=60) as resp:
            assert resp.status == 200
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")


def test_scale_up_down_and_replace_a_deleted_pod(emulator: Emulator, objects: Objects, k8s: Any,
                                                 wait_until: Any) -> None:
    name = "scale"
    opts = emulator.backend_options(name=name, n_workers=1)
    with Cluster.from_name("k8s", **opts) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=120)

        def worker_pods() -> list[dict[str, Any]]:
            return [p for p in objects(selector(name))["pods"]
                    if p["metadata"]["labels"]["dask-deploy/role"] == "worker"]

        cluster.scale(3)
        client.wait_for_workers(3, timeout=120)
        assert len(worker_pods()) == 3
        cluster.scale(1)
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 1 and len(worker_pods()) == 1,
                   120, "scale down to one worker and one pod")
        # a worker stopped while running keeps its log, although its pod is gone
        assert "scale-2" not in cluster.handles and "Start worker" in cluster.sync(cluster.logs_of, "scale-2")
        # a pod deleted behind our back is seen through the watch and replaced
        (victim,) = worker_pods()
        k8s(lambda v1: v1.delete_namespaced_pod(victim["metadata"]["name"], "default"))
        wait_until(lambda: [p["metadata"]["name"] for p in worker_pods()
                            if p["status"].get("phase") == "Running"
                            and p["metadata"]["name"] != victim["metadata"]["name"]],
                   120, "a replacement pod")
        client.wait_for_workers(1, timeout=120)
        assert client.submit(sum, [1, 2]).result() == 3
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")


def test_crash_loop_limit_and_logs_of_dead_workers(emulator: Emulator, objects: Objects,
                                                   wait_until: Any) -> None:
    name = "crashy"
    opts = emulator.backend_options(name=name, n_workers=1, scheduler="local", max_failures=2,
                                    worker_options={"no_such_option": 1})
    with Cluster.from_name("k8s", **opts) as cluster:
        with pytest.raises(CrashLoopError, match="max_failures=2"):
            cluster.wait_for_workers(1, timeout=180)
        assert "exited with code 1" in str(cluster.error)
        # the failed pods were deleted, but their logs were kept
        logs = cluster.get_logs(cluster=False, scheduler=False)
        assert logs and all("no_such_option" in text for text in logs.values())
        wait_until(lambda: not objects(selector(name))["pods"], 60, "failed pods removed")
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")


def test_image_pull_failure_counts_towards_the_crash_loop(emulator: Emulator, objects: Objects,
                                                          wait_until: Any) -> None:
    name = "nopull"
    opts = emulator.backend_options(name=name, n_workers=1, scheduler="local", max_failures=2,
                                    image="registry.invalid/dask:1")
    with Cluster.from_name("k8s", **opts) as cluster, \
            pytest.raises(CrashLoopError, match=r"ErrImagePull|ImagePullBackOff"):
        cluster.wait_for_workers(1, timeout=120)
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")


def test_gpus_become_device_plugin_limits(emulator: Emulator, objects: Objects, tmp_path: Any,
                                          wait_until: Any) -> None:
    # The session's node has no GPUs: the pod stays Pending, and poll says why.
    name = "gpu-pending"
    opts = emulator.backend_options(name=name, n_workers=1, gpus=1, scheduler="local", security=False)
    with Cluster.from_name("k8s", **opts) as cluster:
        wait_until(lambda: cluster.handles, 60, "the unit to be started")
        handles = list(cluster.handles.values())

        def pending_reason() -> str:
            (status,) = cluster.sync(cluster._call, "deploy_poll", handles=handles)
            return status.reason if status.phase is Phase.PENDING else ""

        wait_until(lambda: "Insufficient nvidia.com/gpu" in pending_reason(), 60, "Unschedulable")
        (pod,) = objects(selector(name))["pods"]
        assert [c["resources"]["limits"]["nvidia.com/gpu"] for c in pod["spec"]["containers"]] == ["1"]
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")

    # A node with two GPUs runs a unit that asks for two.
    with Emulator(str(tmp_path / "gpu-node"), capacity={"nvidia.com/gpu": 2}) as node:
        opts = node.backend_options(name="gpu", n_workers=1, gpus=2, scheduler="local", security=False)
        with Cluster.from_name("k8s", **opts) as cluster, Client(cluster) as client:
            client.wait_for_workers(cluster.workers_per_unit, timeout=120)
            (pod,) = objects(selector("gpu"), node)["pods"]
            limits = [c["resources"]["limits"]["nvidia.com/gpu"] for c in pod["spec"]["containers"]]
            assert sum(int(n) for n in limits) == 2
            assert all("CUDA_VISIBLE_DEVICES" not in json.dumps(c.get("env"))
                       for c in pod["spec"]["containers"])
            # the (emulated) device plugin gave the containers both GPUs, none twice
            seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES", ""))
            assert sorted(d for ids in seen.values() for d in ids.split(",")) == ["0", "1"]


def test_deleting_the_parent_removes_everything(emulator: Emulator, objects: Objects, k8s: Any,
                                                wait_until: Any) -> None:
    name = "cascade"
    with Cluster.from_name("k8s", **emulator.backend_options(name=name, n_workers=1)) as cluster:
        cluster.wait_for_workers(1, timeout=120)
        objs = objects(selector(name))
        assert len(objs["pods"]) == 2 and len(objs["services"]) == 1
        # what an admin (or a crashed client's cleanup) does: delete the one parent object
        k8s(lambda v1: v1.delete_namespaced_secret(name, "default"))
        wait_until(lambda: nothing_left(objects, name), 60, "the garbage collector to remove the rest")
    assert nothing_left(objects, name)


def test_discover_and_gc_after_a_detached_close(emulator: Emulator, objects: Objects,
                                                wait_until: Any) -> None:
    from dask_deploy._gc import collect_garbage

    name = "orphaned"
    opts = emulator.backend_options(name=name, n_workers=1, shutdown_on_close=False)
    cluster = Cluster.from_name("k8s", **opts)
    cluster.wait_for_workers(1, timeout=120)
    cluster.close()  # detached: everything stays
    objs = objects(selector(name))
    assert len(objs["pods"]) == 2 and len(objs["services"]) == 1 and len(objs["secrets"]) == 1

    # discover from a spec made only of connection options, as `dask-deploy gc` does
    spec = ClusterSpec(backend="k8s", name="probe",
                       backend_options=K8sOptions(kubeconfig=emulator.kubeconfig))

    async def discover() -> list[Any]:
        backend = K8sBackend(spec)
        try:
            return list(await backend.deploy_discover(spec, name))
        finally:
            await backend.deploy_teardown(spec)

    found = asyncio.run(discover())
    assert {(h.data["kind"], h.cluster) for h in found} == {
        ("Pod", name), ("Service", name), ("Secret", name)}
    assert {h.name for h in found if h.data["kind"] == "Pod"} == {"orphaned-0", "orphaned-scheduler"}

    # owner tags on everything, and what gc judges liveness by
    assert all(h.data["owner"] and h.data["created"] <= time.time() for h in found)
    assert all(h.data["detached"] is True and "owner_pid" not in h.data for h in found)
    assert all(h.data["scheduler_running"] is True for h in found)

    def gc() -> set[str]:
        removed = asyncio.run(collect_garbage(["k8s"], {"k8s": {"kubeconfig": emulator.kubeconfig}},
                                              echo=print, grace=0, clusters=[name]))
        return {v.cluster for v in removed}

    # its scheduler runs: someone may attach to it, gc leaves it alone
    assert gc() == set() and not nothing_left(objects, name)
    # its scheduler is gone: nobody can use what is left, gc removes it
    emulator.call(lambda v1: v1.delete_namespaced_pod(f"{name}-scheduler", "default",
                                                      grace_period_seconds=0))
    assert gc() == {name}
    assert nothing_left(objects, name)
    assert not asyncio.run(discover())


def test_missing_namespace_is_a_clear_error(emulator: Emulator, objects: Objects) -> None:
    from dask_deploy import BackendError

    with pytest.raises(BackendError, match=r'Secret nons in namespace nowhere failed: 404 .*"nowhere"'):
        Cluster.from_name("k8s", **emulator.backend_options(name="nons", namespace="nowhere"))
    assert nothing_left(objects, "nons")


def test_local_scheduler_without_tls(emulator: Emulator, objects: Objects, wait_until: Any) -> None:
    name = "plain"
    opts = emulator.backend_options(name=name, n_workers=1, scheduler="local", security=False)
    with Cluster.from_name("k8s", **opts) as cluster, Client(cluster) as client:
        assert cluster.spec.tls is None and cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        client.wait_for_workers(1, timeout=120)
        assert client.submit(lambda: 42).result() == 42
        objs = objects(selector(name))
        assert not objs["services"] and not objs["secrets"][0].get("data")
        assert "volumes" not in objs["pods"][0]["spec"]
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")


def test_detach_and_reattach_in_cluster(emulator: Emulator, objects: Objects, wait_until: Any) -> None:
    # A client inside the cluster (port_forward=False) dials the Service's address, which a
    # later process can dial too; so a detached cluster can be re-attached and shut down.
    name = "detached"
    opts = emulator.backend_options(name=name, n_workers=1, shutdown_on_close=False, port_forward=False)
    first = Cluster.from_name("k8s", **opts)
    first.wait_for_workers(1, timeout=120)
    address = first.scheduler_address
    first.close()
    (secret,) = objects(selector(name))["secrets"]
    assert secret["metadata"]["annotations"]["dask-deploy/detached"] == "true"
    assert secret["metadata"]["annotations"]["dask-deploy/scheduler-address"] == address

    again = Cluster.from_name("k8s", name=name)  # the record says: attach
    try:
        assert again.scheduler_address == address
        again.scale(2)
        again.wait_for_workers(2, timeout=120)
    finally:
        again.shutdown()
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")


def test_detach_then_attach_from_another_process_through_a_port_forward(
        emulator: Emulator, objects: Objects, wait_until: Any) -> None:
    # Out of the cluster the scheduler is reached through a port-forward that dies with the
    # process that opened it; deploy_reattach opens a new one for the next process.
    import subprocess
    import sys
    import textwrap

    name = "detached-pf"
    opts = emulator.backend_options(name=name, n_workers=1, shutdown_on_close=False)
    first = Cluster.from_name("k8s", **opts)
    first.wait_for_workers(1, timeout=120)
    first.close()  # detached: the forward closes, the cluster stays
    script = textwrap.dedent(f"""
        import urllib.request
        from dask_deploy import attach
        from distributed import Client
        c = attach({name!r})
        assert c.scheduler_address.startswith("tls://127.0.0.1:"), c.scheduler_address
        # the dashboard through this process's proxy and its own new port-forward (the
        # recorded one ended with the first process)
        with urllib.request.urlopen(c.dashboard_link, timeout=60) as resp:
            assert resp.status == 200 and b"Dask" in resp.read()
        c.scale(2)
        c.wait_for_workers(2, timeout=120)
        with Client(c) as client:
            assert client.submit(sum, [1, 2]).result(timeout=60) == 3
        c.shutdown()
        print("attached and shut down")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "attached and shut down" in out.stdout, out.stdout + out.stderr
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")


def test_close_while_the_secret_is_being_created_leaves_nothing(emulator: Emulator,
                                                                objects: Objects) -> None:
    """A start cancelled after the API server made the Secret but before we read the answer."""
    name = "cancelled"
    spec = ClusterSpec(backend="k8s", name=name, backend_options=K8sOptions(kubeconfig=emulator.kubeconfig))

    async def main() -> None:
        backend = K8sBackend(spec)
        api = await backend._connect()
        made = asyncio.Event()
        create = api.create_namespaced_secret

        async def create_then_hang(*args: Any, **kwargs: Any) -> Any:
            await (await create(*args, **kwargs)).read()  # the Secret exists now
            made.set()
            await asyncio.Event().wait()  # the answer never reaches us

        api.create_namespaced_secret = create_then_hang
        start = asyncio.ensure_future(backend.deploy_prepare(spec))
        await asyncio.wait_for(made.wait(), 60)
        assert [h.data["kind"] for h in await backend.deploy_discover(spec, name)] == ["Secret"]
        start.cancel()  # what the core does to a start when close() comes
        with pytest.raises(asyncio.CancelledError):
            await start
        await backend.deploy_teardown(spec)

    asyncio.run(main())
    assert nothing_left(objects, name)


def _scheduler_pid(objects: Objects, name: str) -> int:
    (pod,) = [p for p in objects(selector(name))["pods"]
              if p["metadata"]["labels"]["dask-deploy/role"] == "scheduler"]
    (container,) = pod["status"]["containerStatuses"]
    return int(container["containerID"].removeprefix("process://"))  # the emulated kubelet's


def test_a_killed_scheduler_pod_is_a_lost_scheduler(emulator: Emulator, objects: Objects,
                                                    wait_until: Any) -> None:
    name = "lost"
    with Cluster.from_name("k8s", **emulator.backend_options(name=name, n_workers=1)) as cluster:
        cluster.wait_for_workers(1, timeout=120)
        os.kill(_scheduler_pid(objects, name), signal.SIGKILL)
        killed = time.monotonic()
        # two poll intervals, plus the kubelet noticing the exit and the core's 2 s check
        # that the scheduler indeed does not answer
        wait_until(lambda: isinstance(cluster.error, SchedulerLost),
                   2 * cluster.spec.poll_interval + 5, "cluster.error to say the scheduler is lost")
        print(f"SchedulerLost {time.monotonic() - killed:.2f}s after the kill")
        message = str(cluster.error)
        assert f"the scheduler of {name} is failed" in message and "exited with code" in message
        assert "Scheduler at" in message  # the end of its log
    wait_until(lambda: nothing_left(objects, name), 60, "every object of the cluster to be gone")


_CLIENT = """
import json, sys, time
from dask_deploy import Cluster
cluster = Cluster.from_name("k8s", **json.loads(sys.argv[1]))
print("ready", flush=True)
time.sleep(600)
"""


def test_a_sigkilled_clients_cluster_ends_after_its_idle_timeout(emulator: Emulator, objects: Objects,
                                                                 wait_until: Any) -> None:
    from dask_deploy._gc import collect_garbage

    name = "abandoned"
    opts = emulator.backend_options(name=name, n_workers=0, idle_timeout=5, quiet=True)
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, json.dumps(opts)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "ready"
        (secret,) = objects(selector(name))["secrets"]
        assert secret["metadata"]["annotations"]["dask-deploy/owner-pid"] == str(client.pid)
        os.kill(client.pid, signal.SIGKILL)
        client.wait(30)
    finally:
        client.kill()

    def scheduler_phase() -> str:
        pods = [p for p in objects(selector(name))["pods"]
                if p["metadata"]["labels"]["dask-deploy/role"] == "scheduler"]
        return str(pods[0]["status"].get("phase")) if pods else "deleted"

    # nobody closed it: its scheduler closes itself when idle, and its pod ends
    wait_until(lambda: scheduler_phase() == "Succeeded", 90, "the idle scheduler pod to end by itself")
    # what is left (the Secret, the Service, the ended pod) gc removes: its client is gone
    removed = asyncio.run(collect_garbage(["k8s"], {"k8s": {"kubeconfig": emulator.kubeconfig}},
                                          echo=print, grace=0, clusters=[name]))
    assert {v.cluster for v in removed} == {name}
    assert nothing_left(objects, name)


def test_pools_put_their_pods_on_their_own_nodes(emulator: Emulator, objects: Objects,
                                                 wait_until: Any) -> None:
    """~8 s: each pool's pods carry that pool's nodeSelector; the cluster's other pod fields
    stay (a pool's pod_spec replaces the cluster's, like any pool option)."""
    name = "pools"
    pools = {"cpu": {"pod_spec": {"nodeSelector": {"pool": "cpu"}}},
             "big": {"pod_spec": {"nodeSelector": {"pool": "big"}}, "resources": {"BIG": 1}}}
    opts = emulator.backend_options(name=name, n_workers=1, pools=pools, scheduler="local",
                                    security=False)
    with Cluster.from_name("k8s", **opts) as cluster, Client(cluster) as client:
        cluster.scale(1, pool="big")
        client.wait_for_workers(2, timeout=120)
        pods = objects(selector(name))["pods"]
        got = {p["metadata"]["labels"]["dask-deploy/unit"]: p["spec"].get("nodeSelector")
               for p in pods}
        assert got == {"pools-cpu-0": {"pool": "cpu"}, "pools-big-1": {"pool": "big"}}
        assert client.submit(lambda: 1, resources={"BIG": 1}).result(timeout=60) == 1
    wait_until(lambda: nothing_left(objects, name), 30, "every object of the cluster to be gone")
