"""The ssh backend: one asyncssh connection and one agent process per host.

Why this shape (and not ``SSHCluster``'s one SSH session and one interpreter per worker):

* **One agent per host** (:mod:`dask_deploy._agent`, started as
  ``<remote_python> -m dask_deploy._agent --cluster NAME``) imports ``distributed`` once and
  forks every worker and the remote scheduler from that template, so N workers cost about
  one interpreter start. The agent speaks JSON lines on its stdin/stdout, which here are the
  SSH channel; the TLS key of the cluster travels the same way, never on disk or in a
  command line.
* **Nothing outlives the client**: when the SSH channel closes (close, crash, lost link),
  sshd closes the agent's stdin, and the agent stops its workers after ``stop_grace``
  seconds; forked children also die with the agent. Every process carries
  ``dask_deploy._agent --cluster NAME`` in its command line, which is how
  :meth:`SSHBackend.deploy_discover` finds leftovers for ``dask-deploy gc``.
* **Logs are files on the host** (one per worker), read over SSH, so the log of a worker
  that died is still there.
* **The dashboard** of a remote scheduler stays bound to the host's loopback and is reached
  through a local SSH port forward (works when only SSH is reachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh
from dask_deploy import (
    BackendError,
    ClusterSpec,
    Handle,
    Phase,
    SchedulerInfo,
    StartTimeout,
    Status,
    Unit,
    hookimpl,
)
from dask_deploy._agent import AgentClient, agent_command
from dask_deploy.toolkit import is_loopback, scheduler_kwargs, worker_kwargs, worker_role

from ._options import SSHOptions

__all__ = ["SSHBackend"]

_LOGDIR_MARK = "dask-deploy-logdir "
#: The most of one log file that is read back (its end).
_LOG_BYTES = 4 * 1024 * 1024
#: asyncssh options we set unless the user does: notice a dead link within ~30 s.
_CONNECT_DEFAULTS: Mapping[str, Any] = {"keepalive_interval": 10, "keepalive_count_max": 3}


def key_of(address: str, options: Mapping[str, Any]) -> str:
    """``[user@]address:port``: what tells SSH endpoints apart (and names them in handles)."""
    user = options.get("username")
    return f"{user + '@' if user else ''}{address}:{options.get('port', 22)}"


class _Host:
    """One distinct host: its SSH connection, its agent and the state around them."""

    def __init__(self, address: str, options: Mapping[str, Any], python: str) -> None:
        self.address = address
        #: One connection per SSH endpoint: the same name with another port or user is another.
        self.key = key_of(address, options)
        self.options = options
        self.python = python
        self.conn: asyncssh.SSHClientConnection | None = None
        self.proc: asyncssh.SSHClientProcess[str] | None = None
        #: A detached agent's socket channel (its stdin is not ours: it outlives us).
        self.writer: asyncssh.SSHWriter[str] | None = None
        self.agent: AgentClient | None = None
        #: The address this client reached the host at: what its processes bind to.
        self.peer = address
        self.log_dir: str | None = None
        self.stderr: deque[str] = deque(maxlen=40)
        self.tasks: list[asyncio.Task[None]] = []
        self.lock = asyncio.Lock()  # one agent start at a time
        self.connecting = asyncio.Lock()  # one connection attempt at a time
        self.units: set[str] = set()
        self.reconnect: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self.options.get("port", 22))

    @property
    def up(self) -> bool:
        return self.agent is not None and self.agent.alive


@dataclass(frozen=True)
class _Placed:
    """Where a unit (or the scheduler) was started, and the names of its processes."""

    host: _Host
    agent: AgentClient
    names: tuple[str, ...]


class SSHBackend:
    """The backend plugin object of one cluster (built by ``BackendInfo.factory``)."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.options: SSHOptions | None = spec.backend_options
        self._hosts: dict[str, _Host] = {}  # by _Host.key
        self._entries: list[str] = []  # the key of each entry of hosts
        if self.options is not None:
            for i, address in enumerate(self.options.hosts):
                host = _Host(address, self.options.connect_options[i], self.options.remote_python[i])
                self._hosts.setdefault(host.key, host)
                self._entries.append(host.key)
        self._agents: dict[str, _Placed] = {}  # unit or scheduler name -> where it runs
        self._forwards: dict[str, asyncssh.SSHListener] = {}

    # -- connections and agents ---------------------------------------------------------

    def _host(self, key: str) -> _Host:
        try:
            return self._hosts[key]
        except KeyError:
            raise BackendError(f"host {key!r} is not in this cluster's hosts "
                               f"{list(self._hosts)}") from None

    async def _connection(self, host: _Host) -> asyncssh.SSHClientConnection:
        """The host's SSH connection, opened (again) if needed."""
        async with host.connecting:
            if host.conn is None or host.conn.is_closed():
                await self._connect(host)
            assert host.conn is not None
            return host.conn

    async def _connect(self, host: _Host) -> None:
        """Open the host's connection, turning asyncssh's errors into ones that say the fix."""
        opts = {**_CONNECT_DEFAULTS, "connect_timeout": self._boot_timeout, **host.options}
        where = host.key
        try:
            host.conn = await asyncssh.connect(host.address, **opts)
        except asyncssh.HostKeyNotVerifiable as e:
            raise BackendError(
                f"the SSH host key of {where} is not trusted ({e}): it is not in known_hosts, or "
                "it changed. Host keys are always checked. If the key is right, add it with "
                f"`ssh-keyscan -p {host.port} {host.address} >> ~/.ssh/known_hosts` (check its "
                "fingerprint), or pass connect_options={'known_hosts': '/path/to/known_hosts'}"
            ) from None
        except asyncssh.PermissionDenied as e:
            user = "" if opts.get("username") else " as your local user name"
            raise BackendError(
                f"SSH login to {where}{user} was refused ({e.reason}): give "
                "connect_options={'username': ..., 'client_keys': [...]} or load the key "
                "into ssh-agent") from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            raise BackendError(f"cannot connect to {where} over SSH: "
                               f"{type(e).__name__}: {e}") from None
        peer = host.conn.get_extra_info("peername")
        if peer:
            host.peer = str(peer[0])

    async def _ensure(self, host: _Host) -> AgentClient:
        """The host's agent, with its connection, started on first use (and after a loss)."""
        async with host.lock:
            if host.up:
                assert host.agent is not None
                return host.agent
            conn = await self._connection(host)
            if not self.spec.shutdown_on_close:
                return await self._ensure_detached(host, conn)
            grace = self.options.stop_grace if self.options else 3.0
            agent_cmd = " ".join(shlex.quote(a) for a in agent_command(host.python, self.spec.name,
                                                                        grace))
            # The agent makes the log folder and checks it is private (DASK_DEPLOY_LOG_DIR):
            # a shell's mkdir -p would accept a folder another user planted.
            command = (f"umask 077; d={self._log_dir_expr()} && "
                       f"printf '{_LOGDIR_MARK}%s\\n' \"$d\" && "
                       f"exec env DASK_DEPLOY_CLUSTER={shlex.quote(self.spec.name)} "
                       f"DASK_DEPLOY_LOG_DIR=\"$d\" {agent_cmd}")
            try:
                proc = await conn.create_process(command, encoding="utf-8", errors="replace")
            except (OSError, asyncssh.Error) as e:
                raise BackendError(f"cannot run the agent on {host.key}: {e}") from None
            agent = AgentClient(proc.stdin.write)
            host.proc, host.agent, host.log_dir = proc, agent, None
            host.stderr.clear()
            host.tasks = [asyncio.ensure_future(self._read(host, proc.stdout, agent)),
                          asyncio.ensure_future(self._drain(host, proc))]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(agent.ready.wait(), self._boot_timeout)
            if agent.alive and agent.pid is not None and host.log_dir:
                return agent
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(host.tasks[1]), 2)
            proc.close()
            host.log_dir = None  # maybe refused (someone else's): never ours to remove
            why = "".join(host.stderr).strip() or (
                "it exited without a word" if not agent.alive else
                f"no answer within {self._boot_timeout:g}s")
            err = BackendError if not agent.alive else StartTimeout
            if "invalid log_directory=" in why:  # the agent refused the folder: say only that
                raise err(f"on {host.key}: {why.splitlines()[-1]}")
            raise err(
                f"the dask-deploy agent did not start on {host.key} with "
                f"remote_python={host.python!r}: {why}\nThat interpreter needs dask-deploy-core "
                "(pip install dask-deploy-core) with the same dask/distributed versions as "
                "here; set remote_python=... to pick another one.")

    @property
    def _boot_timeout(self) -> float:
        # Connecting and booting an agent (one interpreter start per host) is set-up, not a
        # unit's start: a start_timeout tuned for workers (even 2 s) must not fail it.
        return max(self.spec.start_timeout, 60.0)

    async def _ensure_detached(self, host: _Host, conn: asyncssh.SSHClientConnection
                               ) -> AgentClient:
        """A detached cluster's agent outlives this client: it listens on a unix socket in
        the cluster's log folder, which this client reaches over the SSH connection (a
        stream-local channel, as ``ssh -L local:/path`` does); started first if nobody
        answers there. A later process (``attach()``) finds it the same way."""
        try:
            result = await conn.run(f"umask 077; printf '%s\\n' {self._log_dir_expr()}",
                                    check=True, timeout=60)
        except (OSError, asyncssh.Error) as e:
            raise BackendError(f"cannot reach {host.key}: {e}") from None
        log_dir = str(result.stdout).rstrip("\n")
        sock = f"{log_dir}/agent.sock"
        grace = self.options.stop_grace if self.options else 3.0
        deadline = time.monotonic() + self._boot_timeout
        launched = False
        while True:
            try:
                reader, writer = await conn.open_unix_connection(sock, encoding="utf-8",
                                                                 errors="replace")
                break
            except (OSError, asyncssh.Error):
                pass
            if not launched:
                agent_cmd = " ".join(shlex.quote(a) for a in agent_command(
                    host.python, self.spec.name, grace, listen=sock))
                # Its own session, no terminal, no pipe of ours: it survives our hang-up.
                await conn.run(f"umask 077; cd / && DASK_DEPLOY_CLUSTER={shlex.quote(self.spec.name)} "
                               f"DASK_DEPLOY_LOG_DIR={shlex.quote(log_dir)} setsid {agent_cmd} "
                               "</dev/null >/dev/null 2>&1 &", check=False, timeout=60)
                launched = True
            elif time.monotonic() > deadline:
                raise StartTimeout(
                    f"the detached dask-deploy agent did not answer on {host.key}:{sock} within "
                    f"{self._boot_timeout:g}s (remote_python={host.python!r} needs "
                    "dask-deploy-core; the SSH server must allow stream-local forwarding)")
            await asyncio.sleep(0.1)
        agent = AgentClient(writer.write)
        host.proc, host.writer, host.agent, host.log_dir = None, writer, agent, log_dir
        host.tasks = [asyncio.ensure_future(self._read(host, reader, agent))]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(agent.ready.wait(), self._boot_timeout)
        if not agent.alive or agent.pid is None:
            writer.close()
            raise StartTimeout(f"the detached agent on {host.key}:{sock} did not say it is ready")
        return agent

    async def _read(self, host: _Host, stream: asyncssh.SSHReader[str], agent: AgentClient) -> None:
        try:
            while line := await stream.readline():
                if line.startswith(_LOGDIR_MARK):  # printed by our shell before the exec
                    host.log_dir = line[len(_LOGDIR_MARK):].rstrip("\n")
                else:
                    agent.feed(line)  # ignores lines that are not the agent's JSON
        except (OSError, asyncssh.Error):
            pass
        finally:
            agent.lost()
            # Teardown takes the agent off the host before ending it: no reconnect then.
            if host.agent is agent:
                host.reconnect = asyncio.ensure_future(self._reconnect(host))

    async def _drain(self, host: _Host, proc: asyncssh.SSHClientProcess[str]) -> None:
        # Keep reading stderr so the channel never stalls; keep its end for error messages.
        with contextlib.suppress(OSError, asyncssh.Error):
            while line := await proc.stderr.readline():
                host.stderr.append(line)

    async def _reconnect(self, host: _Host) -> None:
        """Bring a lost host back, with backoff, so later starts may use it again (until
        teardown cancels it)."""
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await self._ensure(host)
                return
            except Exception:  # keep trying until the cluster closes
                delay = min(delay * 2, 30.0)

    def _log_dir_expr(self) -> str:
        """The log folder of this cluster on a host, as a shell expression."""
        base = self.options.log_directory if self.options else None
        name = shlex.quote(self.spec.name)
        if base is None:
            # The user's own runtime folder, else their state folder: never a shared /tmp
            # name that another user could create first (the agent checks the result).
            return ('"$(if [ -d "$XDG_RUNTIME_DIR" ] && [ ! -L "$XDG_RUNTIME_DIR" ] && '
                    '[ -O "$XDG_RUNTIME_DIR" ]; then echo "$XDG_RUNTIME_DIR/dask-deploy"; '
                    'else echo "${XDG_STATE_HOME:-$HOME/.local/state}/dask-deploy/logs"; fi)"/'
                    + name)
        if base.startswith("~/"):
            return f"\"$HOME\"/{shlex.quote(base[2:])}/{name}"
        return f"{shlex.quote(base)}/{name}"

    def _bind(self, host: _Host, requested: str | None) -> str:
        """Where a process on ``host`` listens: what was asked, unless that is loopback on a
        host this client reaches from outside (then nobody could dial it), else the address
        this client reached the host at."""
        if requested and (not is_loopback(requested) or is_loopback(host.peer)):
            return requested
        return host.peer

    # -- hooks: preparation ---------------------------------------------------------------

    def _options(self) -> SSHOptions:
        if self.options is None:
            raise BackendError("the ssh backend needs hosts=[...] (and connect_options=...)")
        return self.options

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        """Connect to every host and boot its agent, all at once, while the scheduler starts."""
        self._options()
        if not cluster.shutdown_on_close and cluster.scheduler.placement != "remote":
            raise BackendError('a detached ssh cluster (shutdown_on_close=False) needs '
                               'scheduler="remote": a scheduler in this process ends with it')
        hosts = list(self._hosts.values())
        results = await asyncio.gather(*(self._ensure(h) for h in hosts), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise BackendError("\n".join(str(e) for e in errors))
        sched = cluster.scheduler
        if sched.placement == "local" and is_loopback(sched.host):
            far = [h.key for h in hosts if not is_loopback(h.peer)]
            if far:
                raise BackendError(
                    f"workers on {far} cannot reach a scheduler in this process bound to "
                    f"{sched.host}: pass host=<an address of this machine they can reach>, or "
                    'scheduler="remote" to run it on the first host')

    # -- hooks: scheduler -----------------------------------------------------------------

    @hookimpl
    async def deploy_start_scheduler(self, cluster: ClusterSpec) -> SchedulerInfo:
        host = self._host(self._entries[0])
        agent = await self._ensure(host)
        s = cluster.scheduler
        name = f"{cluster.name}-scheduler"
        log = f"{host.log_dir}/{name}.log"
        handle = Handle(cluster.backend, cluster.name, name, f"{host.key}#{agent.pid}",
                        {"host": host.key, "role": "scheduler", "logs": {name: log}})
        agent.start(name, "scheduler", {**scheduler_kwargs(s), "host": self._bind(host, s.host)},
                    {}, log, cluster.tls)
        try:  # whatever goes wrong from here on (also a cancel), the scheduler goes too
            up = await agent.wait_for(lambda: name in agent.schedulers or name in agent.exited,
                                      cluster.start_timeout)
            if name not in agent.schedulers:
                text = ""
                with contextlib.suppress(Exception):
                    text = await self.deploy_get_logs(cluster, handle)
                why = agent.exited.get(name, {}).get("reason") or "no answer"
                err = BackendError if up else StartTimeout
                raise err(f"the scheduler of {cluster.name} did not start on {host.key} ({why}); "
                          f"its log:\n{text[-2000:]}")
            info = agent.schedulers[name]
            self._agents[name] = _Placed(host, agent, (name,))
            if not info.get("dashboard"):
                return SchedulerInfo(handle, info["address"], None)
            # The dashboard listens on the host's side of dashboard_address (loopback by
            # default): this client reaches it through a forward over the SSH connection.
            dash_host = (s.dashboard_address or "").rpartition(":")[0].strip("[]")
            if not dash_host or dash_host in ("0.0.0.0", "::"):
                dash_host = "127.0.0.1"
            data = {**handle.data, "dashboard": f"{dash_host}:{info['dashboard']}"}
            handle = Handle(handle.backend, handle.cluster, handle.name, handle.backend_id, data)
            return SchedulerInfo(handle, info["address"], await self._forward(handle))
        except BaseException:
            self._agents.pop(name, None)
            with contextlib.suppress(Exception):
                await agent.stop([name], 0, 5)
            raise

    async def _forward(self, handle: Handle) -> str:
        """``127.0.0.1:PORT`` on this machine, forwarded to the scheduler's dashboard."""
        if handle.name not in self._forwards:
            host = self._host(handle.data["host"])
            conn = await self._connection(host)
            dest_host, _, dest_port = handle.data["dashboard"].rpartition(":")
            try:
                self._forwards[handle.name] = await conn.forward_local_port(
                    "127.0.0.1", 0, dest_host, int(dest_port))
            except (OSError, asyncssh.Error) as e:
                raise BackendError(f"cannot forward the dashboard of {handle.name} from "
                                   f"{host.key}: {e}") from None
        return f"127.0.0.1:{self._forwards[handle.name].get_port()}"

    @hookimpl
    async def deploy_stop_scheduler(self, cluster: ClusterSpec, handle: Handle) -> None:
        self._adopt([handle])
        await self._stop_names(cluster, [handle.name])
        if not cluster.shutdown_on_close:
            # A detached cluster is being stopped for good (close() leaves it running and
            # never gets here): its agents, which outlive their clients, end now too.
            for host in self._hosts.values():
                if host.up and host.agent is not None:
                    agent, host.agent = host.agent, None  # its end is no loss to reconnect
                    with contextlib.suppress(Exception):
                        agent.request("shutdown")

    @hookimpl
    async def deploy_reattach(self, cluster: ClusterSpec, scheduler: SchedulerInfo) -> str | None:
        """A recorded remote scheduler is reached through a local SSH port forward to it
        (the scheduler's host need not be reachable other than by SSH)."""
        host = self._host(scheduler.handle.data["host"])
        conn = await self._connection(host)
        protocol, _, where = scheduler.address.rpartition("://")
        dest_host, _, dest_port = where.rpartition(":")
        try:
            listener = await conn.forward_local_port("127.0.0.1", 0, dest_host.strip("[]"),
                                                     int(dest_port))
        except (OSError, asyncssh.Error, ValueError) as e:
            raise BackendError(f"cannot forward to the scheduler {scheduler.address} of "
                               f"{cluster.name} through {host.key}: {e}") from None
        self._forwards[f"{scheduler.handle.name}/tunnel"] = listener
        return f"{protocol or 'tcp'}://127.0.0.1:{listener.get_port()}"

    @hookimpl
    async def deploy_dashboard_route(self, cluster: ClusterSpec, scheduler: SchedulerInfo) -> str | None:
        if "dashboard" not in scheduler.handle.data:
            return None  # a scheduler in this process serves its dashboard directly
        return "http://" + await self._forward(scheduler.handle)

    # -- hooks: workers -------------------------------------------------------------------

    def _pick(self, candidates: Sequence[int], down: set[str]) -> _Host | None:
        """The worker host with the smallest share of units (entries listed twice count twice)."""
        weight: dict[str, int] = {}
        for i in candidates:
            weight[self._entries[i]] = weight.get(self._entries[i], 0) + 1
        usable = [a for a in weight if a not in down and self._hosts[a].up]
        if not usable:
            return None
        best = min(usable, key=lambda a: (len(self._hosts[a].units) + 1) / weight[a])
        return self._hosts[best]

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        opts = self._options()
        candidates = opts.worker_hosts(cluster.scheduler.placement == "remote")
        if not any(self._hosts[self._entries[i]].up for i in candidates):
            # Every worker host was lost: try them once more before refusing.
            await asyncio.gather(*(self._ensure(self._hosts[self._entries[i]]) for i in candidates),
                                 return_exceptions=True)
        handles: list[Handle] = []
        down: set[str] = set()
        try:
            for unit in units:
                while True:
                    host = self._pick(candidates, down)
                    if host is None:
                        raise BackendError(f"no worker host of {cluster.name} is reachable: "
                                           f"{[opts.hosts[i] for i in candidates]}")
                    try:
                        handles.append(self._start_unit(cluster, scheduler_address, unit, host))
                        break
                    except Exception:  # this host's agent is gone: try another
                        down.add(host.key)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._stop_names(cluster, [h.name for h in handles])
            raise
        return handles

    def _start_unit(self, cluster: ClusterSpec, scheduler_address: str, unit: Unit,
                    host: _Host) -> Handle:
        agent = host.agent
        assert agent is not None
        logs = {}
        for name, w in zip(unit.worker_names, unit.workers, strict=True):
            kwargs = worker_kwargs(cluster, scheduler_address, name, w)
            kwargs["host"] = self._bind(host, w.options.get("host"))
            logs[name] = f"{host.log_dir}/{name}.log"
            agent.start(name, worker_role(w), kwargs, dict(w.env), logs[name], cluster.tls)
        host.units.add(unit.name)
        self._agents[unit.name] = _Placed(host, agent, unit.worker_names)
        return Handle(cluster.backend, cluster.name, unit.name, f"{host.key}#{agent.pid}",
                      {"host": host.key, "workers": list(unit.worker_names), "logs": logs})

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        self._adopt(handles)
        ours = [h.name for h in handles if "pids" not in h.data]
        found = [h for h in handles if "pids" in h.data]  # from deploy_discover (gc)
        results = await asyncio.gather(self._stop_names(cluster, ours),
                                       *(self._kill(h) for h in found), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise BackendError("; ".join(str(e) for e in errors))

    def _adopt(self, handles: Sequence[Handle]) -> None:
        """Know where the units of a re-attached cluster run (the handles of its record),
        once the agent of their host is reached (``deploy_prepare`` reaches them)."""
        for h in handles:
            host = self._hosts.get(h.data.get("host", ""))
            if h.name in self._agents or "pids" in h.data or host is None or not host.up:
                continue
            assert host.agent is not None
            names = tuple(h.data.get("workers") or [h.name])
            self._agents[h.name] = _Placed(host, host.agent, names)
            if h.data.get("role") != "scheduler":
                host.units.add(h.name)

    async def _stop_names(self, cluster: ClusterSpec, units: Sequence[str]) -> None:
        """Stop units (or the scheduler) by name, each through the agent that started it."""
        grace = self._options().stop_grace
        placed = [self._agents[u] for u in units if u in self._agents]  # unknown: gone already
        by_agent: dict[int, tuple[AgentClient, list[str]]] = {}
        for p in placed:
            by_agent.setdefault(id(p.agent), (p.agent, []))[1].extend(p.names)
        results = await asyncio.gather(*(a.stop(n, grace, grace + 5) for a, n in by_agent.values()))
        stuck = {n for (_, names), ok in zip(by_agent.values(), results, strict=True) if not ok
                 for n in names}
        for unit in units:
            done = self._agents.get(unit)
            if done is not None and not stuck & set(done.names):
                del self._agents[unit]
                done.host.units.discard(unit)
        if stuck:
            raise BackendError(f"{sorted(stuck)} of {cluster.name} did not stop within {grace + 5:g}s")

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        # No SSH round trip: the agents report starts and exits as they happen.
        self._adopt(handles)
        out = []
        for h in handles:
            if h.name not in self._agents:
                out.append(Status(Phase.GONE))
                continue
            p = self._agents[h.name]
            host, agent, names = p.host, p.agent, p.names
            ended = [agent.exited[n] for n in names if n in agent.exited]
            failed = [e for e in ended if e["code"] != 0 and not e["stopped"]]
            if failed:
                out.append(Status(Phase.FAILED, f"{failed[0]['name']} on {host.key}: "
                                                f"{failed[0]['reason']}"))
            elif ended:
                out.append(Status(Phase.GONE, "exited"))
            elif all(n in agent.running for n in names):
                out.append(Status(Phase.RUNNING))
            else:
                out.append(Status(Phase.PENDING))
        return out

    # -- hooks: logs, discovery, teardown ---------------------------------------------------

    @hookimpl
    async def deploy_get_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        host = self._host(handle.data["host"])
        logs: Mapping[str, str] = handle.data.get("logs", {})
        script = "; ".join(f"tail -c {_LOG_BYTES} {shlex.quote(p)} 2>/dev/null; printf '\\0'"
                           for p in logs.values())
        if not script:
            return ""
        try:
            # Bounded: a host that is gone must not hold get_logs() for a connect timeout.
            conn = await asyncio.wait_for(self._connection(host), 15)
            result = await conn.run(script, check=False, timeout=60)
        except (OSError, asyncssh.Error, asyncio.TimeoutError, BackendError) as e:
            raise BackendError(f"cannot read the logs of {handle.name} on {host.key}: "
                               f"{e}") from None
        stdout = result.stdout
        texts = (stdout if isinstance(stdout, str) else (stdout or b"").decode(errors="replace")
                 ).split("\0")
        if len(logs) == 1:
            return texts[0]
        return "\n".join(f"==> {name} <==\n{text}" for name, text in zip(logs, texts, strict=False))

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        """Ask each host for the processes of our agents (by their command line), as this user."""
        hosts = list(self._hosts.values())
        results = await asyncio.gather(*(self._discover(h, cluster_id) for h in hosts),
                                       return_exceptions=True)
        found = [h for r in results if not isinstance(r, BaseException) for h in r]
        errors = [f"{h.key}: {r}" for h, r in zip(hosts, results, strict=True)
                  if isinstance(r, BaseException)]
        if errors and not found and len(errors) == len(hosts):
            raise BackendError(f"cannot list dask-deploy processes on any host: {errors}")
        if errors:
            warnings.warn(f"could not list dask-deploy processes on {errors}", RuntimeWarning,
                          stacklevel=2)
        return found

    async def _discover(self, host: _Host, cluster_id: str | None) -> list[Handle]:
        conn = await self._connection(host)
        result = await conn.run('ps -ww -u "$(id -u)" -o pid=,ppid=,stat=,args=', check=True, timeout=60)
        from dask_deploy._owner import tags_from_argv

        procs: dict[int, tuple[int, str]] = {}  # pid -> (ppid, cluster id)
        tags: dict[int, dict[str, object]] = {}  # pid -> its owner/created tags, detached
        for line in str(result.stdout).splitlines():
            parts = line.split(None, 3)
            if len(parts) < 4 or parts[2].startswith("Z"):
                continue  # zombies are dead already
            args = parts[3].split()
            if "dask_deploy._agent" not in args or "--cluster" not in args[:-1]:
                continue
            cid = args[args.index("--cluster") + 1]
            if cluster_id is None or cid == cluster_id:
                procs[int(parts[0])] = (int(parts[1]), cid)
                tags[int(parts[0])] = {**tags_from_argv(args), "detached": "--listen" in args}
        handles = []
        for pid, (ppid, cid) in sorted(procs.items()):
            if ppid in procs:
                continue  # a worker or scheduler forked by an agent listed below
            family = [pid]
            for child, (parent, _) in sorted(procs.items()):
                if parent in family:
                    family.append(child)
            handles.append(Handle(self.spec.backend, cid, f"{cid}-agent@{host.key}",
                                  f"{host.key}#{pid}",
                                  {"host": host.key, "role": "agent", "pids": family,
                                   **tags[pid]}))
        return handles

    async def _kill(self, handle: Handle) -> None:
        """Stop processes that ``deploy_discover`` found: SIGTERM, then SIGKILL after the grace."""
        host = self._host(handle.data["host"])
        pids = " ".join(str(int(p)) for p in handle.data["pids"])
        wait = int((self._options().stop_grace + 2) * 10)
        script = (
            f"pids='{pids}'; alive() {{ for p in $pids; do case \"$(ps -o stat= -p $p)\" in "
            "''|Z*) ;; *) return 0;; esac; done; return 1; }; "
            "kill -TERM $pids 2>/dev/null; "
            f"i=0; while alive && [ $i -lt {wait} ]; do sleep 0.1; i=$((i+1)); done; "
            "kill -KILL $pids 2>/dev/null; "
            "i=0; while alive && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; ! alive")
        conn = await self._connection(host)
        result = await conn.run(script, check=False, timeout=wait / 10 + 30)
        if result.exit_status != 0:
            raise BackendError(f"processes {pids} of {handle.cluster} on {host.key} "
                               "survived SIGKILL")

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        for listener in self._forwards.values():
            listener.close()
        self._forwards.clear()
        await asyncio.gather(*(self._close_host(cluster, h) for h in self._hosts.values()),
                             return_exceptions=True)

    async def _close_host(self, cluster: ClusterSpec, host: _Host) -> None:
        # No creating hook runs any more (the core waits for them before teardown); only our
        # own reconnect may: end it first, then take the agent off the host, so that its
        # reader, seeing it end, does not start another reconnect.
        if host.reconnect is not None:
            host.reconnect.cancel()
            await asyncio.wait([host.reconnect])
            host.reconnect = None
        agent, host.agent = host.agent, None
        grace = self.options.stop_grace if self.options else 3.0
        proc, conn = host.proc, host.conn

        async def agent_gone() -> None:
            if host.writer is not None:  # detached: hang up; the agent stays
                with contextlib.suppress(Exception):
                    host.writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.gather(*host.tasks), 5)
                host.writer = None
            if proc is None:
                return
            if agent is not None and agent.pid is None:
                # Still importing, nothing forked yet: stop it now rather than after the import.
                with contextlib.suppress(Exception):
                    proc.terminate()
            # End of input: the agent stops its children (after the grace) and exits.
            with contextlib.suppress(Exception):
                proc.stdin.write_eof()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait_closed(), grace + 10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*host.tasks), 5)

        async def logs_gone() -> None:
            # Workers and scheduler were stopped before teardown: their logs can go now.
            if conn is not None and not conn.is_closed() and cluster.shutdown_on_close \
                    and host.log_dir:
                with contextlib.suppress(Exception):
                    await conn.run(f"rm -rf {shlex.quote(host.log_dir)}", timeout=30)

        await asyncio.gather(agent_gone(), logs_gone())
        if conn is not None and not conn.is_closed():
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 10)
        host.conn = host.proc = host.agent = None
