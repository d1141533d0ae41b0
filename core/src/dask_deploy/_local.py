"""The ``local`` backend: workers (and optionally the scheduler) as processes on this machine.

Workers are forked by one agent process (:mod:`dask_deploy._agent`) that has ``distributed``
imported already, so N workers are ready in about the time of one. Everything binds to
127.0.0.1 unless ``host`` says otherwise. Each worker writes its log to a file, so the log
of a worker that died can still be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._agent import AgentClient, agent_command
from ._errors import BackendError, SpecError, StartTimeout
from ._private import open_private, private_dir, runtime_dir
from ._specs import BackendInfo, ClusterSpec, Handle, Phase, SchedulerInfo, Status, Unit
from .hookspecs import hookimpl
from .toolkit import worker_kwargs, worker_role

__all__ = ["INFO", "LocalBackend", "LocalOptions"]


@dataclass(frozen=True)
class LocalOptions:
    """Options of the local backend beyond the generic ones."""

    #: Interpreter that runs the worker agent (defaults to this one).
    python: str = sys.executable
    #: Where logs go (a 0700 folder per cluster is made in it); default:
    #: ``deploy.log-directory``, else ``$XDG_RUNTIME_DIR/dask-deploy`` when that is private,
    #: else ``<state directory>/logs``. Never a shared ``/tmp`` name that another user could
    #: pre-create; a folder that is a symlink or someone else's is refused.
    log_directory: str | None = None
    #: Seconds a stopping worker gets to leave cleanly before it is killed.
    stop_grace: float = 3.0

    def __post_init__(self) -> None:
        if not isinstance(self.python, str) or not self.python:
            raise SpecError("python", self.python, "expected the path of a Python interpreter")
        if self.log_directory is not None and (not isinstance(self.log_directory, str)
                                               or not self.log_directory):
            raise SpecError("log_directory", self.log_directory, "expected a directory path or None")
        if isinstance(self.stop_grace, bool) or not isinstance(self.stop_grace, (int, float)) \
                or self.stop_grace < 0:
            raise SpecError("stop_grace", self.stop_grace, "expected seconds >= 0")


def _default_threads(options: dict[str, Any]) -> int:
    # LocalCluster's rule: share this machine's cores among the workers.
    n = options.get("n_workers") or 1
    return max(1, (os.cpu_count() or 1) // n)


def _default_workers(options: dict[str, Any]) -> int:
    if options.get("threads_per_worker"):
        return max(1, (os.cpu_count() or 1) // options["threads_per_worker"])
    return os.cpu_count() or 1


def log_directory(spec: ClusterSpec, configured: str | None) -> str:
    """The cluster's log folder (a path only: :func:`private_dir` makes and checks it)."""
    import dask.config

    base = configured or dask.config.get("deploy.log-directory", default=None)
    if not base:
        run = runtime_dir()
        if run is not None:
            base = os.path.join(run, "dask-deploy")
        else:
            from ._statedir import state_dir

            base = str(state_dir() / "logs")
    return os.path.join(os.path.abspath(os.path.expanduser(base)), spec.name)


class LocalBackend:
    """One cluster's local backend: an agent subprocess and the log directory."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.options: LocalOptions = spec.backend_options or LocalOptions()
        self.logs = log_directory(spec, self.options.log_directory)
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._agent: AgentClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None

    async def agent(self) -> AgentClient:
        """The agent, started on first use (shared by the scheduler and all workers)."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._agent is not None and self._agent.alive:
                return self._agent
            if self._reader is not None:  # it died: its children are gone; start a new one
                await self._reader
            private_dir(self.logs)
            if not self.spec.shutdown_on_close:
                self._agent = await self._detached_agent()
                return self._agent
            stderr = open_private(os.path.join(self.logs, "agent.log"))
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *agent_command(self.options.python, self.spec.name),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                    env={**os.environ, "DASK_DEPLOY_CLUSTER": self.spec.name})
            finally:
                os.close(stderr)
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            stdin = proc.stdin
            agent = AgentClient(lambda line: stdin.write(line.encode()))
            self._reader = asyncio.ensure_future(self._read(proc, agent))
            self._agent = agent
        return agent

    async def _detached_agent(self) -> AgentClient:
        """A detached cluster's agent outlives us: reach it (or start it) over its socket."""
        from ._statedir import state_dir

        path = str(state_dir() / f"{self.spec.name}.sock")
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError:
            stderr = open_private(os.path.join(self.logs, "agent.log"))
            try:
                proc = await asyncio.create_subprocess_exec(
                    *agent_command(self.options.python, self.spec.name, listen=path,
                                   start_timeout=self.spec.start_timeout),
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                    stderr=stderr, start_new_session=True)  # not in our Ctrl-C's process group
            finally:
                os.close(stderr)
            deadline = asyncio.get_running_loop().time() + self.spec.start_timeout
            while True:
                try:
                    reader, writer = await asyncio.open_unix_connection(path)
                    break
                except OSError:
                    if proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                        raise BackendError(f"the detached agent of {self.spec.name} did not start; "
                                           f"see {self.logs}/agent.log") from None
                    await asyncio.sleep(0.05)
        self._writer = writer
        agent = AgentClient(lambda line: writer.write(line.encode()))
        self._reader = asyncio.ensure_future(self._read(reader, agent))
        await agent.ready.wait()
        return agent

    async def _read(self, stream: asyncio.StreamReader | asyncio.subprocess.Process,
                    agent: AgentClient) -> None:
        reader = stream.stdout if isinstance(stream, asyncio.subprocess.Process) else stream
        assert reader is not None
        while line := await reader.readline():
            agent.feed(line.decode(errors="replace"))
        why = ""
        if isinstance(stream, asyncio.subprocess.Process):
            code = await stream.wait()
            try:
                with open(os.path.join(self.logs, "agent.log"), errors="replace") as f:
                    tail = f.read()[-1500:].strip()
            except OSError:
                tail = ""
            why = f"the local agent exited with code {code}" + (f"; its log ends:\n{tail}" if tail else "")
        agent.lost(why)

    def _log(self, name: str) -> str:
        return os.path.join(self.logs, f"{name}.log")

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        await self.agent()  # boot the template while the scheduler starts

    # -- scheduler ----------------------------------------------------------------------

    @hookimpl
    async def deploy_start_scheduler(self, cluster: ClusterSpec) -> SchedulerInfo:
        agent = await self.agent()
        name = f"{cluster.name}-scheduler"
        s = cluster.scheduler
        kwargs = {"host": s.host, "port": s.port, "dashboard": s.dashboard_address is not None,
                  "dashboard_address": s.dashboard_address, "idle_timeout": s.idle_timeout,
                  **s.options}
        agent.start(name, "scheduler", kwargs, {}, self._log(name), cluster.tls)
        up = await agent.wait_for(lambda: name in agent.schedulers or name in agent.exited,
                                  cluster.start_timeout)
        handle = Handle(cluster.backend, cluster.name, name, str(agent.pid),
                        {"log": self._log(name), "role": "scheduler"})
        if name not in agent.schedulers:
            await agent.stop([name], 0, 5)
            log = await self.deploy_get_logs(cluster, handle)
            why = agent.exited.get(name, {}).get("reason") or "no answer"
            err = BackendError if up else StartTimeout
            raise err(f"the scheduler of {cluster.name} did not start ({why}); its log:\n{log[-2000:]}")
        info = agent.schedulers[name]
        host = info["address"].split("://")[-1].rsplit(":", 1)[0]
        dash = f"{host}:{info['dashboard']}" if info.get("dashboard") else None
        return SchedulerInfo(handle, info["address"], dash)

    @hookimpl
    async def deploy_stop_scheduler(self, cluster: ClusterSpec, handle: Handle) -> None:
        if self._agent is not None:
            await self._agent.stop([handle.name], self.options.stop_grace,
                                   self.options.stop_grace + 5)

    # -- workers ------------------------------------------------------------------------

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        agent = await self.agent()
        handles = []
        for unit in units:
            for name, w in zip(unit.worker_names, unit.workers, strict=True):
                # role "nanny": the agent's child runs a Nanny, which spawns the worker.
                agent.start(name, worker_role(w),
                            worker_kwargs(cluster, scheduler_address, name, w),
                            dict(w.env), self._log(name), cluster.tls)
            handles.append(Handle(cluster.backend, cluster.name, unit.name, str(agent.pid),
                                  {"workers": list(unit.worker_names)}))
        return handles

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        found = [pid for h in handles for pid in h.data.get("pids", [])]
        if found:  # handles from deploy_discover (gc): the agent and its children by pid
            await _kill(found, self.options.stop_grace)
        handles = [h for h in handles if "workers" in h.data]
        if self._agent is None or not handles:
            return
        names = [w for h in handles for w in h.data["workers"]]
        grace = self.options.stop_grace
        if not await self._agent.stop(names, grace, grace + 5):
            raise BackendError(f"workers {names} of {cluster.name} did not stop")

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        agent = self._agent
        out = []
        for h in handles:
            names = h.data.get("workers", [h.name])  # a scheduler's handle names itself
            if agent is None:
                out.append(Status(Phase.GONE))
                continue
            ended = [agent.exited[n] for n in names if n in agent.exited]
            failed = [e for e in ended if e["code"] != 0 and not e["stopped"]]
            if failed:
                out.append(Status(Phase.FAILED, f"{failed[0]['name']}: {failed[0]['reason']}"))
            elif ended:
                out.append(Status(Phase.GONE, "exited"))
            elif all(n in agent.running for n in names):
                out.append(Status(Phase.RUNNING))
            else:
                out.append(Status(Phase.PENDING))
        return out

    @hookimpl
    async def deploy_get_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        names = handle.data.get("workers", [handle.name])
        parts = []
        for name in names:
            try:
                with open(self._log(name), errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                text = ""
            parts.append(text if len(names) == 1 else f"==> {name} <==\n{text}")
        return "\n".join(parts)

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        return discover_agents(cluster.backend, cluster_id)

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            with contextlib.suppress(Exception):
                proc.stdin.close()  # end of input: the agent stops its children and exits
            try:
                await asyncio.wait_for(proc.wait(), self.options.stop_grace + 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._writer is not None:  # detached: just hang up, the agent stays
            self._writer.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        self._agent = self._proc = self._writer = None
        if cluster.shutdown_on_close:
            shutil.rmtree(self.logs, ignore_errors=True)


async def _kill(pids: list[int], grace: float) -> None:
    """SIGTERM, then SIGKILL whatever still runs after ``grace`` seconds.

    The process groups that these processes lead (an agent's forked workers each lead one,
    holding what their tasks started) get the same signals, so a task's subprocess that
    was reparented away from its worker goes too. Only groups a listed process leads, never
    this process's own: a non-detached agent shares its client's group.
    """
    import signal

    import psutil

    ours = os.getpgrp()
    groups = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid != ours:
                groups.add(pid)

    def signal_groups(sig: int) -> None:
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, sig)

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
            procs[-1].terminate()
        except psutil.Error:
            pass
    signal_groups(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    _, alive = await loop.run_in_executor(None, lambda: psutil.wait_procs(procs, timeout=grace))
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    signal_groups(signal.SIGKILL)


def discover_agents(backend: str, cluster_id: str | None, all_users: bool = False
                    ) -> list[Handle]:
    """This user's agents of ``cluster_id`` (all clusters if None), and their children.

    ``handle.data`` holds the agent's ``pids`` and what the agent itself says about its
    cluster: ``owner`` and ``created`` (its tags), ``detached``, ``owner_alive`` (a
    non-detached agent: whether the client that started it is still its parent) and, for a
    detached agent that answers on its socket, ``scheduler_running`` and ``scheduler``.
    With ``all_users``, other users' agents are listed too (their pids only).
    """
    import psutil

    from ._owner import tags_from_argv

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "uids", "ppid", "create_time"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["uids"] is None or (proc.info["uids"].real != os.getuid() and not all_users):
            continue
        if "dask_deploy._agent" not in cmd or "--cluster" not in cmd[:-1]:
            continue
        cid = cmd[cmd.index("--cluster") + 1]
        if cluster_id is not None and cid != cluster_id:
            continue
        if proc.info["ppid"] and _is_agent(proc.info["ppid"], cmd):
            continue  # a forked worker shares its agent's command line
        tags = tags_from_argv(cmd)
        data: dict[str, Any] = {"owner": tags.get("owner") or _owner_of(proc.info["uids"].real),
                                "created": tags.get("created", proc.info["create_time"]),
                                "detached": "--listen" in cmd}
        if "owner_pid" in tags:
            data["owner_pid"] = tags["owner_pid"]
        if "owner_pid" in tags and not data["detached"]:
            # Its client holds its stdin: while the agent is that client's child, it is used.
            data["owner_alive"] = proc.info["ppid"] == tags["owner_pid"]
        if data["detached"] and proc.info["uids"].real == os.getuid():
            data.update(_ask_detached_agent(cmd[cmd.index("--listen") + 1]))
        with contextlib.suppress(psutil.Error):
            children = [c.pid for c in proc.children(recursive=True)]
            found.append(Handle(backend, cid, f"{cid}-agent", str(proc.pid),
                                {"pids": [proc.pid, *children], **data}))
    return found


def _owner_of(uid: int) -> str:
    """An untagged agent (started by hand, or by an older version): its user, on this host."""
    import pwd
    import socket

    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return f"{user}@{socket.gethostname()}"


def _is_agent(pid: int, cmd: list[str]) -> bool:
    import psutil

    try:
        return psutil.Process(pid).cmdline() == cmd
    except psutil.Error:
        return False


def _ask_detached_agent(path: str, timeout: float = 2.0) -> dict[str, Any]:
    """What a detached agent says on its socket: whether its scheduler runs, and where."""
    import json
    import socket
    import time

    events: list[dict[str, Any]] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            buf = b""
            deadline = time.monotonic() + timeout
            # The agent sends "ready" and its replay at once; a short quiet gap ends it.
            s.settimeout(0.3)
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    if buf or events:
                        break
                    continue
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                events += [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return {"agent_answers": False}
    scheds = {e["name"]: e["address"] for e in events if e.get("op") == "scheduler"}
    exited = {e["name"] for e in events if e.get("op") == "exit"}
    running = {n: a for n, a in scheds.items() if n not in exited}
    out: dict[str, Any] = {"agent_answers": True, "scheduler_running": bool(running)}
    if running:
        out["scheduler"] = next(iter(running.values()))
    return out


INFO = BackendInfo(
    name="local",
    summary="Workers as processes on this machine, forked from a pre-imported agent (the default)",
    factory=LocalBackend,
    options=LocalOptions,
    capabilities=frozenset({"scale", "logs_after_death", "dashboard", "detach", "loopback", "nanny"}),
    defaults={"n_workers": _default_workers, "threads_per_worker": _default_threads,
              "poll_interval": 0.2},
)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [INFO]
