"""The ssh backend's own options, with ``distributed.SSHCluster``'s names and meaning.

Kept apart from the backend so that describing the backend (``deploy_backends``) and
validating options never imports asyncssh.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dask_deploy import SpecError

__all__ = ["SSHOptions", "default_n_workers"]

#: Connect options whose values never appear in a repr or an error message.
_SECRET = ("password", "passphrase", "client_keys", "client_host_keys", "gss_", "pkcs11", "kbdint")


def _masked(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("***" if any(k.startswith(s) for s in _SECRET) else v) for k, v in options.items()}


def _per_host(value: Any, n: int, option: str, check: Any, accepted: str) -> tuple[Any, ...]:
    """SSHCluster's rule: one value for every host, or a list with one value per host."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            shown = [_masked(v) if isinstance(v, Mapping) else v for v in value]
            raise SpecError(option, shown, f"expected {accepted}, or a list of exactly {n} of them "
                            f"(one per entry of hosts)")
        values = tuple(value)
    else:
        values = (value,) * n
    for v in values:
        if not check(v):
            raise SpecError(option, _masked(v) if isinstance(v, Mapping) else v, f"expected {accepted}")
    return values


@dataclass(frozen=True, repr=False)
class SSHOptions:
    """Options of the ssh backend (``Cluster.from_name("ssh", hosts=[...], ...)``).

    ``hosts``: the machines, as for ``SSHCluster``. With ``scheduler="remote"`` the first one
    runs the scheduler and the others run workers (the first one too, when it is the only
    one); with the default in-process scheduler every entry runs workers. Workers are spread
    over the entries round-robin, so a host listed twice gets twice the share. Each distinct
    host gets one SSH connection and one agent process that forks its workers.

    ``connect_options``: keyword arguments of ``asyncssh.connect`` (``username``, ``port``,
    ``client_keys``, ``known_hosts``, ``agent_forwarding``, ...), one mapping for all hosts
    or a list with one per host. Host keys are checked against ``~/.ssh/known_hosts`` unless
    ``known_hosts`` says otherwise.

    ``remote_python``: the interpreter on the hosts (one for all, or one per host); it must
    have ``dask-deploy-core`` installed. Defaults, as in ``SSHCluster``, to this process's
    interpreter path.

    ``log_directory``: where logs go on each host (a cluster subfolder is made; ``~/``
    allowed); default ``${TMPDIR:-/tmp}/dask-deploy-<uid>``. ``stop_grace``: seconds a stopping
    worker gets to leave cleanly, and the grace the agent gives its workers when the
    connection to this client drops.
    """

    hosts: tuple[str, ...] = ()
    connect_options: Any = field(default_factory=dict)
    remote_python: Any = None
    log_directory: str | None = None
    stop_grace: float = 3.0

    def __post_init__(self) -> None:
        hosts = self.hosts
        if isinstance(hosts, str) or not isinstance(hosts, Sequence) or not hosts \
                or not all(isinstance(h, str) and h for h in hosts):
            raise SpecError("hosts", hosts, 'expected a non-empty list of host names or addresses, '
                            'e.g. ["node1", "node2"]')
        object.__setattr__(self, "hosts", tuple(hosts))
        n = len(hosts)
        opts = _per_host(self.connect_options, n, "connect_options",
                         lambda v: isinstance(v, Mapping) and all(isinstance(k, str) for k in v),
                         "a mapping of asyncssh.connect keyword arguments")
        object.__setattr__(self, "connect_options", tuple(MappingProxyType(dict(o)) for o in opts))
        python = self.remote_python if self.remote_python is not None else sys.executable
        pythons = _per_host(python, n, "remote_python", lambda v: isinstance(v, str) and v,
                            "the path of a Python interpreter with dask-deploy-core installed")
        object.__setattr__(self, "remote_python", pythons)
        if self.log_directory is not None and (not isinstance(self.log_directory, str)
                                               or not self.log_directory):
            raise SpecError("log_directory", self.log_directory, "expected a directory path or None")
        if isinstance(self.stop_grace, bool) or not isinstance(self.stop_grace, (int, float)) \
                or self.stop_grace < 0:
            raise SpecError("stop_grace", self.stop_grace, "expected seconds >= 0")

    def __repr__(self) -> str:
        # Never print passwords or key material that a user put into connect_options.
        opts = [_masked(o) for o in self.connect_options]
        return (f"SSHOptions(hosts={list(self.hosts)!r}, connect_options={opts!r}, "
                f"remote_python={list(self.remote_python)!r}, log_directory={self.log_directory!r}, "
                f"stop_grace={self.stop_grace!r})")

    def worker_hosts(self, remote_scheduler: bool) -> tuple[int, ...]:
        """Indexes into ``hosts`` of the entries that run workers."""
        n = len(self.hosts)
        return tuple(range(1, n)) if remote_scheduler and n > 1 else tuple(range(n))


def default_n_workers(options: dict[str, Any]) -> int:
    """SSHCluster's default: one worker per worker host entry."""
    hosts = options.get("hosts")
    if isinstance(hosts, str) or not isinstance(hosts, Sequence) or not hosts:
        return 0
    remote = options.get("scheduler") == "remote"
    return len(hosts) - 1 if remote and len(hosts) > 1 else len(hosts)
