"""Entry point of the ssh backend: describes it without importing asyncssh."""

from __future__ import annotations

from dask_deploy import BackendInfo, ClusterSpec, hookimpl

from ._options import SSHOptions, default_n_workers

__all__ = ["INFO", "deploy_backends"]


def _factory(spec: ClusterSpec) -> object:
    from ._backend import SSHBackend  # asyncssh is imported only when a cluster uses ssh

    return SSHBackend(spec)


INFO = BackendInfo(
    name="ssh",
    summary="Workers (and optionally the scheduler) on hosts reached over SSH, forked by one "
            "agent per host",
    factory=_factory,
    options=SSHOptions,
    capabilities=frozenset({"scale", "logs_after_death", "dashboard", "detach", "nanny"}),
    extra="ssh",
    # Scheduler traffic leaves this machine: TLS with a per-cluster certificate by default.
    # Polls are answered from the agents' event streams (no SSH round trip): poll often.
    defaults={"security": True, "poll_interval": 0.5, "n_workers": default_n_workers},
)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [INFO]
