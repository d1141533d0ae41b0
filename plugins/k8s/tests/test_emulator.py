"""The API-server emulator is test infrastructure: check it against the real clients.

Everything here goes over real HTTP(S) through unmodified kubernetes-asyncio or kubectl.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest
from dask_deploy_k8s._forward import PortForward
from dask_deploy_testing.k8s import ApiServer
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient
from kubernetes_asyncio.watch import Watch

pytestmark = pytest.mark.timeout(120)


def pod(name: str, command: str = "sleep 30", labels: dict[str, str] | None = None, **spec: Any) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", command]}],
                     **spec}}


async def raw(call: Any, *args: Any, **kwargs: Any) -> Any:
    resp = await call(*args, _preload_content=False, **kwargs)
    return json.loads(await resp.read())


def status_of(e: ApiException) -> dict:
    return json.loads(e.body)


# -- the API, with the kubernetes-asyncio client (no kubelet) -----------------------------------


async def test_discovery_and_version(local_api: tuple[ApiServer, Any]) -> None:
    _, v1 = local_api
    api = v1.api_client
    versions = await client.CoreApi(api).get_api_versions()
    assert versions.versions == ["v1"] and versions.server_address_by_client_cidrs
    resources = await v1.get_api_resources()
    names = {r.name for r in resources.resources}
    assert {"pods", "pods/log", "pods/status", "pods/portforward", "services", "secrets",
            "namespaces"} <= names
    assert (await client.VersionApi(api).get_code()).major == "1"


async def test_crud_fills_server_fields_and_errors_are_status(local_api: tuple[ApiServer, Any]) -> None:
    _, v1 = local_api
    made = await v1.create_namespaced_pod("default", pod("p1"))
    assert made.metadata.uid and made.metadata.resource_version and made.metadata.creation_timestamp
    assert made.metadata.namespace == "default" and made.status.phase == "Pending"
    gen = await v1.create_namespaced_pod("default", {**pod(""), "metadata": {"generateName": "w-"}})
    assert gen.metadata.name.startswith("w-") and len(gen.metadata.name) == 7

    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_pod("default", pod("p1"))
    assert e.value.status == 409 and status_of(e.value)["reason"] == "AlreadyExists"
    assert status_of(e.value)["kind"] == "Status"
    with pytest.raises(ApiException) as e:
        await v1.read_namespaced_pod("nope", "default")
    assert e.value.status == 404 and status_of(e.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_pod("default", {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    assert e.value.status == 422 and status_of(e.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_pod("nowhere", pod("p2"))
    assert e.value.status == 404

    # a stale resourceVersion on replace is a conflict
    current = await raw(v1.read_namespaced_pod, "p1", "default")
    current["metadata"]["labels"] = {"a": "1"}
    await v1.replace_namespaced_pod("p1", "default", current)
    with pytest.raises(ApiException) as e:
        await v1.replace_namespaced_pod("p1", "default", current)
    assert e.value.status == 409 and status_of(e.value)["reason"] == "Conflict"

    deleted = await raw(v1.delete_namespaced_pod, "p1", "default")
    assert deleted["metadata"]["name"] == "p1"  # DELETE returns the object
    with pytest.raises(ApiException):
        await v1.read_namespaced_pod("p1", "default")


async def test_label_and_field_selectors(local_api: tuple[ApiServer, Any]) -> None:
    _, v1 = local_api
    for name, labels in (("a", {"app": "x", "tier": "web"}), ("b", {"app": "x"}), ("c", {"app": "y"})):
        await v1.create_namespaced_pod("default", pod(name, labels=labels))

    async def names(**kw: str) -> list[str]:
        return sorted(p.metadata.name for p in (await v1.list_namespaced_pod("default", **kw)).items)

    assert await names(label_selector="app=x") == ["a", "b"]
    assert await names(label_selector="app==x,tier=web") == ["a"]
    assert await names(label_selector="app!=x") == ["c"]
    assert await names(label_selector="app in (x, y),tier notin (web)") == ["b", "c"]
    assert await names(label_selector="tier") == ["a"]
    assert await names(label_selector="!tier") == ["b", "c"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="status.phase=Pending,metadata.name!=a") == ["b", "c"]
    listing = await raw(v1.list_namespaced_pod, "default")
    assert int(listing["metadata"]["resourceVersion"]) > 0 and len(listing["items"]) == 3
    assert sorted(p.metadata.name for p in (await v1.list_pod_for_all_namespaces()).items) == ["a", "b", "c"]
    with pytest.raises(ApiException) as e:
        await v1.list_namespaced_pod("default", field_selector="spec.containers=x")
    assert e.value.status == 400 and "field label not supported" in status_of(e.value)["message"]
    with pytest.raises(ApiException) as e:
        await v1.list_namespaced_pod("default", label_selector="a in b")
    assert e.value.status == 400


async def test_patch_status_subresource_and_secrets(local_api: tuple[ApiServer, Any]) -> None:
    _, v1 = local_api
    await v1.create_namespaced_pod("default", pod("p"))
    # strategic merge patch (the client's default for a dict), JSON patch, merge patch
    await v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"x": "1"}}})
    await v1.patch_namespaced_pod("p", "default", [{"op": "add", "path": "/metadata/labels/y", "value": "2"}])
    await v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"x": None}}},
                                  _content_type="application/merge-patch+json")
    assert (await v1.read_namespaced_pod("p", "default")).metadata.labels == {"y": "2"}
    # the main resource ignores status; the status subresource changes only status
    await v1.patch_namespaced_pod("p", "default", {"status": {"phase": "Running"}})
    assert (await v1.read_namespaced_pod("p", "default")).status.phase == "Pending"
    await v1.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Running"},
                                                          "metadata": {"labels": {"z": "3"}}})
    got = await v1.read_namespaced_pod_status("p", "default")
    assert got.status.phase == "Running" and "z" not in got.metadata.labels

    secret = await v1.create_namespaced_secret("default", {"metadata": {"name": "s"},
                                                           "stringData": {"k": "value"}})
    assert secret.data == {"k": "dmFsdWU="} and secret.type == "Opaque"


async def test_watch_events_resume_selector_transitions_and_410(local_api: tuple[ApiServer, Any]) -> None:
    server, v1 = local_api
    start = (await raw(v1.list_namespaced_pod, "default"))["metadata"]["resourceVersion"]
    await v1.create_namespaced_pod("default", pod("w1", labels={"app": "x"}))
    await v1.patch_namespaced_pod("w1", "default", {"metadata": {"annotations": {"n": "1"}}})
    await v1.patch_namespaced_pod("w1", "default", {"metadata": {"labels": {"app": "gone"}}})
    await v1.create_namespaced_pod("default", pod("w2", labels={"app": "x"}))
    await v1.delete_namespaced_pod("w2", "default")

    # resuming from a resourceVersion replays exactly what happened after it, through the
    # selector: the label change turns w1's MODIFIED into DELETED for this watch
    seen = []
    async with Watch() as w:
        async for ev in w.stream(v1.list_namespaced_pod, "default", label_selector="app=x",
                                 resource_version=start, timeout_seconds=1):
            seen.append((ev["type"], ev["object"].metadata.name))
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1"), ("ADDED", "w2"),
                    ("DELETED", "w2")]
    assert isinstance(ev["object"], client.V1Pod)

    # without a resourceVersion: the current state as ADDED, then live events
    async def follow() -> list[tuple[str, str]]:
        out = []
        async with Watch() as w:
            async for ev in w.stream(v1.list_namespaced_pod, "default", timeout_seconds=5):
                out.append((ev["type"], ev["object"].metadata.name))
                if ev["type"] == "DELETED":
                    break
        return out

    task = asyncio.ensure_future(follow())
    await asyncio.sleep(0.2)
    await v1.delete_namespaced_pod("w1", "default")
    assert await asyncio.wait_for(task, 10) == [("ADDED", "w1"), ("DELETED", "w1")]

    # a version older than the server's history answers 410 Gone, which the client raises
    for i in range(server.store.history.maxlen or 0):
        await v1.create_namespaced_config_map("default", {"metadata": {"name": f"cm{i}"}})
    with pytest.raises(ApiException) as e:
        async with Watch() as w:
            async for _ in w.stream(v1.list_namespaced_pod, "default", resource_version=start,
                                    timeout_seconds=1):
                pass
    assert e.value.status == 410


async def test_owner_references_cascade_and_orphan(local_api: tuple[ApiServer, Any],
                                                   async_wait_until: Any) -> None:
    _, v1 = local_api
    owner = await v1.create_namespaced_secret("default", {"metadata": {"name": "owner"}})
    ref = [{"apiVersion": "v1", "kind": "Secret", "name": "owner", "uid": owner.metadata.uid}]
    for name in ("d1", "d2"):
        await v1.create_namespaced_config_map("default", {"metadata": {"name": name, "ownerReferences": ref}})
    await v1.create_namespaced_pod("default", {**pod("dp"),
                                               "metadata": {"name": "dp", "ownerReferences": ref}})
    await v1.delete_namespaced_secret("owner", "default")

    async def dependents() -> int:
        return len((await v1.list_namespaced_config_map("default")).items) + \
            len((await v1.list_namespaced_pod("default")).items)

    await async_wait_until(lambda: _zero(dependents), 10, "dependents gone")

    # Orphan propagation keeps the dependents and drops the reference
    owner = await v1.create_namespaced_secret("default", {"metadata": {"name": "owner2"}})
    ref = [{"apiVersion": "v1", "kind": "Secret", "name": "owner2", "uid": owner.metadata.uid}]
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "kept", "ownerReferences": ref}})
    await v1.delete_namespaced_secret("owner2", "default", propagation_policy="Orphan")
    kept = await v1.read_namespaced_config_map("kept", "default")
    assert not kept.metadata.owner_references

    # a dependent created for an owner that does not exist is collected
    ghost = [{"apiVersion": "v1", "kind": "Secret", "name": "ghost", "uid": "no-such-uid"}]
    await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "orphan", "ownerReferences": ghost}})
    await async_wait_until(lambda: _missing(v1.read_namespaced_config_map("orphan", "default")), 10,
                           "the orphan to be collected")


async def _zero(count: Any) -> bool:
    return await count() == 0


async def _missing(call: Any) -> bool:
    try:
        await call
    except ApiException as e:
        return e.status == 404
    return False


async def test_namespace_deletion_removes_its_content(local_api: tuple[ApiServer, Any],
                                                      async_wait_until: Any) -> None:
    _, v1 = local_api
    await v1.create_namespace({"metadata": {"name": "tmp"}})
    await v1.create_namespaced_pod("tmp", pod("p"))
    await v1.create_namespaced_secret("tmp", {"metadata": {"name": "s"}})
    await v1.delete_namespace("tmp")
    await async_wait_until(lambda: _missing(v1.read_namespace("tmp")), 10, "namespace gone")
    assert not (await v1.list_pod_for_all_namespaces()).items


async def test_bearer_token_is_required(emulator: Any) -> None:
    cfg = type.__call__(client.Configuration)
    from kubernetes_asyncio import config

    await config.load_kube_config(config_file=emulator.kubeconfig, client_configuration=cfg,
                                  persist_config=False)
    cfg.api_key = {}
    async with client.ApiClient(cfg) as api:
        with pytest.raises(ApiException) as e:
            await client.CoreV1Api(api).list_namespaced_pod("default")
    assert e.value.status == 401


# -- the process kubelet, through the client ----------------------------------------------------


async def wait_phase(v1: Any, name: str, phases: set[str], timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await v1.read_namespaced_pod(name, "default")
        if got.status.phase in phases:
            return got
        assert asyncio.get_running_loop().time() < deadline, f"pod {name} not in {phases}: {got.status}"
        await asyncio.sleep(0.05)


async def test_kubelet_runs_pods_with_their_own_address(core: Any) -> None:
    v1 = core
    cmd = 'echo "ip=$POD_IP name=$(NAME)" \'$$(NAME)\'; echo to-stderr >&2; exit 3'
    spec = pod("k-exit", cmd)
    spec["spec"]["containers"][0]["env"] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    await v1.create_namespaced_pod("default", spec)
    await v1.create_namespaced_pod("default", pod("k-ok", "echo fine"))
    failed = await wait_phase(v1, "k-exit", {"Failed"})
    ok = await wait_phase(v1, "k-ok", {"Succeeded"})
    term = failed.status.container_statuses[0].state.terminated
    assert term.exit_code == 3 and term.reason == "Error"
    assert ok.status.container_statuses[0].state.terminated.exit_code == 0
    assert failed.status.pod_ip != ok.status.pod_ip
    assert failed.status.pod_ip.startswith("127.") and failed.spec.node_name
    # logs of terminated pods stay readable while the pod exists
    log = await v1.read_namespaced_pod_log("k-exit", "default")
    assert f"ip={failed.status.pod_ip} name=k-exit $(NAME)" in log and "to-stderr" in log
    assert await v1.read_namespaced_pod_log("k-exit", "default", tail_lines=1) == "to-stderr\n"
    for name in ("k-exit", "k-ok"):
        await v1.delete_namespaced_pod(name, "default")  # terminated: removed at once
        with pytest.raises(ApiException) as e:
            await v1.read_namespaced_pod_log(name, "default")
        assert e.value.status == 404


async def test_kubelet_graceful_delete_and_follow_logs(core: Any, async_wait_until: Any) -> None:
    v1 = core
    cmd = "trap 'echo got-term; exit 0' TERM; echo started; while true; do sleep 0.1; done"
    await v1.create_namespaced_pod("default", pod("k-term", cmd))
    await wait_phase(v1, "k-term", {"Running"})

    async def follow() -> str:
        resp = await v1.read_namespaced_pod_log("k-term", "default", follow=True, _preload_content=False)
        return (await resp.read()).decode()

    follower = asyncio.ensure_future(follow())
    await async_wait_until(lambda: _contains(v1, "k-term", "started"), 20, "the pod's first line")
    deleted = await v1.delete_namespaced_pod("k-term", "default")
    assert deleted.metadata.deletion_timestamp is not None  # graceful: still there, terminating
    text = await asyncio.wait_for(follower, 20)  # the stream ends when the container does
    assert "started" in text and "got-term" in text
    await async_wait_until(lambda: _missing(v1.read_namespaced_pod("k-term", "default")), 20, "pod removed")


async def _contains(v1: Any, name: str, text: str) -> bool:
    try:
        return text in await v1.read_namespaced_pod_log(name, "default")
    except ApiException:
        return False


async def test_kubelet_image_pull_crash_loop_and_unschedulable(core: Any, async_wait_until: Any) -> None:
    v1 = core
    bad = pod("k-pull")
    bad["spec"]["containers"][0]["image"] = "registry.invalid/nope:1"
    await v1.create_namespaced_pod("default", bad)
    crash = pod("k-crash", "echo boom; exit 1", restartPolicy="Always")
    await v1.create_namespaced_pod("default", crash)
    gpu = pod("k-gpu")
    gpu["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    await v1.create_namespaced_pod("default", gpu)

    async def waiting(name: str, reason: str) -> Any:
        got = await v1.read_namespaced_pod(name, "default")
        for cs in got.status.container_statuses or []:
            if cs.state.waiting and cs.state.waiting.reason == reason:
                return got
        return None

    assert await async_wait_until(lambda: waiting("k-pull", "ImagePullBackOff"), 30, "ImagePullBackOff")
    with pytest.raises(ApiException) as e:
        await v1.read_namespaced_pod_log("k-pull", "default")
    assert e.value.status == 400 and "waiting to start" in status_of(e.value)["message"]
    looping = await async_wait_until(lambda: waiting("k-crash", "CrashLoopBackOff"), 30, "CrashLoopBackOff")
    assert looping.status.container_statuses[0].restart_count >= 1
    assert looping.status.container_statuses[0].last_state.terminated.exit_code == 1
    await async_wait_until(lambda: _previous(v1, "k-crash"), 30, "a restarted container")
    assert "boom" in await v1.read_namespaced_pod_log("k-crash", "default", previous=True)
    unscheduled = await v1.read_namespaced_pod("k-gpu", "default")
    cond = next(c for c in unscheduled.status.conditions if c.type == "PodScheduled")
    assert cond.status == "False" and cond.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond.message and not unscheduled.spec.node_name
    for name in ("k-pull", "k-crash", "k-gpu"):
        await v1.delete_namespaced_pod(name, "default")
    for name in ("k-pull", "k-crash", "k-gpu"):
        await async_wait_until(lambda n=name: _missing(v1.read_namespaced_pod(n, "default")), 30, "gone")


async def _previous(v1: Any, name: str) -> bool:
    """Whether the log of a previous run of the container can be read (it was restarted)."""
    try:
        await v1.read_namespaced_pod_log(name, "default", previous=True)
    except ApiException as e:
        assert e.status == 400
        return False
    return True


async def test_kubelet_secret_volumes_services_and_port_forward(core: Any, emulator: Any,
                                                               async_wait_until: Any) -> None:
    v1 = core
    await v1.create_namespaced_secret("default", {"metadata": {"name": "web-files"},
                                                  "stringData": {"index.html": "hello from a secret"}})
    serve = pod("k-web", labels={"app": "web"})
    c = serve["spec"]["containers"][0]
    # a mount path is rewritten where an argument starts with it (no mount namespaces here)
    c["command"] = [sys.executable, "-m", "http.server", "8080", "--bind", "$(POD_IP)", "--directory",
                    "/srv/www"]
    c["env"] = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    c["volumeMounts"] = [{"name": "files", "mountPath": "/srv/www", "readOnly": True}]
    c["ports"] = [{"name": "http", "containerPort": 8080}]
    serve["spec"]["volumes"] = [{"name": "files", "secret": {"secretName": "web-files"}}]
    await v1.create_namespaced_pod("default", serve)
    svc = await v1.create_namespaced_service("default", {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    ip = svc.spec.cluster_ip
    assert ip.startswith("127.") and svc.spec.ports[0].protocol == "TCP"
    await wait_phase(v1, "k-web", {"Running"})

    async def fetch(host: str, port: int) -> str | None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return None
        writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = await reader.read()
        writer.close()
        return data.decode(errors="replace") if b"200 OK" in data else None

    # kube-proxy: the Service's clusterIP reaches the pod's named port
    body = await async_wait_until(lambda: fetch(ip, 80), 30, "the service to answer")
    assert "hello from a secret" in body
    # port-forward over the API server's websocket (what the backend uses)
    ws_api = client.CoreV1Api(WsApiClient(v1.api_client.configuration))
    forward = PortForward(ws_api, "default", "k-web", 8080)
    port = await forward.start()
    try:
        assert "hello from a secret" in await async_wait_until(
            lambda: fetch("127.0.0.1", port), 30, "the port-forward")
        # the services/proxy subresource, too
        resp = await v1.connect_get_namespaced_service_proxy_with_path(
            "web:80", "default", "index.html", _preload_content=False)
        assert "hello from a secret" in (await resp.read()).decode()
    finally:
        await forward.close()
        await ws_api.api_client.close()
    await v1.delete_namespaced_service("web", "default")
    await v1.delete_namespaced_pod("k-web", "default")
    await v1.delete_namespaced_secret("web-files", "default")
    await async_wait_until(lambda: _missing(v1.read_namespaced_pod("k-web", "default")), 30, "gone")
    assert await fetch(ip, 80) is None  # the proxy listener went with the Service


# -- kubectl ----------------------------------------------------------------------------------


def test_kubectl_against_the_emulator(kubectl: Any, tmp_path: Any, wait_until: Any) -> None:
    manifest = tmp_path / "pod.json"
    spec = pod("kc", "echo hello from kubectl; sleep 30", labels={"app": "kc"})
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", **spec}))
    # the emulator serves no OpenAPI schema, so client-side validation is off
    assert "pod/kc created" in kubectl("create", "--validate=false", "-f", str(manifest)).stdout
    wait_until(lambda: kubectl("get", "pod", "kc", "-o", "jsonpath={.status.phase}").stdout == "Running",
               30, "kubectl to see the pod running")
    table = kubectl("get", "pods", "-l", "app=kc").stdout
    assert "kc" in table and "Running" in table and "READY" in table
    assert "kc" in kubectl("get", "pods", "--field-selector", "status.phase=Running").stdout
    wait_until(lambda: "hello from kubectl" in kubectl("logs", "kc").stdout, 30, "kubectl logs")
    kubectl("label", "pod", "kc", "extra=yes")
    got = json.loads(kubectl("get", "pod", "kc", "-o", "json").stdout)
    assert got["metadata"]["labels"] == {"app": "kc", "extra": "yes"}
    assert got["status"]["containerStatuses"][0]["ready"] is True
    missing = kubectl("get", "pod", "nope", check=False)
    assert missing.returncode != 0 and 'pods "nope" not found' in missing.stderr
    # delete waits (through a watch with a field selector) until the pod is gone
    assert 'pod "kc" deleted' in kubectl("delete", "pod", "kc", timeout=60).stdout
    assert "No resources found" in kubectl("get", "pods", "-l", "app=kc").stderr
    ns = kubectl("get", "namespaces").stdout
    assert "default" in ns and "Active" in ns
