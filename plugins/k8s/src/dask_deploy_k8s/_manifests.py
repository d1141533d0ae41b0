"""What the backend asks Kubernetes for, as plain dicts, and how it reads pods back (pure).

Every object of a cluster carries the labels :data:`MANAGED_BY` and :data:`CLUSTER`, and
every object but the cluster's Secret has an ``ownerReference`` to that Secret: deleting the
Secret lets Kubernetes' garbage collector remove the rest, even if this process is gone.
The Secret also holds the cluster's TLS certificate and key, which pods mount as files:
they never appear in a pod's spec, env or command line.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from dask_deploy import ClusterSpec, Phase, Status, Unit, WorkerSpec
from dask_deploy.toolkit import scheduler_kwargs, worker_kwargs, worker_role

from ._options import K8sOptions

__all__ = ["BOOTSTRAP", "CLUSTER", "MANAGED_BY", "ROLE", "TLS_DIR", "UNIT", "cluster_secret",
           "owner_reference", "pod_status", "scheduler_pod", "scheduler_service", "selector",
           "service_name", "worker_pod"]

Obj = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
CLUSTER = "dask-deploy/cluster"
ROLE = "dask-deploy/role"
UNIT = "dask-deploy/unit"
#: Annotation on the Secret of a detached cluster (no client owns it; one may re-attach).
DETACHED = "dask-deploy/detached"
#: Annotation on the Secret of a detached cluster: the scheduler's address as pods dial it.
ADDRESS = "dask-deploy/scheduler-address"
#: Ownership annotations on every object (``user@host`` cannot be a label value: '@').
OWNER = "dask-deploy/owner"
CREATED = "dask-deploy/created"
#: Annotations on the Secret that ``gc`` judges liveness by: the creating client's pid
#: (removed when it lets go of a detached cluster) and ``shutdown_on_close``.
OWNER_PID = "dask-deploy/owner-pid"
SHUTDOWN_ON_CLOSE = "dask-deploy/shutdown-on-close"
TLS_DIR = "/etc/dask-deploy/tls"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787

#: Runs a scheduler or worker inside the image with only ``distributed`` installed (no need
#: for dask-deploy in the image). argv: role (scheduler, worker, or nanny: a Nanny that
#: spawns the worker, ``toolkit.worker_role``), JSON keyword arguments. TLS files come from
#: the mounted Secret. SIGTERM closes the server cleanly (a worker tells the scheduler first).
BOOTSTRAP = """\
import asyncio, json, os, signal, sys
from distributed import Nanny, Scheduler, Worker
role, kwargs = sys.argv[1], json.loads(sys.argv[2])
tls = os.environ.get("DASK_DEPLOY_TLS_DIR")
if tls:
    from distributed.security import Security
    c, k = os.path.join(tls, "tls.crt"), os.path.join(tls, "tls.key")
    kwargs["security"] = Security(require_encryption=True, tls_ca_file=c, tls_client_cert=c,
        tls_client_key=k, tls_scheduler_cert=c, tls_scheduler_key=k, tls_worker_cert=c,
        tls_worker_key=k)
    if role == "scheduler":
        kwargs["protocol"] = "tls"
async def main():
    server = {"scheduler": Scheduler, "nanny": Nanny}.get(role, Worker)(**kwargs)
    async with server:
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: asyncio.ensure_future(server.close()))
        await server.finished()
asyncio.run(main())
"""

#: Waiting reasons that mean the pod will not come up by itself.
_FAILED_WAITING = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})


def selector(cluster: str | None, **more: str) -> str:
    """The label selector of everything dask-deploy made (for ``cluster``, if given)."""
    parts = [f"{MANAGED_BY}=dask-deploy"]
    if cluster is not None:
        parts.append(f"{CLUSTER}={cluster}")
    parts += [f"{k}={v}" for k, v in more.items()]
    return ",".join(parts)


def _labels(spec: ClusterSpec, role: str, **more: str) -> dict[str, str]:
    opts = spec.backend_options or K8sOptions()
    return {**opts.labels, MANAGED_BY: "dask-deploy", CLUSTER: spec.name, ROLE: role, **more}


def service_name(spec: ClusterSpec) -> str:
    # Service names must start with a letter (RFC 1035); cluster names may start with a digit.
    return spec.name if spec.name[0].isalpha() else f"dask-{spec.name}"


def _meta(annotations: Mapping[str, str] | None) -> Obj:
    return {"annotations": dict(annotations)} if annotations else {}


def cluster_secret(spec: ClusterSpec, namespace: str, annotations: Mapping[str, str] | None = None
                   ) -> Obj:
    """The cluster's parent object: owner of everything else, holder of the TLS identity."""
    data = {}
    if spec.tls is not None:
        data = {"tls.crt": base64.b64encode(spec.tls.cert.encode()).decode(),
                "tls.key": base64.b64encode(spec.tls.key.encode()).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
            "metadata": {"name": spec.name, "namespace": namespace,
                         "labels": _labels(spec, "cluster"), **_meta(annotations)}}


def owner_reference(secret: Obj) -> Obj:
    meta = secret["metadata"]
    return {"apiVersion": "v1", "kind": "Secret", "name": meta["name"], "uid": meta["uid"]}


def scheduler_service(spec: ClusterSpec, namespace: str, owner: Obj,
                      annotations: Mapping[str, str] | None = None) -> Obj:
    opts = spec.backend_options or K8sOptions()
    port = spec.scheduler.port or SCHEDULER_PORT
    ports = [{"name": "comm", "port": port, "targetPort": port, "protocol": "TCP"}]
    if spec.scheduler.dashboard_address is not None:
        ports.append({"name": "dashboard", "port": DASHBOARD_PORT, "targetPort": DASHBOARD_PORT,
                      "protocol": "TCP"})
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service_name(spec), "namespace": namespace,
                         "labels": _labels(spec, "scheduler"), "ownerReferences": [owner],
                         **_meta(annotations)},
            "spec": {"type": opts.service_type, "ports": ports,
                     "selector": {CLUSTER: spec.name, ROLE: "scheduler"}}}


def _pod(spec: ClusterSpec, namespace: str, owner: Obj, name: dict[str, str], labels: dict[str, str],
         containers: list[Obj], annotations: Mapping[str, str] | None,
         opts: K8sOptions | None = None) -> Obj:
    """``opts``: the options of the pod's pool (default: the cluster's)."""
    opts = opts or spec.backend_options or K8sOptions()
    volumes = []
    if spec.tls is not None:
        # 0440 and fsGroup: readable by the container's user also when it is not root.
        volumes.append({"name": "dask-tls", "secret": {"secretName": spec.name, "defaultMode": 0o440}})
        for c in containers:
            c["volumeMounts"] = [{"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True}]
            c["env"].append({"name": "DASK_DEPLOY_TLS_DIR", "value": TLS_DIR})
    pod_spec: Obj = {"restartPolicy": "Never", "terminationGracePeriodSeconds": opts.stop_grace,
                     "automountServiceAccountToken": False, "containers": containers,
                     **({"volumes": volumes} if volumes else {})}
    if opts.fs_group is not None:
        pod_spec["securityContext"] = {"fsGroup": opts.fs_group}
    for key, value in opts.pod_spec.items():
        if key == "volumes":
            pod_spec[key] = [*pod_spec.get(key, []), *value]
        elif key == "securityContext" and isinstance(value, Mapping):
            pod_spec[key] = {**pod_spec.get(key, {}), **value}
        else:
            pod_spec[key] = value
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**name, "namespace": namespace, "labels": labels, "ownerReferences": [owner],
                         **_meta(annotations)},
            "spec": pod_spec}


def _env(env: Mapping[str, str]) -> list[Obj]:
    return [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            *({"name": k, "value": v} for k, v in env.items())]


def _command(spec: ClusterSpec, role: str, kwargs: Mapping[str, Any]) -> list[str]:
    opts = spec.backend_options or K8sOptions()
    return [opts.python, "-c", BOOTSTRAP, role, json.dumps(kwargs, sort_keys=True)]


def scheduler_pod(spec: ClusterSpec, namespace: str, owner: Obj,
                  annotations: Mapping[str, str] | None = None, *, port_forward: bool = False) -> Obj:
    """``port_forward``: whether the client reaches the pod through a port-forward (the
    dashboard then listens on the pod's loopback only, unless ``dashboard_listen_address``)."""
    s = spec.scheduler
    opts = spec.backend_options or K8sOptions()
    host = opts.listen_address
    dash_host = opts.dashboard_listen_address or ("127.0.0.1" if port_forward else "$(POD_IP)")
    port = s.port or SCHEDULER_PORT
    # In the pod: listen on ``listen_address`` and the well-known ports.
    kwargs = {**scheduler_kwargs(s), "host": host, "port": port,
              "dashboard_address": f"{dash_host}:{DASHBOARD_PORT}"}
    container = {
        "name": "scheduler", "image": spec.worker.image, "command": _command(spec, "scheduler", kwargs),
        "env": _env({}),
        "ports": [{"name": "comm", "containerPort": port, "protocol": "TCP"},
                  {"name": "dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"}],
    }
    return _pod(spec, namespace, owner, {"name": f"{spec.name}-scheduler"},
                _labels(spec, "scheduler"), [container], annotations)


def _resources(w: WorkerSpec) -> Obj:
    requests: dict[str, str] = {"cpu": str(w.nthreads)}
    limits: dict[str, str] = {}
    if isinstance(w.memory_limit, int):
        requests["memory"] = limits["memory"] = str(w.memory_limit)
    if w.gpus:
        limits["nvidia.com/gpu"] = str(w.gpus)
    return {"requests": requests, **({"limits": limits} if limits else {})}


def worker_pod(spec: ClusterSpec, namespace: str, owner: Obj, unit: Unit, scheduler_address: str,
               annotations: Mapping[str, str] | None = None) -> Obj:
    """One pod per unit, one container per worker of the unit."""
    containers = []
    for name, w in zip(unit.worker_names, unit.workers, strict=True):
        kwargs = worker_kwargs(spec, scheduler_address, name, w, host="$(POD_IP)")
        env = dict(w.env)
        if w.gpus:
            # The device plugin decides which GPU a container sees and sets this itself.
            env.pop("CUDA_VISIBLE_DEVICES", None)
        containers.append({
            "name": re.sub(r"[^a-z0-9-]", "-", f"worker{w.suffix}".lower())[:63].rstrip("-"),
            "image": w.image or spec.worker.image,
            "command": _command(spec, worker_role(w), kwargs), "env": _env(env),
            "resources": _resources(w),
        })
    # A pool's own pod_spec (nodeSelector, tolerations) replaces the cluster's for its pods.
    return _pod(spec, namespace, owner, {"generateName": f"{unit.name}-"},
                _labels(spec, "worker", **{UNIT: unit.name}), containers, annotations,
                spec.options_of(unit.pool))


def pod_status(pod: Obj | None, gone: bool = False) -> Status:
    """The core's view of one pod: pending, running, failed (with Kubernetes' reason) or gone."""
    if pod is None:
        return Status(Phase.GONE, "deleted") if gone else Status(Phase.PENDING, "created")
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _FAILED_WAITING:
            message = f": {waiting['message']}" if waiting.get("message") else ""
            return Status(Phase.FAILED, f"container {cs.get('name')}: {waiting['reason']}{message}")
    if phase == "Failed":
        for cs in status.get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term and term.get("exitCode", 0) != 0:
                why = term.get("reason") or "Error"
                message = f": {term['message']}" if term.get("message") else ""
                return Status(Phase.FAILED, f"container {cs.get('name')} exited with code "
                                            f"{term.get('exitCode')} ({why}){message}")
        return Status(Phase.FAILED, f"pod failed: {status.get('reason') or 'unknown'}: "
                                    f"{status.get('message', '')}".rstrip(": "))
    if phase == "Succeeded":
        return Status(Phase.GONE, "exited with code 0")
    if meta.get("deletionTimestamp"):
        return Status(Phase.GONE, "being deleted")
    if phase == "Running":
        return Status(Phase.RUNNING)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return Status(Phase.PENDING, f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}")
    return Status(Phase.PENDING, phase if phase != "Pending" else "")
