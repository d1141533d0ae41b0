"""Typed, frozen specs: what a cluster, its scheduler and its workers should be.

Everything that crosses a hook is one of these records, never a loose dict, and every
record is validated where it is built, so a bad option fails at the edge with an error that
names it (:class:`~dask_deploy.SpecError`).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from dask.utils import parse_bytes

from ._errors import SpecError

__all__ = [
    "TLS",
    "BackendInfo",
    "ClusterSpec",
    "Handle",
    "Phase",
    "Pool",
    "SchedulerInfo",
    "SchedulerSpec",
    "Status",
    "Unit",
    "WorkerSpec",
]

Placement = Literal["local", "remote"]
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: ``remote_scheduler`` is read from the hooks (a backend need not claim it); ``loopback``:
#: with a loopback ``host``, every process of the backend binds loopback only (no TLS needed).
#: ``nanny``: the backend runs a worker under a ``distributed.Nanny`` when its
#: ``WorkerSpec.nanny`` is set (generic option ``nanny=True``). ``managed``: a service outside
#: dask-deploy (a dask-gateway server) starts, configures and stops the scheduler and the
#: workers, so generic worker and scheduler options cannot reach them (the backend refuses
#: them), the scheduler is always the service's, and how a stop ends a worker's processes is
#: the service's business (a limit, not an ability: the conformance suite skips what it rules out).
_CAPABILITIES = frozenset({"scale", "remote_scheduler", "logs_after_death", "dashboard", "detach",
                           "loopback", "nanny", "managed"})


#: Shared by every record with an empty mapping (a cluster holds one handle per unit).
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_map(value: Mapping[str, Any] | None, option: str) -> Mapping[str, Any]:
    # Fast paths first: a Handle is built per unit, and the Mapping ABC check is slow.
    if value is None or value is _EMPTY or (type(value) is dict and not value):
        return _EMPTY
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise SpecError(option, value, "expected a mapping with string keys")
    return MappingProxyType(dict(value))


def parse_memory(value: object, option: str = "memory_limit") -> int | str | None:
    """Bytes as an int, ``"auto"`` (let each worker size itself) or ``None`` (no limit)."""
    if value is None or value == "auto":
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        raise SpecError(option, value, 'expected bytes (int), a size such as "4GiB", "auto" or None')
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    if isinstance(value, str):
        try:
            parsed = parse_bytes(value)
        except (ValueError, TypeError):
            pass
        else:
            if parsed > 0:
                return parsed
    raise SpecError(option, value, 'expected bytes (int), a size such as "4GiB", "auto" or None')


def _positive_int(value: object, option: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(option, value, f"expected an integer >= {minimum}")
    return value


def _positive_float(value: object, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SpecError(option, value, "expected a number of seconds > 0")
    return float(value)


#: A host name, IPv4 address or IPv6 literal: no space, scheme, path or control character.
_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]-]{0,253}\Z")


def check_port(value: object, option: str) -> int:
    """A TCP port number (0: any free port)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise SpecError(option, value, "expected a port number from 0 to 65535 (0: any free port)")
    return value


def check_host(value: object, option: str = "host") -> str:
    """A host name or address to listen on ("" means the backend's default)."""
    if not isinstance(value, str) or not _HOST.match(value):
        raise SpecError(option, value, 'expected a host name or IP address to listen on, such as '
                        '"127.0.0.1" or "0.0.0.0" (no scheme, port or spaces)')
    return value


def check_address(value: object, option: str) -> str | None:
    """``"host:port"`` or ``":port"`` (e.g. a dashboard address), or None for none."""
    if value is None:
        return None
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit() and _HOST.match(host):
            check_port(int(port), option)
            return value
    raise SpecError(option, value, 'expected "host:port" or ":port", e.g. "127.0.0.1:8787" '
                    '(port 0: any free port), or None')


def check_bindable(host: str, option: str = "host") -> None:
    """That this machine can listen on ``host`` (for a scheduler that binds it here), so a
    bad address fails now with its name instead of as "Scheduler failed to start"."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host.strip("[]") or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as s:
            s.bind(addr)
    except (OSError, UnicodeError) as e:  # UnicodeError: not even a valid host name
        why = getattr(e, "strerror", None) or "not a valid host name"
        raise SpecError(option, host, f"this machine cannot listen there ({why}): use "
                        'one of its addresses, "127.0.0.1" or "0.0.0.0"') from None


@dataclass(frozen=True)
class WorkerSpec:
    """One Dask worker process as a backend should start it.

    ``gpus`` is a request: a resource-expansion plugin (``deploy_expand_resources``) turns a
    unit with N GPUs into N workers with one GPU each. ``options`` are extra keyword arguments
    for ``distributed.Worker`` (e.g. ``{"lifetime": "1h"}``).
    """

    nthreads: int = 1
    memory_limit: int | str | None = "auto"
    resources: Mapping[str, float] = field(default_factory=dict)
    gpus: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Suffix of this worker's name inside its unit ("" when the unit has one worker).
    suffix: str = ""
    #: Run the worker under a ``distributed.Nanny`` (a second process per worker: slower to
    #: start, twice the memory). Needed only for nanny plugins (``Environ``,
    #: ``UploadDirectory``) and restarts by the nanny; the core already supervises workers.
    nanny: bool = False

    def __post_init__(self) -> None:
        _positive_int(self.nthreads, "threads_per_worker")
        object.__setattr__(self, "memory_limit", parse_memory(self.memory_limit))
        _positive_int(self.gpus, "gpus", minimum=0)
        if not isinstance(self.nanny, bool):
            raise SpecError("nanny", self.nanny, "expected True (a Nanny per worker, slower) or False")
        resources = _frozen_map(self.resources, "resources")
        for key, amount in resources.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise SpecError(f"resources[{key!r}]", amount, "expected a number >= 0")
        object.__setattr__(self, "resources", resources)
        env = _frozen_map(self.env, "env")
        for key, val in env.items():
            # Keys become `export KEY=...` in job scripts and shell lines: only a plain
            # variable name cannot turn into a command. Values are always quoted.
            if not _ENV_KEY.match(key):
                raise SpecError(f"env[{key!r}]", key, "a variable name must match "
                                "[A-Za-z_][A-Za-z0-9_]*: rename the variable")
            if not isinstance(val, str) or "\0" in val:
                raise SpecError(f"env[{key!r}]", val, "expected a string value without NUL")
        object.__setattr__(self, "env", env)
        object.__setattr__(self, "options", _frozen_map(self.options, "worker_options"))
        # It becomes a word of a shell line (ec2 user data), a task definition or a pod.
        if self.image is not None and (not isinstance(self.image, str) or not self.image.isprintable()
                                       or any(c.isspace() for c in self.image)):
            raise SpecError("image", self.image, "expected a container image name such as "
                            "'ghcr.io/dask/dask:latest' (no spaces) or None")

    def replace(self, **changes: Any) -> WorkerSpec:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


#: The pool of a cluster started without ``pools=``; its units keep the names ``<cluster>-<i>``.
DEFAULT_POOL = "default"
_POOL_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,14}[a-z0-9])?$")


@dataclass(frozen=True)
class Pool:
    """A named group of units that share one worker spec and their own bounds.

    ``n_workers`` are started with the cluster; ``minimum``/``maximum`` bound
    ``scale(n, pool=...)`` and are the defaults of ``adapt(pool=...)`` (``None``: no upper
    bound). Units of a pool other than the default are named ``<cluster>-<pool>-<i>``.
    ``backend_options``: the backend's own options record for this pool's units (the
    cluster's with the options the backend lets a pool set, ``BackendInfo.pool_options``,
    replaced); ``None``: the cluster's. Read it with :meth:`ClusterSpec.options_of`.
    """

    name: str
    worker: WorkerSpec = field(default_factory=WorkerSpec)
    n_workers: int = 0
    minimum: int = 0
    maximum: int | None = None
    backend_options: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _POOL_NAME.match(self.name):
            raise SpecError("pools", self.name, "a pool name is 1-16 lowercase letters, digits "
                            "or '-', starting with a letter (it is part of each unit's name)")
        if not isinstance(self.worker, WorkerSpec):
            raise SpecError(f"pools[{self.name!r}]", self.worker, "expected a WorkerSpec")
        _positive_int(self.n_workers, f"pools[{self.name!r}].n_workers", minimum=0)
        _positive_int(self.minimum, f"pools[{self.name!r}].minimum", minimum=0)
        if self.maximum is not None:
            _positive_int(self.maximum, f"pools[{self.name!r}].maximum", minimum=0)
            if self.maximum < self.minimum:
                raise SpecError(f"pools[{self.name!r}].maximum", self.maximum,
                                f"below its minimum={self.minimum}: widen the bounds")
        if not self.allows(self.n_workers):
            raise SpecError(f"pools[{self.name!r}].n_workers", self.n_workers,
                            f"outside its bounds [{self.minimum}, {self.maximum}]")

    def allows(self, n: int) -> bool:
        """Whether ``n`` workers are within this pool's bounds."""
        return self.minimum <= n and (self.maximum is None or n <= self.maximum)


@dataclass(frozen=True)
class SchedulerSpec:
    """Where and how the scheduler runs.

    ``placement="local"`` runs it inside the client process (the default); ``"remote"`` asks the
    backend to start it as a process, job, pod, task or host of its own.
    """

    placement: Placement = "local"
    host: str = "127.0.0.1"
    port: int = 0
    dashboard_address: str | None = "127.0.0.1:0"
    #: Close the cluster when no client or task has been seen for this many seconds.
    idle_timeout: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.placement not in ("local", "remote"):
            raise SpecError("scheduler", self.placement, 'expected "local" (in this process) or "remote"')
        check_host(self.host, "host")
        check_port(self.port, "scheduler_port")
        check_address(self.dashboard_address, "dashboard_address")
        if self.idle_timeout is not None:
            _positive_float(self.idle_timeout, "idle_timeout")
        object.__setattr__(self, "options", _frozen_map(self.options, "scheduler_options"))


@dataclass(frozen=True, repr=False)
class TLS:
    """The cluster's own TLS identity: one self-signed certificate and key, as PEM text.

    Made per cluster in memory (:meth:`temporary`), so no certificate authority or shared
    directory is needed. Backends deliver it to remote processes through their own channel
    (the agent's stdin over SSH, a Kubernetes Secret, a user-only file), never in a command
    line, job script, pod spec, user data or log. ``repr`` hides the key.
    """

    cert: str
    key: str

    def __repr__(self) -> str:
        return "TLS(<per-cluster certificate>)"

    @classmethod
    def temporary(cls) -> TLS:
        from distributed.security import Security

        sec = Security.temporary()
        return cls(cert=sec.tls_ca_file, key=sec.tls_scheduler_key)

    def security(self) -> Any:
        """A ``distributed.Security`` that requires TLS and trusts only this certificate."""
        from distributed.security import Security

        return Security(
            require_encryption=True, tls_ca_file=self.cert,
            tls_client_cert=self.cert, tls_client_key=self.key,
            tls_scheduler_cert=self.cert, tls_scheduler_key=self.key,
            tls_worker_cert=self.cert, tls_worker_key=self.key,
        )


@dataclass(frozen=True)
class ClusterSpec:
    """Everything a backend needs to know about one cluster.

    ``name`` doubles as the cluster id that every resource of the cluster is tagged with.
    ``worker`` is the template of one *unit* (what one start produces: a process, a job, a
    pod, a task); ``backend_options`` is the backend's own frozen options record.
    ``pools``: named groups of units with worker specs of their own (empty: one pool,
    ``"default"``, of ``worker`` and ``n_workers``); the first is the default pool.
    """

    backend: str
    name: str
    worker: WorkerSpec = field(default_factory=WorkerSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    n_workers: int = 0
    #: Seconds a unit may be running (process up, job started, pod scheduled) without its
    #: workers connecting before it counts as failed.
    start_timeout: float = 60.0
    #: Seconds a unit may wait in the backend's queue (PENDING: a queued job, an unscheduled
    #: pod, a provisioning task) before it counts as failed. None: wait as long as it takes.
    queue_timeout: float | None = None
    max_failures: int = 5
    shutdown_on_close: bool = True
    #: Seconds between reconcile rounds (each polls the backend once).
    poll_interval: float = 1.0
    #: Scheduler traffic is TLS with this identity (None: plain TCP, by explicit choice).
    tls: TLS | None = None
    backend_options: Any = None
    pools: tuple[Pool, ...] = ()

    def __post_init__(self) -> None:
        pools = tuple(self.pools)
        if not all(isinstance(p, Pool) for p in pools):
            raise SpecError("pools", self.pools, "expected Pool records")
        if len({p.name for p in pools}) != len(pools):
            raise SpecError("pools", [p.name for p in pools], "pool names must be unique")
        object.__setattr__(self, "pools", pools)
        for p in pools:
            # A pool's record replaces the cluster's for its units: same backend, same type.
            if p.backend_options is not None and type(p.backend_options) is not type(
                    self.backend_options):
                raise SpecError(f"pools[{p.name!r}].backend_options", p.backend_options,
                                f"expected a {type(self.backend_options).__name__} like the "
                                "cluster's backend_options (or None: the cluster's)")
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError(
                "name", self.name,
                "expected 1-48 lowercase letters, digits or '-', starting and ending with a letter "
                "or digit (it tags every process, job or pod of the cluster)",
            )
        _positive_int(self.n_workers, "n_workers", minimum=0)
        _positive_float(self.start_timeout, "start_timeout")
        if self.queue_timeout is not None:
            _positive_float(self.queue_timeout, "queue_timeout")
        _positive_int(self.max_failures, "max_failures")
        _positive_float(self.poll_interval, "poll_interval")

    @property
    def all_pools(self) -> tuple[Pool, ...]:
        """The cluster's pools, the default first (one ``"default"`` pool without ``pools``)."""
        return self.pools or (Pool(DEFAULT_POOL, self.worker, self.n_workers),)

    def options_of(self, pool: str) -> Any:
        """The backend options record of the units of ``pool`` (a unit's ``Unit.pool``):
        the pool's own when it sets some, else the cluster's ``backend_options``."""
        for p in self.pools:
            if p.name == pool and p.backend_options is not None:
                return p.backend_options
        return self.backend_options


@dataclass(frozen=True)
class Unit:
    """What one backend start produces, and the workers it runs.

    A unit named ``mycluster-3`` with workers suffixed ``-0`` and ``-1`` shows up in the scheduler
    as the workers ``mycluster-3-0`` and ``mycluster-3-1``.
    """

    name: str
    workers: tuple[WorkerSpec, ...]
    #: The pool it belongs to (its workers are that pool's expanded ``WorkerSpec``).
    pool: str = DEFAULT_POOL

    @property
    def worker_names(self) -> tuple[str, ...]:
        return tuple(self.name + w.suffix for w in self.workers)


class Phase(str, enum.Enum):
    """Where a started unit is, as the backend sees it."""

    PENDING = "pending"  # accepted, not running yet (queued job, unscheduled pod, booting task)
    RUNNING = "running"  # its process runs (it may not have connected to the scheduler yet)
    FAILED = "failed"  # it ended badly or can never run; ``Status.reason`` says why
    GONE = "gone"  # it ended cleanly or the backend no longer knows it


@dataclass(frozen=True)
class Status:
    """A unit's phase plus, for ``FAILED``, the backend's reason."""

    phase: Phase
    reason: str = ""


@dataclass(frozen=True)
class Handle:
    """A small serialisable record of something a backend started.

    It is all the core keeps about a unit or scheduler, so it must be enough to poll, stop,
    read the logs of, and re-attach to that thing from another process: ``backend_id`` is the
    backend's own id (pid, job id, pod name, task ARN) and ``data`` holds other plain JSON
    values (host, log path).
    """

    backend: str
    cluster: str
    name: str
    backend_id: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _frozen_map(self.data, "Handle.data"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "cluster": self.cluster, "name": self.name,
            "backend_id": self.backend_id, "data": dict(self.data),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Handle:
        return cls(d["backend"], d["cluster"], d["name"], d["backend_id"], d.get("data", {}))


@dataclass(frozen=True)
class SchedulerInfo:
    """What ``deploy_start_scheduler`` returns: how to reach a scheduler the backend started."""

    handle: Handle
    address: str
    dashboard_address: str | None = None
    #: A ``distributed.Security`` for reaching this scheduler when the backend's system made
    #: its TLS identity itself (a dask-gateway server does, per cluster); the cluster and
    #: its clients then use it instead of ``ClusterSpec.tls``. Never written to a record.
    security: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BackendInfo:
    """How a plugin describes one backend it provides (``deploy_backends``).

    ``factory`` builds the per-cluster plugin object whose ``deploy_*`` hooks drive one cluster;
    ``options`` is a frozen dataclass of the backend's own options (``None``: it has none).
    ``defaults`` overrides the generic defaults (e.g. ``{"threads_per_worker": 2}``).
    ``pool_options``: the fields of ``options`` a pool may set for its own units
    (``pools={"gpu": {"queue": "gpu"}}``); the backend honours them by reading
    ``ClusterSpec.options_of(unit.pool)``. Empty: a pool that sets one is refused.
    """

    name: str
    summary: str
    factory: Callable[[ClusterSpec], object]
    options: type | None = None
    capabilities: frozenset[str] = frozenset()
    extra: str = ""  # the pip extra that installs it ("ssh" -> dask-deploy[ssh])
    defaults: Mapping[str, Any] = field(default_factory=dict)
    pool_options: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.capabilities) - _CAPABILITIES
        if unknown:
            raise SpecError("capabilities", sorted(unknown), f"expected some of {sorted(_CAPABILITIES)}")
        fields = {f.name for f in dataclasses.fields(self.options)} if self.options else set()
        if set(self.pool_options) - fields:
            raise SpecError("pool_options", sorted(set(self.pool_options) - fields),
                            f"not fields of {self.name}'s options class")
