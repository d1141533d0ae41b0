"""dask-deploy-shell: Dask workers as local processes started by a shell command.

A complete dask-deploy backend in one file (see ``docs/writing-a-backend.md``). Each worker
is ``dask worker`` started through ``/bin/sh`` in its own process group, its output goes to
a log file (so the log of a dead worker stays readable), and every process carries the
cluster's name in ``DASK_DEPLOY_CLUSTER`` so that ``deploy_discover`` can find it again.

    >>> from dask_deploy import Cluster
    >>> cluster = Cluster.from_name("shell", n_workers=2)            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from dask_deploy import (
    BackendError,
    BackendInfo,
    ClusterSpec,
    Handle,
    Phase,
    SpecError,
    Status,
    Unit,
    WorkerSpec,
    hookimpl,
)
from dask_deploy.toolkit import created_tag, owner_tag, stop_then_wait, worker_cli_args

__all__ = ["INFO", "ShellBackend", "ShellOptions"]

#: The environment variable that tags every process with its cluster's name.
TAG = "DASK_DEPLOY_CLUSTER"
#: Who started it (``user@host``), when, and from which process: what ``dask-deploy gc``
#: judges an orphan by (its client is gone) after the client died without closing.
OWNER, CREATED, OWNER_PID = "DASK_DEPLOY_OWNER", "DASK_DEPLOY_CREATED", "DASK_DEPLOY_OWNER_PID"
DEFAULT_COMMAND = "exec {python} -m distributed.cli.dask_worker {scheduler} {args}"


@dataclass(frozen=True)
class ShellOptions:
    """The backend's own options (the generic ones, such as ``n_workers``, come from core)."""

    #: Shell command that starts one worker; ``{python}``, ``{scheduler}`` and ``{args}``
    #: (name, threads, memory, ...) are filled in. Prefix it, e.g. ``"nice -n 5 " + ...``.
    command: str = DEFAULT_COMMAND
    #: Where worker logs go (default: a directory per cluster under the temp directory).
    log_directory: str | None = None
    #: Seconds a worker gets to leave after SIGTERM before it is killed.
    stop_grace: float = 3.0
    #: Seconds a worker that lost its scheduler keeps trying before it exits (``dask worker
    #: --death-timeout``): the last line of defence against a worker outliving its cluster.
    death_timeout: float = 60.0
    #: Workers per unit (``<unit>-0``, ``<unit>-1``, ...), started and stopped together,
    #: the way one batch job with ``processes=2`` or one node with two GPUs runs them.
    workers_per_unit: int = 1

    def __post_init__(self) -> None:
        for field in ("{scheduler}", "{args}"):
            if field not in self.command:
                raise SpecError("command", self.command, f"a shell command containing {field}")
        if isinstance(self.stop_grace, bool) or not isinstance(self.stop_grace, (int, float)) \
                or self.stop_grace < 0:
            raise SpecError("stop_grace", self.stop_grace, "seconds >= 0")
        if isinstance(self.death_timeout, bool) or not isinstance(self.death_timeout, (int, float)) \
                or self.death_timeout <= 0:
            raise SpecError("death_timeout", self.death_timeout, "seconds > 0")
        if isinstance(self.workers_per_unit, bool) or not isinstance(self.workers_per_unit, int) \
                or self.workers_per_unit < 1:
            raise SpecError("workers_per_unit", self.workers_per_unit, "an integer >= 1")


class ShellBackend:
    """One cluster's backend: the worker processes it started, by unit name."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.options: ShellOptions = spec.backend_options or ShellOptions()
        base = self.options.log_directory or os.path.join(tempfile.gettempdir(), "dask-deploy-shell")
        self.logs = os.path.join(base, spec.name)
        self.procs: dict[str, list[asyncio.subprocess.Process]] = {}
        self.stopped: set[str] = set()

    def _log(self, worker: str) -> str:
        return os.path.join(self.logs, f"{worker}.log")

    @hookimpl
    def deploy_expand_resources(self, cluster: ClusterSpec, workers: list[WorkerSpec]) -> None:
        """Each unit runs ``workers_per_unit`` workers, with distinct name suffixes."""
        n = self.options.workers_per_unit
        if n > 1:
            workers[:] = [w.replace(suffix=f"{w.suffix}-{i}") for w in workers for i in range(n)]

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        if cluster.tls is not None:
            raise SpecError("security", True, "the shell backend runs plain TCP on 127.0.0.1: security=False")
        os.makedirs(self.logs, mode=0o700, exist_ok=True)

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        os.makedirs(self.logs, mode=0o700, exist_ok=True)
        handles = []
        for unit in units:
            # A unit started again under its old name (the core retries a refused start)
            # replaces whatever still runs under that name.
            await self._kill(self.procs.pop(unit.name, []))
            # Recorded as they start, not after: a start cut short (an error, a cancel)
            # leaves nothing that deploy_teardown cannot find.
            procs: list[asyncio.subprocess.Process] = []
            self.procs[unit.name] = procs
            for name, w in zip(unit.worker_names, unit.workers, strict=True):
                args = [*worker_cli_args(name, w), "--death-timeout", f"{self.options.death_timeout:g}"]
                command = self.options.command.format(
                    python=shlex.quote(sys.executable), scheduler=shlex.quote(scheduler_address),
                    args=shlex.join(args))
                with open(self._log(name), "ab") as log:
                    try:
                        procs.append(await asyncio.create_subprocess_shell(
                            command, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True,  # its own process group: we signal them all
                            env={**os.environ, **w.env, **self._tags(cluster)}))
                    except OSError as e:
                        await self._kill(procs)
                        raise BackendError(f"could not run {command!r}: {e}") from e
            self.stopped.discard(unit.name)
            handles.append(Handle(cluster.backend, cluster.name, unit.name,
                                  ",".join(str(p.pid) for p in procs),
                                  {"workers": list(unit.worker_names)}))
        return handles

    @staticmethod
    def _tags(cluster: ClusterSpec) -> dict[str, str]:
        return {TAG: cluster.name, OWNER: owner_tag(), CREATED: str(created_tag()),
                OWNER_PID: str(os.getpid())}

    async def _kill_tagged(self, pids: list[int], cluster_id: str) -> None:
        """Stop processes another process started (``dask-deploy gc``): by pid, only if
        the process still carries the cluster's tag (a pid may have been reused)."""
        import psutil

        def tagged() -> list[psutil.Process]:
            out = []
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    if p.environ().get(TAG) == cluster_id and p.status() != psutil.STATUS_ZOMBIE:
                        out.append(p)
            return out

        def signal_all(sig: signal.Signals) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                for p in tagged():
                    with contextlib.suppress(psutil.Error):
                        p.send_signal(sig)
            return send

        async def gone() -> bool:
            return not tagged()

        await stop_then_wait(signal_all(signal.SIGTERM), gone, self.options.stop_grace,
                             kill=signal_all(signal.SIGKILL), what=f"processes {pids}")

    async def _kill(self, procs: list[asyncio.subprocess.Process]) -> None:
        """SIGTERM each process group, wait ``stop_grace``, then SIGKILL what is left."""

        def signal_all(sig: signal.Signals) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                for p in procs:
                    if p.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(p.pid, sig)
            return send

        async def gone() -> bool:
            return all(p.returncode is not None for p in procs)

        await stop_then_wait(signal_all(signal.SIGTERM), gone, self.options.stop_grace,
                             kill=signal_all(signal.SIGKILL), what=f"processes {[p.pid for p in procs]}")

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        stopping = {h.name: self.procs.get(h.name, []) for h in handles}
        self.stopped.update(stopping)
        # Forgotten only once they are gone: a stop that fails, or that is cancelled (close()
        # may interrupt a stop in flight), leaves them for the next stop or deploy_teardown.
        await asyncio.gather(*(self._kill(procs) for procs in stopping.values()),
                             # handles this object did not start (found by deploy_discover)
                             *(self._kill_tagged([int(p) for p in h.backend_id.split(",") if p],
                                                 h.cluster)
                               for h in handles if not stopping[h.name]))
        for name, procs in stopping.items():
            if self.procs.get(name) is procs:
                del self.procs[name]

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        out = []
        for h in handles:
            codes = [p.returncode for p in self.procs.get(h.name, [])]
            errors = [c for c in codes if c not in (None, 0)]
            if not codes or h.name in self.stopped:
                out.append(Status(Phase.GONE))
            elif errors:
                out.append(Status(Phase.FAILED, f"a worker exited with code {errors[0]}"))
            elif all(c == 0 for c in codes):
                out.append(Status(Phase.GONE, "exited"))
            else:
                out.append(Status(Phase.RUNNING))
        return out

    @hookimpl
    async def deploy_get_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        parts = []
        for name in handle.data.get("workers", [handle.name]):
            with contextlib.suppress(FileNotFoundError), open(self._log(name), errors="replace") as f:
                parts.append(f.read())
        return "\n".join(parts)

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        import psutil

        found = []
        for p in psutil.process_iter(["pid", "environ"]):
            env = p.info["environ"] or {}
            tag = env.get(TAG)
            if tag and (cluster_id is None or tag == cluster_id) and p.pid != os.getpid():
                # The ownership tags: gc removes the workers of a client that is gone (the
                # scheduler ran in it, so a cluster here is never detached).
                tags: dict[str, object] = {"owner": env.get(OWNER), "detached": False}
                with contextlib.suppress(KeyError, ValueError):
                    tags.update(created=int(env[CREATED]), owner_pid=int(env[OWNER_PID]))
                found.append(Handle(cluster.backend, tag, f"{tag}-pid{p.pid}", str(p.pid), tags))
        return found

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        with contextlib.suppress(Exception):
            await self._kill([p for procs in self.procs.values() for p in procs])
        self.procs.clear()
        if cluster.shutdown_on_close:
            # Ask the system, not our records: whatever still carries the cluster's tag
            # (lost by any path) is killed, so that nothing outlives the cluster.
            import psutil

            for p in psutil.process_iter(["pid", "environ"]):
                if (p.info["environ"] or {}).get(TAG) == cluster.name and p.pid != os.getpid():
                    with contextlib.suppress(psutil.Error):
                        p.kill()
            shutil.rmtree(self.logs, ignore_errors=True)



INFO = BackendInfo(
    name="shell",
    summary="Workers as local processes started by a shell command (the tutorial backend)",
    factory=ShellBackend,
    options=ShellOptions,
    # loopback: with the default host every process binds 127.0.0.1, so TLS is not needed.
    capabilities=frozenset({"scale", "logs_after_death", "dashboard", "loopback"}),
    defaults={"n_workers": 1, "poll_interval": 0.2},
)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [INFO]
