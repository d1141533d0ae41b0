"""The toolkit for backend authors: what every backend needs and should not write again.

Everything here is public and documented (``docs/writing-a-backend.md`` shows it in use):

* :func:`is_loopback` - whether an address stays on this machine (TLS and token decisions);
* :func:`worker_kwargs` / :func:`worker_cli_args` - a :class:`~dask_deploy.WorkerSpec` as
  ``distributed.Worker`` keyword arguments or as ``dask worker`` command-line arguments;
  :func:`worker_role` - which server those keyword arguments are for (``Nanny`` when
  ``WorkerSpec.nanny``, else ``Worker``), the agent's ``role``;
  :func:`cli_flags` - options (``worker.options``, ``scheduler.options``) as CLI flags;
* :func:`scheduler_kwargs` - a :class:`~dask_deploy.SchedulerSpec` as
  ``distributed.Scheduler`` keyword arguments;
* :func:`wait_until` - poll a condition against a deadline, with the reason on timeout;
* :func:`stop_then_wait` - ask politely, wait until gone, then force;
* :func:`owner_tag`, :func:`created_tag`, :func:`tags_from_argv` - the ownership tags every
  created thing carries (``dask-deploy gc`` judges by them);
* the **agent** that the local, ssh and cloud backends share: :func:`agent_command` (the
  command line of a supervisor that forks workers and schedulers from a pre-imported
  template, over JSON lines on stdin/stdout or a unix socket) and :class:`AgentClient` (its
  statuses: ``running``, ``exited`` with reasons, ``schedulers``; ``start``, ``stop``,
  ``wait_for``);
* :class:`LocalBackend`, :class:`LocalOptions`, :data:`LOCAL_INFO` - the local backend, to
  build on (the ``cuda`` backend is a subclass).

What the core does for every backend (close during start, liveness, retries) is not here:
backends never need it. See :mod:`dask_deploy.hookspecs` for the contract.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._errors import BackendError, SpecError, StartTimeout
from ._specs import ClusterSpec, SchedulerSpec, WorkerSpec

if TYPE_CHECKING:
    from ._agent import AgentClient, agent_command
    from ._local import INFO as LOCAL_INFO
    from ._local import LocalBackend, LocalOptions
    from ._owner import created_tag, owner_tag, tags_from_argv

__all__ = ["LOCAL_INFO", "AgentClient", "LocalBackend", "LocalOptions", "agent_command", "cli_flags",
           "created_tag", "is_loopback", "owner_tag", "scheduler_kwargs", "stop_then_wait",
           "tags_from_argv", "wait_until", "worker_cli_args", "worker_kwargs", "worker_role"]

# Loaded on first use: the agent and the local backend import this module themselves.
_LAZY = {"AgentClient": "_agent", "agent_command": "_agent", "created_tag": "_owner",
         "owner_tag": "_owner", "tags_from_argv": "_owner", "LocalBackend": "_local",
         "LocalOptions": "_local", "LOCAL_INFO": "_local"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"dask_deploy.{_LAZY[name]}")
        value = getattr(module, "INFO" if name == "LOCAL_INFO" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

T = TypeVar("T")


def is_loopback(host: str | None) -> bool:
    """True if ``host`` (an IP, ``[IPv6]``, ``localhost``, or ``host:port``) is loopback only.

    ``""``/``None``/``0.0.0.0``/``::`` (every interface) and host names other than
    ``localhost`` are not: no name is looked up, so this never touches the network.
    """
    if not host:
        return False
    host = host.split("://")[-1]
    if host.startswith("["):  # [::1]:8786
        host = host[1:].split("]")[0]
    elif host.count(":") == 1:  # 127.0.0.1:8786
        host = host.split(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def worker_kwargs(cluster: ClusterSpec, scheduler_address: str, name: str, worker: WorkerSpec,
                  *, host: str | None = None, security: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``distributed.Worker`` for the worker ``name`` of a unit.

    ``host`` is the address the worker binds (default: the cluster's ``host``, i.e.
    127.0.0.1 unless the user chose otherwise). ``security=True`` adds the cluster's TLS
    identity as a ``distributed.Security`` (for workers made in this process; a remote
    process gets the certificate through the backend's own channel instead).
    """
    kwargs: dict[str, Any] = {
        "scheduler_ip": scheduler_address, "name": name, "nthreads": worker.nthreads,
        "memory_limit": worker.memory_limit if worker.memory_limit is not None else 0,
        "host": host if host is not None else (cluster.scheduler.host or "127.0.0.1"),
    }
    if worker.resources:
        kwargs["resources"] = dict(worker.resources)
    if security and cluster.tls is not None:
        kwargs["security"] = cluster.tls.security()
    kwargs.update(worker.options)
    return kwargs


def worker_role(worker: WorkerSpec) -> Literal["worker", "nanny"]:
    """Which ``distributed`` server runs a worker of this spec: ``"nanny"`` (a
    ``distributed.Nanny``, which spawns and watches the worker; :func:`worker_kwargs` suit
    both) when ``worker.nanny``, else ``"worker"``. It is the agent's ``role`` in
    :meth:`AgentClient.start`; command lines get ``--nanny``/``--no-nanny`` from
    :func:`worker_cli_args` instead."""
    return "nanny" if worker.nanny else "worker"


def cli_flags(options: Mapping[str, Any]) -> list[str]:
    """Options as command-line flags: ``{"lifetime": "1h", "nanny": False}`` ->
    ``["--lifetime", "1h", "--no-nanny"]``. ``True``: a bare flag; ``False``: ``--no-flag``;
    ``None``: left out; a mapping: ``k=v`` pairs in one argument (``--resources``); a list:
    the flag once per item. Raises :class:`~dask_deploy.SpecError` for a NUL character,
    which no program argument can carry."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif value is None:
            continue
        elif isinstance(value, Mapping):
            out += [flag, " ".join(f"{k}={v}" for k, v in value.items())]
        elif isinstance(value, (list, tuple)):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
        if any("\0" in a for a in (key, *out)):
            raise SpecError(key, value, "a NUL character cannot be passed to a program: remove it")
    return out


def worker_cli_args(name: str, worker: WorkerSpec, *, host: str | None = "127.0.0.1",
                    dashboard: bool = False, nanny: bool | None = None) -> list[str]:
    """``dask worker`` arguments for one worker, after the scheduler address: name, threads,
    memory, resources, no nanny (unless ``nanny``, by default ``worker.nanny``), and
    ``worker.options`` as flags (:func:`cli_flags`: ``{"lifetime": "1h"}`` ->
    ``--lifetime 1h``; ``True`` -> a bare flag, ``False`` -> ``--no-<flag>``, a list ->
    the flag once per item, e.g. ``preload``; ``None`` -> left out). ``host=None`` leaves
    the bind address to the worker (a compute node binding its own interface); TLS files
    are the caller's, as they depend on where the process runs.
    """
    memory = worker.memory_limit if worker.memory_limit is not None else 0
    nanny = worker.nanny if nanny is None else nanny
    args = ["--name", name, "--nthreads", str(worker.nthreads), "--memory-limit", str(memory),
            "--nanny" if nanny else "--no-nanny"]
    if host is not None:
        args += ["--host", host]
    if not dashboard:
        args.append("--no-dashboard")
    if worker.resources:
        args += ["--resources", " ".join(f"{k}={v:g}" for k, v in worker.resources.items())]
    return args + cli_flags(worker.options)


def scheduler_kwargs(scheduler: SchedulerSpec) -> dict[str, Any]:
    """Keyword arguments of ``distributed.Scheduler`` for a scheduler spec (no TLS)."""
    return {"host": scheduler.host or "127.0.0.1", "port": scheduler.port,
            "dashboard": scheduler.dashboard_address is not None,
            "dashboard_address": scheduler.dashboard_address,
            "idle_timeout": scheduler.idle_timeout, **scheduler.options}


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str,
                     *, interval: float = 0.1, why: Callable[[], str] | None = None) -> T:
    """Await ``check()`` every ``interval`` seconds until it returns something not None.

    Raises :class:`~dask_deploy.StartTimeout` naming ``what`` (and ``why()``, e.g. the end
    of a log or a queue reason) after ``timeout`` seconds. ``check`` may raise
    :class:`~dask_deploy.BackendError` to give up early (the thing failed).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            detail = why() if why is not None else ""
            raise StartTimeout(f"{what} did not happen within {timeout:g}s"
                               + (f": {detail}" if detail else ""))
        await asyncio.sleep(interval)


async def stop_then_wait(stop: Callable[[], Awaitable[Any]], gone: Callable[[], Awaitable[bool]],
                         grace: float, *, kill: Callable[[], Awaitable[Any]] | None = None,
                         what: str = "it", interval: float = 0.1,
                         kill_grace: float | None = None) -> None:
    """Ask ``stop()``; wait up to ``grace`` seconds for ``gone()``; then ``kill()`` and wait
    ``kill_grace`` seconds (default: ``grace``) again. Raises
    :class:`~dask_deploy.BackendError` if it may still run (what a ``deploy_stop_*`` hook
    must raise then)."""
    await stop()
    for final in (False, True):
        wait = kill_grace if final and kill_grace is not None else grace
        deadline = time.monotonic() + wait
        while not await gone():
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(interval)
        else:
            return
        if final or kill is None:
            break
        await kill()
    raise BackendError(f"{what} did not stop within {grace:g}s")
