"""The ``k8s`` backend: a scheduler pod behind a Service, one pod per worker unit.

One cluster = one Secret (the parent: TLS identity, owner of everything else) + a
scheduler pod and Service (remote placement) + a pod per unit, all labelled with the cluster
name. Pod status comes from a watch (:mod:`._watch`); the client reaches a remote scheduler
through an in-process port-forward (:mod:`._forward`) unless it runs inside the cluster.
Only namespaced permissions are needed (``rbac.yaml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import aiohttp
from dask_deploy import (
    BackendError,
    ClusterSpec,
    Handle,
    SchedulerInfo,
    StartTimeout,
    Status,
    Unit,
    created_tag,
    hookimpl,
    owner_tag,
)
from dask_deploy import Phase as _Phase
from dask_deploy.toolkit import wait_until
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from . import _manifests as m
from ._forward import PortForward
from ._options import K8sOptions
from ._watch import PodWatch

__all__ = ["K8sBackend"]

#: Where Kubernetes mounts a pod's service account (token, ca.crt, namespace).
_SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def _in_cluster(opts: K8sOptions) -> bool:
    """Use the pod's service account: no kubeconfig given or found, and we run in a pod."""
    if opts.kubeconfig or os.environ.get("KUBECONFIG"):
        return False
    return "KUBERNETES_SERVICE_HOST" in os.environ and not os.path.exists(
        os.path.expanduser("~/.kube/config"))


async def connect(opts: K8sOptions) -> tuple[Any, str, bool]:
    """An ``ApiClient`` from the kubeconfig or service account, the namespace, and in-cluster."""
    cfg = type.__call__(client.Configuration)  # a fresh one, not the process-wide default
    namespace = opts.namespace
    try:
        if _in_cluster(opts):
            config.load_incluster_config(client_configuration=cfg, token_filename=f"{_SA}/token",
                                         cert_filename=f"{_SA}/ca.crt")
            if namespace is None and os.path.exists(f"{_SA}/namespace"):
                with open(f"{_SA}/namespace") as f:
                    namespace = f.read().strip()
            inside = True
        else:
            # $KUBECONFIG is read now, not when the client library was imported.
            path = opts.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            await config.load_kube_config(config_file=path, context=opts.context,
                                          client_configuration=cfg, persist_config=False)
            if namespace is None:
                contexts, active = config.list_kube_config_contexts(path)
                chosen = next((c for c in contexts if c["name"] == opts.context), active) \
                    if opts.context else active
                namespace = ((chosen or {}).get("context") or {}).get("namespace")
            inside = False
    except (config.ConfigException, OSError, KeyError, TypeError) as e:
        where = opts.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise BackendError(f"cannot load the Kubernetes configuration ({where}): {e}; pass "
                           "kubeconfig=PATH and context=NAME, or run inside a pod") from e
    return cfg, namespace or "default", inside


def _message(body: bytes) -> str:
    """The ``message`` of a ``Status`` body (or the body itself)."""
    try:
        return str(json.loads(body).get("message") or body[:200])
    except (TypeError, ValueError, AttributeError):
        return body[:200].decode(errors="replace")


class Refused(BackendError):
    """The API server answered with an error status (``status``: the HTTP code)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class K8sBackend:
    """One cluster's Kubernetes backend."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.opts: K8sOptions = spec.backend_options or K8sOptions()
        self.namespace = self.opts.namespace or "default"
        self.in_cluster = False
        self.api: Any = None
        self.ws_api: Any = None
        self.watch: PodWatch | None = None
        self.owner: dict[str, Any] | None = None  # set once the cluster's Secret is ours
        self.worker_address: str | None = None  # the scheduler as pods reach it
        self.forwards: list[PortForward] = []
        #: This process's local end of the forward to the scheduler pod's dashboard, if open.
        self.dashboard_forward: str | None = None
        self.logs: OrderedDict[str, str] = OrderedDict()  # of deleted pods
        self._connecting: asyncio.Lock | None = None
        #: Ownership annotations of everything this cluster creates (see ``deploy_discover``).
        self.tags = {m.OWNER: owner_tag(), m.CREATED: str(created_tag())}

    # -- connection -----------------------------------------------------------------------

    async def _connect(self) -> Any:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self.api is None:
                cfg, self.namespace, self.in_cluster = await connect(self.opts)
                self.api = client.CoreV1Api(client.ApiClient(cfg))
                self.ws_api = client.CoreV1Api(WsApiClient(cfg))
        return self.api

    async def _call(self, what: str, method: Any, *args: Any, missing_ok: bool = False,
                    text: bool = False, **kwargs: Any) -> Any:
        """Call the API; the parsed JSON body (or text), None for a 404 if ``missing_ok``.

        Raw responses (``_preload_content=False``) skip the client's model classes, and the
        client raises nothing for them: a non-2xx status becomes a :class:`Refused` that says
        what failed and why, in the API server's words.
        """
        try:
            resp = await method(*args, _preload_content=False, **kwargs)
            body = await resp.read()
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ApiException) as e:
            raise BackendError(f"{what}: cannot reach the Kubernetes API server: {e}") from e
        if resp.status == 404 and missing_ok:
            return None
        if not 200 <= resp.status < 300:
            raise Refused(resp.status, f"{what} in namespace {self.namespace} failed: "
                                       f"{resp.status} {_message(body)}")
        return body.decode(errors="replace") if text else json.loads(body)

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        api = await self._connect()
        notes = {**self.tags, m.OWNER_PID: str(os.getpid()),
                 m.SHUTDOWN_ON_CLOSE: str(cluster.shutdown_on_close).lower()}
        body = m.cluster_secret(cluster, self.namespace, notes)
        try:
            secret = await self._call(f"creating Secret {cluster.name}", api.create_namespaced_secret,
                                      self.namespace, body)
        except Refused as e:
            # Refused: whatever Secret has this name is not ours (unless we adopt it).
            if e.status == 409 and (secret := await self._adopt(cluster)) is not None:
                pass
            elif e.status == 409:
                raise BackendError(
                    f"a cluster named {cluster.name!r} already exists in namespace {self.namespace} "
                    f"(Secret {cluster.name}); choose another name, or remove it with "
                    f"`dask-deploy gc` / `kubectl delete secret {cluster.name}`") from e
            elif e.status in (401, 403):
                raise BackendError(f"{e}; see rbac.yaml for the permissions the backend needs") from e
            else:
                raise
        except BaseException:
            # Cancelled (or cut off) while the request was in flight: the API server may
            # have made the Secret. Ours alone, since the name was free: delete it.
            with contextlib.suppress(Exception):
                await self._call("deleting Secret", api.delete_namespaced_secret, cluster.name,
                                 self.namespace, missing_ok=True)
            raise
        self.owner = m.owner_reference(secret)
        self.watch = PodWatch(api, self.namespace, m.selector(cluster.name))
        self.watch.start()
        try:
            await asyncio.wait_for(self.watch.synced.wait(), cluster.start_timeout)
        except asyncio.TimeoutError:
            raise BackendError(f"cannot watch pods in namespace {self.namespace}: "
                               f"{self.watch.error}") from None

    async def _adopt(self, cluster: ClusterSpec) -> dict[str, Any] | None:
        """The Secret of a detached cluster of this name, taken over (re-attach); else None."""
        secret = await self._call(f"reading Secret {cluster.name}", self.api.read_namespaced_secret,
                                  cluster.name, self.namespace, missing_ok=True)
        meta = (secret or {}).get("metadata") or {}
        if (meta.get("labels") or {}).get(m.CLUSTER) != cluster.name or \
                (meta.get("annotations") or {}).get(m.DETACHED) != "true":
            return None
        await self._call(f"re-attaching to Secret {cluster.name}", self.api.patch_namespaced_secret,
                         cluster.name, self.namespace,
                         {"metadata": {"annotations": {m.DETACHED: None, m.OWNER_PID: str(os.getpid())}}},
                         _content_type="application/merge-patch+json")
        self.worker_address = meta["annotations"].get(m.ADDRESS)
        return secret  # type: ignore[no-any-return]

    async def _create_pod(self, body: dict[str, Any], what: str) -> dict[str, Any]:
        assert self.watch is not None
        pod: dict[str, Any] = await self._call(what, self.api.create_namespaced_pod, self.namespace, body)
        self.watch.created(pod)
        return pod

    # -- scheduler ------------------------------------------------------------------------

    def _port_forward(self) -> bool:
        """Whether the scheduler is reached through a port-forward (default: out of the cluster)."""
        return self.opts.port_forward if self.opts.port_forward is not None else not self.in_cluster

    @hookimpl
    async def deploy_start_scheduler(self, cluster: ClusterSpec) -> SchedulerInfo:
        assert self.owner is not None and self.watch is not None
        ns = self.namespace
        # What this call makes, by the names it asks for: if it raises (or is cancelled),
        # also while a create request is in flight, it deletes them (missing ones are fine).
        handle = Handle(cluster.backend, cluster.name, f"{cluster.name}-scheduler",
                        f"{cluster.name}-scheduler",
                        {"namespace": ns, "kind": "Pod", "role": "scheduler",
                         "service": m.service_name(cluster)})
        try:
            svc = await self._call("creating the scheduler Service", self.api.create_namespaced_service,
                                   ns, m.scheduler_service(cluster, ns, self.owner, self.tags))
            await self._create_pod(m.scheduler_pod(cluster, ns, self.owner, self.tags,
                                                   port_forward=self._port_forward()),
                                   "creating the scheduler pod")
            return await self._await_scheduler(cluster, handle, svc)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.deploy_stop_scheduler(cluster, handle)
            raise

    async def _await_scheduler(self, cluster: ClusterSpec, handle: Handle,
                               svc: dict[str, Any]) -> SchedulerInfo:
        assert self.watch is not None
        name = handle.backend_id
        deadline = time.monotonic() + cluster.start_timeout

        def settled() -> bool:
            return m.pod_status(self.watch.get(name) if self.watch else None).phase is not _Phase.PENDING

        await self.watch.wait_for(settled, max(0.0, deadline - time.monotonic()))
        status = m.pod_status(self.watch.get(name), self.watch.is_deleted(name))
        if status.phase is not _Phase.RUNNING:
            log = await self._safe_logs(cluster, handle)
            what = (f"did not start within {cluster.start_timeout:g}s ({status.reason or 'pending'})"
                    if status.phase is _Phase.PENDING else f"failed: {status.reason}")
            err = StartTimeout if status.phase is _Phase.PENDING else BackendError
            raise err(f"the scheduler pod {name} of {cluster.name} {what}; its log:\n{log[-2000:]}")
        proto = "tls" if cluster.tls else "tcp"
        port = cluster.scheduler.port or m.SCHEDULER_PORT
        self.worker_address = f"{proto}://{svc['spec']['clusterIP']}:{port}"
        forward = self._port_forward()
        dashboard = None
        if forward:
            comm = PortForward(self.ws_api, self.namespace, name, port)
            self.forwards.append(comm)
            address = f"{proto}://127.0.0.1:{await comm.start()}"
            if cluster.scheduler.dashboard_address is not None:
                dashboard = await self._forward_dashboard(name)
        else:
            address = self.worker_address
            if cluster.scheduler.dashboard_address is not None:
                dashboard = f"{svc['spec']['clusterIP']}:{m.DASHBOARD_PORT}"
        await self._await_answer(cluster, handle, address, deadline)
        return SchedulerInfo(handle, address, dashboard)

    async def _await_answer(self, cluster: ClusterSpec, handle: Handle, address: str,
                            deadline: float) -> None:
        """Wait until the scheduler answers at ``address`` (it runs but may not listen yet)."""
        from distributed.core import rpc

        security = cluster.tls.security() if cluster.tls else None
        args = security.get_connection_args("client") if security else {}
        last: list[Exception] = []

        async def answers() -> bool | None:
            status = m.pod_status(self.watch.get(handle.backend_id) if self.watch else None)
            if status.phase is not _Phase.RUNNING:
                raise BackendError(f"its pod is {status.phase.value}: {status.reason}")
            try:
                async with rpc(address, connection_args=args, timeout=5) as r:
                    await asyncio.wait_for(r.identity(), 10)
                return True
            except Exception as e:  # refused, reset, TLS on a closed stream (tornado: ValueError)
                last[:] = [e]
                return None

        try:
            await wait_until(answers, max(0.0, deadline - time.monotonic()),
                             f"the scheduler of {cluster.name} answering at {address}", interval=0.2,
                             why=lambda: str(last[0]) if last else "")
        except BackendError as e:
            log = await self._safe_logs(cluster, handle)
            raise type(e)(f"{e}; its log:\n{log[-2000:]}") from e

    @hookimpl
    async def deploy_stop_scheduler(self, cluster: ClusterSpec, handle: Handle) -> None:
        for forward in self.forwards:
            await forward.close()
        self.forwards.clear()
        await self._delete_pods(cluster, [handle.backend_id])
        service = handle.data.get("service", m.service_name(cluster))
        await self._call(f"deleting Service {service}", self.api.delete_namespaced_service,
                         service, self.namespace, missing_ok=True)

    # -- workers --------------------------------------------------------------------------

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        assert self.owner is not None
        address = self.worker_address or scheduler_address
        results = await asyncio.gather(*(
            self._create_pod(m.worker_pod(cluster, self.namespace, self.owner, unit, address, self.tags),
                             f"creating the pod of {unit.name}") for unit in units),
            return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            made = [r["metadata"]["name"] for r in results if isinstance(r, dict)]
            with contextlib.suppress(Exception):
                await self._delete_pods(cluster, made)
            raise BackendError(str(failed[0])) from failed[0]
        return [Handle(cluster.backend, cluster.name, unit.name, pod["metadata"]["name"],
                       {"namespace": self.namespace, "kind": "Pod", "role": "worker",
                        "workers": list(unit.worker_names)})
                for unit, pod in zip(units, results, strict=True) if isinstance(pod, dict)]

    async def _delete_pods(self, cluster: ClusterSpec, names: Sequence[str]) -> None:
        """Delete pods, keeping their logs (a pod's log goes with it), and wait until gone.

        The log is read just before the delete: a running pod's last lines (its shutdown) are
        lost, but a pod that died, which is the one worth reading later, has written all.
        """
        watch = self.watch

        async def keep_log(name: str) -> None:
            pod = watch.get(name) if watch else None
            if pod is not None:
                with contextlib.suppress(BackendError):
                    self.logs[name] = await self._read_logs(pod)

        await asyncio.gather(*(keep_log(n) for n in names))
        while len(self.logs) > 200:
            self.logs.popitem(last=False)
        await asyncio.gather(*(self._call(f"deleting pod {n}", self.api.delete_namespaced_pod,
                                          n, self.namespace, missing_ok=True) for n in names))
        timeout = self.opts.stop_grace + 30
        if watch is not None:
            gone = await watch.wait_for(lambda: not any(watch.get(n) for n in names), timeout)
        else:
            gone = await self._poll_gone("pod", names, timeout)
        if not gone:
            raise BackendError(f"pods {list(names)} of {cluster.name} are still there {timeout}s "
                               "after they were deleted")

    async def _poll_gone(self, kind: str, names: Sequence[str], timeout: float) -> bool:
        """Without a watch (gc from another process): read until each object is gone."""
        read = {"pod": self.api.read_namespaced_pod, "service": self.api.read_namespaced_service,
                "secret": self.api.read_namespaced_secret}[kind]
        deadline = time.monotonic() + timeout
        for name in names:
            while await self._call(f"reading {kind} {name}", read, name, self.namespace,
                                   missing_ok=True) is not None:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.2)
        return True

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        pods = [h.backend_id for h in handles if h.data.get("kind", "Pod") == "Pod"]
        if pods:
            await self._connect()
            await self._delete_pods(cluster, pods)
        for h in handles:  # discovered Services and Secrets (dask-deploy gc)
            kind = h.data.get("kind")
            if kind in ("Service", "Secret"):
                delete = (self.api.delete_namespaced_service if kind == "Service"
                          else self.api.delete_namespaced_secret)
                await self._call(f"deleting {kind} {h.backend_id}", delete,
                                 h.backend_id, h.data.get("namespace", self.namespace), missing_ok=True)
                if kind == "Secret":  # its dependents go with it
                    await self._wait_empty(h.cluster, self.opts.stop_grace + 30)

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        watch = self.watch
        if watch is None:
            raise BackendError(f"the pod watch of {cluster.name} is not running")
        if watch.error is not None:
            raise BackendError(f"lost the watch on the pods of {cluster.name} in namespace "
                               f"{self.namespace}: {watch.error}")
        return [m.pod_status(watch.get(h.backend_id), watch.is_deleted(h.backend_id)) for h in handles]

    # -- logs, dashboard, discovery, teardown --------------------------------------------

    async def _read_logs(self, pod: dict[str, Any]) -> str:
        name = pod["metadata"]["name"]
        containers = [c["name"] for c in pod["spec"]["containers"]]
        parts = []
        for container in containers:
            try:
                text = await self._call(f"reading the log of pod {name}", self.api.read_namespaced_pod_log,
                                        name, self.namespace, container=container, text=True)
            except Refused as e:
                if e.status == 404:
                    raise BackendError(f"the pod {name} is gone, and its log with it") from e
                if e.status != 400:  # 400: not started yet, nothing written
                    raise
                text = ""
            parts.append(text if len(containers) == 1 else f"==> {container} <==\n{text}")
        return "\n".join(parts)

    async def _safe_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        try:
            return await self.deploy_get_logs(cluster, handle)
        except BackendError as e:
            return f"(no log: {e})"

    @hookimpl
    async def deploy_get_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        name = handle.backend_id
        if name in self.logs:
            return self.logs[name]
        api = await self._connect()
        pod = self.watch.get(name) if self.watch else None
        if pod is None:
            pod = await self._call(f"reading pod {name}", api.read_namespaced_pod, name, self.namespace,
                                   missing_ok=True)
            if pod is None:
                raise BackendError(f"the pod {name} is gone, and its log with it")
        return await self._read_logs(pod)

    @hookimpl
    async def deploy_reattach(self, cluster: ClusterSpec, scheduler: SchedulerInfo) -> str | None:
        """Out of the cluster, a recorded scheduler is reached through a new port-forward to
        its pod (the one recorded was this client's predecessor's); inside, as recorded."""
        await self._connect()
        if not self._port_forward():
            return None
        proto = scheduler.address.partition("://")[0] or "tcp"
        comm = PortForward(self.ws_api, self.namespace, scheduler.handle.backend_id,
                           cluster.scheduler.port or m.SCHEDULER_PORT)
        self.forwards.append(comm)
        return f"{proto}://127.0.0.1:{await comm.start()}"

    async def _forward_dashboard(self, pod: str) -> str:
        dash = PortForward(self.ws_api, self.namespace, pod, m.DASHBOARD_PORT)
        self.forwards.append(dash)
        self.dashboard_forward = f"127.0.0.1:{await dash.start()}"
        return self.dashboard_forward

    @hookimpl
    async def deploy_dashboard_route(self, cluster: ClusterSpec, scheduler: SchedulerInfo) -> str | None:
        if not scheduler.dashboard_address:
            return None
        if self._port_forward() and self.dashboard_forward is None:
            # Re-attached: the recorded address is the end of the forward that the process
            # which started the cluster held, gone with it; open this process's own.
            return f"http://{await self._forward_dashboard(scheduler.handle.backend_id)}"
        return f"http://{self.dashboard_forward or scheduler.dashboard_address}"

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        """Pods, Services and Secrets by label, with their owner tags and what ``gc`` judges
        liveness by, per cluster: whether its scheduler pod runs (``scheduler_running``, for
        a remote scheduler), the creating client's pid while it holds the cluster
        (``owner_pid``) and whether it was started to outlive its client (``detached``)."""
        api = await self._connect()
        sel = m.selector(cluster_id)
        out = []
        liveness: dict[str, dict[str, Any]] = {}
        for kind, call in (("Pod", api.list_namespaced_pod), ("Service", api.list_namespaced_service),
                           ("Secret", api.list_namespaced_secret)):
            listing = await self._call(f"listing {kind}s", call, self.namespace, label_selector=sel)
            for item in listing.get("items") or []:
                meta = item["metadata"]
                labels = meta.get("labels") or {}
                notes = meta.get("annotations") or {}
                cid = labels.get(m.CLUSTER, "")
                role = labels.get(m.ROLE, "")
                name = labels.get(m.UNIT) or (f"{cid}-scheduler" if role == "scheduler" and kind == "Pod"
                                              else meta["name"])
                data: dict[str, Any] = {"namespace": meta.get("namespace", self.namespace),
                                        "kind": kind, "role": role}
                if m.OWNER in notes:
                    data["owner"] = notes[m.OWNER]
                with contextlib.suppress(KeyError, ValueError):
                    data["created"] = float(notes[m.CREATED])
                out.append(Handle(cluster.backend, cid, name, meta["name"], data))
                live = liveness.setdefault(cid, {})
                if kind == "Pod" and role == "scheduler":
                    live["scheduler_running"] = m.pod_status(item).phase is _Phase.RUNNING
                elif kind == "Service" and role == "scheduler":
                    live.setdefault("scheduler_running", False)  # a remote scheduler: is its pod there?
                elif kind == "Secret":
                    with contextlib.suppress(KeyError, ValueError):
                        live["owner_pid"] = int(notes[m.OWNER_PID])
                    if m.SHUTDOWN_ON_CLOSE in notes or m.DETACHED in notes:
                        live["detached"] = (notes.get(m.SHUTDOWN_ON_CLOSE) == "false"
                                            or notes.get(m.DETACHED) == "true")
        # A cluster is judged as a whole: every object carries its cluster's liveness.
        return [dataclasses.replace(h, data={**liveness.get(h.cluster, {}), **h.data}) for h in out]

    async def _wait_empty(self, cluster_id: str, timeout: float) -> bool:
        """Wait until nothing labelled with ``cluster_id`` is left (through the watch for pods)."""
        deadline = time.monotonic() + timeout
        watch = self.watch if self.watch is not None and cluster_id == self.spec.name else None
        if watch is not None and not await watch.wait_for(lambda: not watch.pods, timeout):
            return False
        while time.monotonic() < deadline:
            if not await self.deploy_discover(self.spec, cluster_id):
                return True
            await asyncio.sleep(0.2)
        return False

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        # The core calls this once, after every creating call returned and what they made
        # was stopped: what is left here is cluster-wide (the Secret) and our connections.
        for forward in self.forwards:
            with contextlib.suppress(Exception):
                await forward.close()
        self.forwards.clear()
        if not cluster.shutdown_on_close and self.api is not None and self.owner is not None:
            # Detached: mark it, so that attach may adopt it, with the address pods dial; its
            # client lets go of it (gc then judges it by its scheduler).
            notes = {m.DETACHED: "true", m.OWNER_PID: None,
                     **({m.ADDRESS: self.worker_address} if self.worker_address else {})}
            with contextlib.suppress(Exception):
                await self._call("marking the cluster detached", self.api.patch_namespaced_secret,
                                 cluster.name, self.namespace, {"metadata": {"annotations": notes}},
                                 _content_type="application/merge-patch+json")
        if cluster.shutdown_on_close and self.api is not None and self.owner is not None:
            with contextlib.suppress(Exception):
                # Deleting the parent lets the garbage collector remove whatever is left, even
                # if we fail below; deleting the rest directly is quicker than waiting for it.
                await self._call("deleting the cluster Secret", self.api.delete_namespaced_secret,
                                 cluster.name, self.namespace, missing_ok=True)
                await self._call("deleting the cluster's pods", self.api.delete_collection_namespaced_pod,
                                 self.namespace, label_selector=m.selector(cluster.name))
                await self._call("deleting the scheduler Service", self.api.delete_namespaced_service,
                                 m.service_name(cluster), self.namespace, missing_ok=True)
                await self._wait_empty(cluster.name, self.opts.stop_grace + 30)
        if self.watch is not None:
            await self.watch.stop()
            self.watch = None
        for api in (self.api, self.ws_api):
            if api is not None:
                with contextlib.suppress(Exception):
                    await api.api_client.close()
        self.api = self.ws_api = None
