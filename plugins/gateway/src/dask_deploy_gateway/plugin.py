"""The ``gateway`` backend's entry point: cheap to import (dask-gateway loads in the factory)."""

from __future__ import annotations

from dask_deploy import BackendInfo, ClusterSpec, hookimpl

from ._options import GatewayOptions

__all__ = ["INFO", "deploy_backends"]


def _factory(spec: ClusterSpec) -> object:
    from ._backend import GatewayBackend

    return GatewayBackend(spec)


INFO = BackendInfo(
    name="gateway",
    summary="A cluster on an existing dask-gateway server (scheduler and workers are the server's)",
    factory=_factory,
    options=GatewayOptions,
    # No "logs_after_death": the gateway API has no logs; a worker's log is read from the
    # scheduler while it runs and kept when dask-deploy stops it, not after a crash.
    # "managed": the server starts, configures and stops the scheduler and the workers.
    capabilities=frozenset({"scale", "dashboard", "managed"}),
    extra="gateway",
    # The server owns the scheduler; its TLS identity (per cluster) comes from the server and
    # replaces the core's own (SchedulerInfo.security).
    defaults={"scheduler": "remote", "poll_interval": 0.5, "start_timeout": 120},
)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [INFO]
