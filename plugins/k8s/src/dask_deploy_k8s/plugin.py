"""The ``k8s`` backend's entry point: cheap to import (the Kubernetes client loads in the factory)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from dask_deploy import BackendInfo, ClusterSpec, hookimpl

from ._options import K8sOptions

__all__ = ["DEFAULT_IDLE_TIMEOUT", "INFO", "deploy_backends"]


def _factory(spec: ClusterSpec) -> object:
    from ._backend import K8sBackend

    return K8sBackend(spec)


def _default_image(options: dict[str, Any]) -> str:
    # The scheduler and workers must run the client's version of distributed.
    try:
        return f"ghcr.io/dask/dask:{version('distributed')}"
    except PackageNotFoundError:
        return "ghcr.io/dask/dask:latest"


#: Seconds without any task after which a remote scheduler closes itself (and its workers
#: follow): a client that died leaves nothing running for longer. ``idle_timeout=None``
#: turns it off.
DEFAULT_IDLE_TIMEOUT = 1200.0


def _idle_timeout(options: dict[str, Any]) -> float | None:
    return DEFAULT_IDLE_TIMEOUT if options.get("scheduler", "remote") == "remote" else None


INFO = BackendInfo(
    name="k8s",
    summary="Scheduler and workers as Kubernetes pods (kubernetes-asyncio; namespace rights only)",
    factory=_factory,
    options=K8sOptions,
    capabilities=frozenset({"scale", "logs_after_death", "dashboard", "detach", "nanny"}),
    extra="k8s",
    defaults={"scheduler": "remote", "image": _default_image, "idle_timeout": _idle_timeout,
              "security": True, "poll_interval": 0.5, "start_timeout": 300},
    # Per pool: its workers' pod fields (nodeSelector, tolerations, affinity, ...).
    pool_options=frozenset({"pod_spec"}),
)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [INFO]
