"""The k8s backend's own options (importable without the Kubernetes client)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from dask_deploy import Alias, CompatTable, Convert, SpecError

__all__ = ["K8S_COMPAT", "K8sOptions"]


def _cpu(value: object) -> int:
    """A Kubernetes CPU quantity ("2", "500m", 1.5) as whole threads (at least 1)."""
    text = str(value).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise SpecError("resources", value, 'expected a CPU quantity such as "2" or "500m"') \
            from None
    return max(1, math.ceil(cores))


def _container_resources(value: object) -> dict[str, Any] | None:
    """dask-kubernetes' ``resources`` (container requests/limits) as our worker options.

    Here ``resources`` means Dask worker resources (``{"GPU": 1}``), and a pod's container
    resources follow from ``threads_per_worker`` (request), ``memory_limit`` (request and
    limit) and ``gpus`` (``nvidia.com/gpu`` limit). The limits win over the requests.
    """
    if not isinstance(value, Mapping) or not value or not set(value) <= {"limits", "requests"}:
        return None  # Dask worker resources: ours already
    out: dict[str, Any] = {}
    for part in ("requests", "limits"):
        spec = value.get(part) or {}
        if not isinstance(spec, Mapping):
            raise SpecError("resources", value, f"expected {part} to be a mapping")
        if "cpu" in spec:
            out["threads_per_worker"] = _cpu(spec["cpu"])
        if "memory" in spec:
            out["memory_limit"] = str(spec["memory"])
        if "nvidia.com/gpu" in spec:
            out["gpus"] = int(spec["nvidia.com/gpu"])
    return out


def _worker_command(value: object) -> dict[str, Any]:
    if value in ("dask-worker", "dask worker", ["dask-worker"], ["dask", "worker"]):
        return {}
    raise SpecError("worker_command", value, "workers run `python -m distributed.cli.dask_worker` "
                    "(python= names the interpreter in the image); for GPU workers use gpus=")


#: dask-kubernetes' ``KubeCluster`` (operator and classic) and its ``kubernetes`` config.
K8S_COMPAT = CompatTable(
    anchor="dask-kubernetes KubeCluster",
    config=("kubernetes",),
    entries=(
        *(Alias(n, n, "same") for n in ("namespace", "n_workers", "shutdown_on_close",
                                        "idle_timeout")),
        *(Alias(n, n, "same", where="option") for n in ("asynchronous", "loop", "quiet")),
        Alias("name", "name", "same", anchor_default="dask-{user}-{uuid}"),
        Alias("image", "image", "same", anchor_default="ghcr.io/dask/dask:latest"),
        Alias("env", "env", "same", convert=Convert.env,
              reason='a list of {"name": ..., "value": ...} becomes a mapping'),
        Alias("resources", "threads_per_worker", "warn", convert=_container_resources,
              reason="container requests/limits follow threads_per_worker, memory_limit and "
                     "gpus; resources= means Dask worker resources here"),
        Alias("worker_command", None, "same", convert=_worker_command,
              reason='"dask-worker" only', anchor_default="dask-worker"),
        Alias("port_forward_cluster_ip", "port_forward", "same"),
        Alias("scheduler_service_type", "service_type", "same"),
        Alias("create_mode", None, "same", anchor_default="CREATE_OR_CONNECT",
              convert=Convert.one_of("create_mode", {"CREATE_OR_CONNECT": {}, "CREATE_ONLY": {}},
                                     "to reach a running cluster use dask_deploy.attach(name)"),
              reason="CREATE_OR_CONNECT/CREATE_ONLY; CONNECT_ONLY is dask_deploy.attach(name)"),
        Alias("resource_timeout", "start_timeout", "warn", anchor_default=60,
              convert=Convert.to("start_timeout", Convert.seconds),
              reason="seconds a pod may run without its worker connecting"),
        Alias("scheduler_forward_port", None, "warn",
              reason="the port-forward binds a free local port; cluster.dashboard_link is "
                     "the dashboard's address"),
        Alias("deploy_mode", "scheduler", "same", where="option",
              convert=Convert.one_of("deploy_mode", {"local": {"scheduler": "local"},
                                                     "remote": {"scheduler": "remote"}},
                                     'expected "local" or "remote"')),
        Alias("custom_cluster_spec", None, "refuse",
              reason="dask-deploy creates pods, not DaskCluster resources (no operator needed): "
                     "use image, env, pod_spec and labels"),
        Alias("jupyter", None, "refuse", where="option",
              reason="no Jupyter server runs in the scheduler pod"),
        Alias("scheduler_jupyter", None, "refuse", where="config", anchor_default=False,
              reason="no Jupyter server runs in the scheduler pod"),
        Alias("pod_template", None, "refuse", where="option",
              reason="the classic KubeCluster's templates are gone from dask-kubernetes too: use "
                     "image, env, pod_spec (nodeSelector, tolerations...) and labels"),
        Alias("scheduler_pod_template", None, "refuse", where="option",
              reason="use image, env, pod_spec and labels (pods are made by the backend)"),
    ),
)

_NS = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


@dataclass(frozen=True)
class K8sOptions:
    """Options of the ``k8s`` backend beyond the generic ones.

    Connection: ``kubeconfig`` and ``context`` (default: ``$KUBECONFIG`` or
    ``~/.kube/config``, or the pod's service account when running inside a cluster);
    ``namespace`` (default: the context's namespace, else ``default``).
    """

    #: dask-kubernetes' names and ``kubernetes`` config keys, translated by the core.
    anchor_compat: ClassVar[CompatTable] = K8S_COMPAT

    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    #: The interpreter inside the image that runs the scheduler and workers.
    python: str = "python"
    #: Reach the scheduler through a local port-forward (None: yes unless running in-cluster).
    port_forward: bool | None = None
    #: Where a scheduler pod listens: all its addresses, since the Service reaches it on the
    #: pod IP and a port-forward on the pod's localhost. (The generic ``host`` option is for
    #: a scheduler in this process.)
    listen_address: str = "0.0.0.0"
    #: Where the scheduler pod's dashboard (plain HTTP) listens. None: the pod's loopback
    #: when the client reaches it through a port-forward (which dials the pod's localhost; no
    #: other pod can), else the pod's own address ``$(POD_IP)``, which the Service reaches.
    #: The core's dashboard proxy is in front either way.
    dashboard_listen_address: str | None = None
    #: ``fsGroup`` of every pod: the group that may read the mounted TLS Secret (mode 0440),
    #: so a container running as a non-root user can read it. None: leave it unset.
    fs_group: int | None = 1000
    #: Type of the scheduler's Service.
    service_type: str = "ClusterIP"
    #: Seconds a deleted pod gets to leave cleanly (``terminationGracePeriodSeconds``).
    stop_grace: int = 5
    #: Extra fields merged into every pod's ``spec`` (nodeSelector, tolerations,
    #: serviceAccountName, imagePullSecrets, ...).
    pod_spec: Mapping[str, Any] = field(default_factory=dict)
    #: Extra labels on everything the cluster creates.
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.namespace is not None and (
                not isinstance(self.namespace, str) or not _NS.match(self.namespace)):
            raise SpecError("namespace", self.namespace,
                            "expected a Kubernetes namespace name (RFC 1123 label)")
        for option in ("kubeconfig", "context"):
            value = getattr(self, option)
            if value is not None and (not isinstance(value, str) or not value):
                raise SpecError(option, value, "expected a non-empty string or None")
        if not isinstance(self.python, str) or not self.python:
            raise SpecError("python", self.python, "expected the interpreter to run inside the image")
        if not isinstance(self.listen_address, str) or not self.listen_address:
            raise SpecError("listen_address", self.listen_address, 'expected an address such as "0.0.0.0"')
        if self.dashboard_listen_address is not None and (
                not isinstance(self.dashboard_listen_address, str)
                or not self.dashboard_listen_address):
            raise SpecError("dashboard_listen_address", self.dashboard_listen_address,
                            'expected an address such as "$(POD_IP)" or "127.0.0.1", or None')
        if self.fs_group is not None and (isinstance(self.fs_group, bool)
                                          or not isinstance(self.fs_group, int) or self.fs_group < 0):
            raise SpecError("fs_group", self.fs_group, "expected a group id >= 0, or None")
        if self.port_forward not in (None, True, False):
            raise SpecError("port_forward", self.port_forward, "expected True, False or None (automatic)")
        if self.service_type not in _SERVICE_TYPES:
            raise SpecError("service_type", self.service_type, f"expected one of {list(_SERVICE_TYPES)}")
        if isinstance(self.stop_grace, bool) or not isinstance(self.stop_grace, int) or self.stop_grace < 0:
            raise SpecError("stop_grace", self.stop_grace, "expected whole seconds >= 0")
        if not isinstance(self.pod_spec, Mapping):
            raise SpecError("pod_spec", self.pod_spec, "expected a mapping of pod spec fields")
        if "containers" in self.pod_spec:
            raise SpecError("pod_spec", dict(self.pod_spec),
                            "containers are made by the backend: use image, env and worker_options")
        if not isinstance(self.labels, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.labels.items()):
            raise SpecError("labels", self.labels, "expected a mapping of strings to strings")
        object.__setattr__(self, "pod_spec", MappingProxyType(dict(self.pod_spec)))
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
