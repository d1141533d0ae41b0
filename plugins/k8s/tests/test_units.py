"""Pure parts of the k8s backend: options, manifests, pod status; and in-cluster config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dask_deploy import TLS, ClusterSpec, Phase, SchedulerSpec, SpecError, Unit, WorkerSpec
from dask_deploy_k8s import K8sOptions, _backend
from dask_deploy_k8s import _manifests as m
from dask_deploy_testing.k8s import Emulator

OWNER = {"apiVersion": "v1", "kind": "Secret", "name": "c", "uid": "u-1"}


@pytest.mark.parametrize(("option", "value"), [
    ("namespace", "Not_A_Namespace"), ("service_type", "Ingress"), ("stop_grace", -1),
    ("stop_grace", True), ("port_forward", "yes"), ("python", ""), ("pod_spec", {"containers": []}),
    ("labels", {"a": 1}), ("kubeconfig", ""), ("fs_group", -1), ("fs_group", "1000"),
    ("fs_group", True), ("dashboard_listen_address", ""), ("dashboard_listen_address", 3),
])
def test_options_are_validated_with_the_option_named(option: str, value: Any) -> None:
    with pytest.raises(SpecError, match=option):
        K8sOptions(**{option: value})


def test_from_name_rejects_unknown_options() -> None:
    from dask_deploy import Cluster

    with pytest.raises(SpecError, match=r"not an option of backend 'k8s'.*kubeconfig"):
        Cluster.from_name("k8s", kubeconfgi="/tmp/x")


def spec(**kw: Any) -> ClusterSpec:
    worker = kw.pop("worker", WorkerSpec())
    return ClusterSpec(backend="k8s", name=kw.pop("name", "c"), worker=worker,
                       scheduler=SchedulerSpec(placement="remote", host="0.0.0.0"),
                       tls=kw.pop("tls", None), backend_options=K8sOptions(**kw))


def test_worker_pod_resources_gpus_env_and_tls_by_mount() -> None:
    tls = TLS.temporary()
    w = WorkerSpec(nthreads=2, memory_limit="1GiB", gpus=1, resources={"GPU": 1},
                   env={"A": "b", "CUDA_VISIBLE_DEVICES": "3"}, options={"lifetime": "1h"})
    s = spec(tls=tls, pod_spec={"nodeSelector": {"pool": "gpu"},
                                "volumes": [{"name": "scratch", "emptyDir": {}}]}, labels={"team": "x"})
    pod = m.worker_pod(s, "ns", OWNER, Unit("c-3", (w,)), "tls://10.0.0.1:8786")
    meta, pspec = pod["metadata"], pod["spec"]
    assert meta["generateName"] == "c-3-" and meta["ownerReferences"] == [OWNER]
    assert meta["labels"] == {"team": "x", m.MANAGED_BY: "dask-deploy", m.CLUSTER: "c",
                              m.ROLE: "worker", m.UNIT: "c-3"}
    assert pspec["restartPolicy"] == "Never" and pspec["nodeSelector"] == {"pool": "gpu"}
    assert [v["name"] for v in pspec["volumes"]] == ["dask-tls", "scratch"]
    (c,) = pspec["containers"]
    assert c["resources"] == {"requests": {"cpu": "2", "memory": str(2**30)},
                              "limits": {"memory": str(2**30), "nvidia.com/gpu": "1"}}
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "CUDA_VISIBLE_DEVICES" not in env  # the device plugin sets it
    assert env["DASK_DEPLOY_TLS_DIR"]["value"] == m.TLS_DIR == c["volumeMounts"][0]["mountPath"]
    kwargs = json.loads(c["command"][-1])
    assert kwargs == {"scheduler_ip": "tls://10.0.0.1:8786", "name": "c-3", "nthreads": 2,
                      "memory_limit": 2**30, "host": "$(POD_IP)", "resources": {"GPU": 1}, "lifetime": "1h"}
    assert "BEGIN" not in json.dumps(pod) and tls.key not in json.dumps(pod)
    compile(m.BOOTSTRAP, "<bootstrap>", "exec")  # what the container runs


def test_a_unit_of_several_workers_is_one_pod_of_several_containers() -> None:
    workers = (WorkerSpec(suffix="-0"), WorkerSpec(suffix="-1"))
    pod = m.worker_pod(spec(), "ns", OWNER, Unit("c-0", workers), "tcp://x:1")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["worker-0", "worker-1"]
    assert [json.loads(c["command"][-1])["name"] for c in pod["spec"]["containers"]] == ["c-0-0", "c-0-1"]
    assert "volumes" not in pod["spec"]  # no TLS, nothing to mount


def test_scheduler_service_and_parent_secret() -> None:
    tls = TLS.temporary()
    s = spec(name="7up", tls=tls, service_type="LoadBalancer")
    assert m.service_name(s) == "dask-7up"  # Service names must start with a letter
    svc = m.scheduler_service(s, "ns", OWNER)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["selector"] == {m.CLUSTER: "7up", m.ROLE: "scheduler"}
    assert [p["port"] for p in svc["spec"]["ports"]] == [8786, 8787]
    secret = m.cluster_secret(s, "ns")
    assert set(secret["data"]) == {"tls.crt", "tls.key"} and "ownerReferences" not in secret["metadata"]
    pod = m.scheduler_pod(s, "ns", OWNER)
    assert pod["metadata"]["name"] == "7up-scheduler"
    assert json.loads(pod["spec"]["containers"][0]["command"][-1])["host"] == "0.0.0.0"


def cs(state: dict[str, Any], name: str = "worker") -> dict[str, Any]:
    return {"name": name, "state": state, "ready": False, "restartCount": 0, "image": "i", "imageID": ""}


@pytest.mark.parametrize(("pod", "phase", "reason"), [
    (None, Phase.PENDING, "created"),
    ({"status": {"phase": "Pending"}}, Phase.PENDING, ""),
    ({"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}},
     Phase.PENDING, "Insufficient nvidia.com/gpu"),
    ({"status": {"phase": "Pending",
                 "containerStatuses": [cs({"waiting": {"reason": "ContainerCreating"}})]}},
     Phase.PENDING, ""),
    ({"status": {"phase": "Pending", "containerStatuses": [
        cs({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}})]}},
     Phase.FAILED, "ImagePullBackOff: Back-off pulling image"),
    ({"status": {"phase": "Running", "containerStatuses": [cs({"waiting": {"reason": "CrashLoopBackOff"}})]}},
     Phase.FAILED, "CrashLoopBackOff"),
    ({"status": {"phase": "Running", "containerStatuses": [cs({"running": {}})]}}, Phase.RUNNING, ""),
    ({"status": {"phase": "Failed", "containerStatuses": [
        cs({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})]}},
     Phase.FAILED, "exited with code 137 (OOMKilled)"),
    ({"status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}},
     Phase.FAILED, "Evicted: low on memory"),
    ({"status": {"phase": "Succeeded"}}, Phase.GONE, "exited with code 0"),
    ({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}}, Phase.GONE, "being deleted"),
])
def test_pod_status(pod: dict[str, Any] | None, phase: Phase, reason: str) -> None:
    got = m.pod_status(pod)
    assert got.phase is phase and reason in got.reason
    if not reason:
        assert got.reason in ("", "Pending")


def test_a_pod_seen_deleted_is_gone() -> None:
    assert m.pod_status(None, gone=True).phase is Phase.GONE


async def test_in_cluster_configuration(emulator: Emulator, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No kubeconfig, inside a pod: the service account's token, CA and namespace are used."""
    config = json.loads(Path(emulator.kubeconfig).read_text())
    import base64

    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(config["users"][0]["user"]["token"])
    ca = config["clusters"][0]["cluster"]["certificate-authority-data"]
    (sa / "ca.crt").write_bytes(base64.b64decode(ca))
    (sa / "namespace").write_text("kube-system")
    host, port = emulator.url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setattr(_backend, "_SA", str(sa))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    cfg, namespace, inside = await _backend.connect(K8sOptions())
    assert inside and namespace == "kube-system"
    from kubernetes_asyncio import client

    async with client.ApiClient(cfg) as api:
        assert (await client.CoreV1Api(api).read_namespace("kube-system")).metadata.name == "kube-system"
    # an explicit kubeconfig wins over the service account
    _, namespace, inside = await _backend.connect(K8sOptions(kubeconfig=emulator.kubeconfig))
    assert not inside and namespace == "default"


def test_tls_secret_is_readable_by_a_non_root_user_of_the_pod_group() -> None:
    """Mode 0440 and ``fsGroup``: a container running as a non-root user of that group reads
    the key; a user's own securityContext is merged over ours; fs_group=None leaves it unset."""
    tls = TLS.temporary()
    unit = Unit("c-0", (WorkerSpec(),))
    for pod in (m.worker_pod(spec(tls=tls), "ns", OWNER, unit, "tls://x:8786"),
                m.scheduler_pod(spec(tls=tls), "ns", OWNER)):
        (vol,) = pod["spec"]["volumes"]
        assert vol["secret"]["defaultMode"] == 0o440 == 288
        assert pod["spec"]["securityContext"] == {"fsGroup": 1000}
    pod = m.worker_pod(spec(tls=tls, fs_group=2000, pod_spec={"securityContext": {"runAsUser": 7}}),
                       "ns", OWNER, unit, "tls://x:8786")
    assert pod["spec"]["securityContext"] == {"fsGroup": 2000, "runAsUser": 7}
    pod = m.worker_pod(spec(tls=tls, fs_group=None), "ns", OWNER, unit, "tls://x:8786")
    assert "securityContext" not in pod["spec"]


def test_scheduler_dashboard_binds_one_pod_address() -> None:
    """Never all pod addresses: loopback behind a port-forward, else the pod IP the Service
    reaches; ``dashboard_listen_address`` overrides. The comm port is unchanged."""
    def kwargs(port_forward: bool, **opts: Any) -> dict[str, Any]:
        pod = m.scheduler_pod(spec(**opts), "ns", OWNER, port_forward=port_forward)
        out: dict[str, Any] = json.loads(pod["spec"]["containers"][0]["command"][-1])
        return out

    assert kwargs(True)["dashboard_address"] == "127.0.0.1:8787"
    assert kwargs(False)["dashboard_address"] == "$(POD_IP):8787"
    assert kwargs(True)["host"] == kwargs(False)["host"] == "0.0.0.0"
    assert kwargs(True, dashboard_listen_address="$(POD_IP)")["dashboard_address"] == "$(POD_IP):8787"
    assert all("0.0.0.0" not in kwargs(f)["dashboard_address"] for f in (True, False))
