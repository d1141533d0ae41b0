"""The ssh backend's own options, with ``distributed.SSHCluster``'s names and meaning.

Kept apart from the backend so that describing the backend (``deploy_backends``) and
validating options never imports asyncssh.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from dask_deploy import Alias, CompatTable, Convert, SpecError

__all__ = ["SSH_COMPAT", "SSHOptions", "default_n_workers"]

#: Connect options whose values never appear in a repr or an error message.
_SECRET = ("password", "passphrase", "client_keys", "client_host_keys", "gss_", "pkcs11", "kbdint")


def _masked(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("***" if any(k.startswith(s) for s in _SECRET) else v) for k, v in options.items()}


#: Connect options that are secrets themselves: never written into the cluster record.
_NEVER_STORED = frozenset({"password", "passphrase", "pkcs11_pin"})
_DROP = object()


def _storable(value: Any) -> Any:
    """A JSON value standing for ``value`` in the record, or ``_DROP`` when there is none.

    Key objects become their file path; a key that exists only in memory (or raw key bytes)
    is a secret too and is dropped, like anything else that only lives in this process.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    get_filename = getattr(value, "get_filename", None)  # asyncssh.SSHKey and friends
    if callable(get_filename):
        path = get_filename()
        return os.fsdecode(path) if path else _DROP
    if isinstance(value, Mapping):
        items = {k: _storable(v) for k, v in value.items() if isinstance(k, str)}
        return {k: v for k, v in items.items() if v is not _DROP}
    if isinstance(value, (list, tuple)):
        kept = [v for v in map(_storable, value) if v is not _DROP]
        return kept if kept or not value else _DROP  # [] would mean "no keys at all"
    return _DROP


def _storable_connect_options(options: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the cluster record keeps of ``connect_options``: no password, passphrase or PIN,
    keys as paths. Re-attaching authenticates with the ssh agent or the keys on disk."""
    out = []
    for opts in options:
        kept = {k: _storable(v) for k, v in opts.items() if k not in _NEVER_STORED}
        out.append({k: v for k, v in kept.items() if v is not _DROP})
    return out


def _worker_module(value: Any) -> dict[str, Any]:
    if value in ("deprecated", "distributed.cli.dask_worker", None):
        return {}
    raise SpecError("worker_module", value, "workers are distributed.Worker processes started by "
                    "the agent; other worker modules are not supported")


def _ssh_worker_options(value: Any) -> dict[str, Any] | None:
    """SSHCluster's ``worker_options`` may hold ``nthreads`` and ``memory_limit``, which are
    the generic options here (so that ``scale(cores=...)`` counts right)."""
    if not isinstance(value, Mapping):
        raise SpecError("worker_options", value, "expected a mapping of Worker arguments")
    if "n_workers" in value:
        raise SpecError("worker_options", dict(value), "give n_workers= instead of "
                        "worker_options['n_workers']: workers are spread over the hosts "
                        "round-robin")
    moved = {"nthreads": "threads_per_worker", "memory_limit": "memory_limit"}
    if not set(value) & set(moved):
        return None
    out: dict[str, Any] = {ours: value[k] for k, ours in moved.items() if k in value}
    rest = {k: v for k, v in value.items() if k not in moved}
    return {**out, **({"worker_options": rest} if rest else {})}


#: ``distributed.SSHCluster`` (the ``ssh`` backend; its table sits on ``SSHOptions``).
SSH_COMPAT = CompatTable(
    anchor="distributed.SSHCluster",
    entries=(
        *(Alias(n, n, "same", where="option") for n in (
            "hosts", "connect_options", "remote_python", "scheduler_options", "asynchronous",
            "loop", "silence_logs", "security", "name", "shutdown_on_close", "n_workers")),
        Alias("worker_options", "worker_options", "same", convert=_ssh_worker_options,
              where="option"),
        Alias("worker_class", None, "same", convert=Convert.worker_class, where="option",
              reason="Nanny and Worker both mean a supervised worker process"),
        Alias("worker_module", None, "warn", convert=_worker_module, where="option",
              reason="deprecated in distributed; workers are started by dask-deploy's agent"),
    ),
)


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
    ``known_hosts`` says otherwise. ``password``, ``passphrase`` and ``pkcs11_pin`` are never
    written into the cluster record, key objects are recorded as their file paths and keys
    held only in memory not at all: whatever re-reads the record (``dask-deploy gc``,
    re-attaching) authenticates with the ssh agent or the keys on disk.

    ``remote_python``: the interpreter on the hosts (one for all, or one per host); it must
    have ``dask-deploy-core`` installed. Defaults, as in ``SSHCluster``, to this process's
    interpreter path.

    ``log_directory``: where logs go on each host (a cluster subfolder is made, 0700; ``~/``
    allowed); default ``$XDG_RUNTIME_DIR/dask-deploy`` when that is the user's own, else
    ``${XDG_STATE_HOME:-~/.local/state}/dask-deploy/logs``, never a shared ``/tmp`` name. The
    agent refuses a cluster folder that is a symlink, belongs to someone else or sits in a
    folder others could write to. ``stop_grace``: seconds a stopping
    worker gets to leave cleanly, and the grace the agent gives its workers when the
    connection to this client drops.
    """

    #: distributed.SSHCluster's names, translated by the core.
    anchor_compat: ClassVar[CompatTable] = SSH_COMPAT

    hosts: tuple[str, ...] = ()
    connect_options: Any = field(default_factory=dict,
                                 metadata={"persist": _storable_connect_options})
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
