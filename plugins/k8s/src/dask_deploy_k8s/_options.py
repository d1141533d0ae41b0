"""The k8s backend's own options (importable without the Kubernetes client)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dask_deploy import SpecError

__all__ = ["K8sOptions"]

_NS = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


@dataclass(frozen=True)
class K8sOptions:
    """Options of the ``k8s`` backend beyond the generic ones.

    Connection: ``kubeconfig`` and ``context`` (default: ``$KUBECONFIG`` or
    ``~/.kube/config``, or the pod's service account when running inside a cluster);
    ``namespace`` (default: the context's namespace, else ``default``).
    """

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
