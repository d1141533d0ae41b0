"""The batch-system backend: one object per cluster that implements the core's hooks.

A *unit* (what the core starts and replaces) is one batch job, running ``processes`` worker
processes. Many units asked for in one ``deploy_start_workers`` call become one job array:
one submission and one queue entry, whose elements are still polled, stopped and read one
by one. Everything runs through the system's own commands (``sbatch``, ``squeue``,
``scancel``, ...) as asynchronous subprocesses, so the client's event loop never blocks.

Files, all under ``<log_directory>/<cluster>/`` on a filesystem the compute nodes share:
job scripts (``job-N.sh``), each job's output file (what ``get_logs`` reads, also after the
job ended), the remote scheduler's ``scheduler.json``, ``tls/`` (mode 0700) with the
cluster's certificate and key (mode 0600), which the job scripts reference by path, and
``owner.json``: the ownership tags of the client that started the cluster (``owner``,
``created``, ``owner_pid``, ``detached``). A batch system's listing names a job's user but
not the client process behind it, so ``deploy_discover`` reads them from there: without
them ``dask-deploy gc`` cannot tell a killed client's jobs (still RUNNING, or COMPLETING
after their workers left) from a live cluster's, and keeps all of that cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import json
import math
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Sequence
from typing import Any

from dask_deploy import (
    BackendError,
    ClusterSpec,
    Handle,
    Phase,
    SchedulerInfo,
    Status,
    Unit,
    WorkerSpec,
    created_tag,
    hookimpl,
    owner_tag,
)
from dask_deploy.toolkit import cli_flags, is_loopback, stop_then_wait, wait_until, worker_cli_args

from . import _script
from ._options import (
    HTCondorOptions,
    JobqueueOptions,
    LSFOptions,
    MoabOptions,
    OAROptions,
    PBSOptions,
    SGEOptions,
    SLURMOptions,
    parse_walltime,
)
from ._systems import SYSTEMS, TORQUE, HTCondor, JobRequest, System, job_name, parse_job_name

__all__ = ["OPTIONS", "JobqueueBackend"]

OPTIONS: dict[str, type[JobqueueOptions]] = {
    "slurm": SLURMOptions, "pbs": PBSOptions, "sge": SGEOptions, "lsf": LSFOptions,
    "htcondor": HTCondorOptions, "moab": MoabOptions, "oar": OAROptions,
}
#: Seconds a submitted job may be invisible to the status command before it counts as gone.
_SUBMIT_GRACE = 60.0
#: A cluster's ownership tags, in its folder (see the module docstring).
OWNER_FILE = "owner.json"
_COMMAND_TIMEOUT = 120.0


def lifetime(walltime: float, margin: float | None) -> tuple[float, float]:
    """``(--lifetime, --lifetime-stagger)`` in seconds for jobs of ``walltime`` seconds.

    Workers retire ``margin`` seconds before the wall clock would kill the job, so that the
    job ends COMPLETED and the core replaces it without counting a failure. The default
    margin is 10% of the walltime, between 30 s and 5 min and at most half of it; a margin
    given explicitly is kept as long as a tenth of the walltime remains. Each worker's
    lifetime is staggered by +/- a quarter of the margin (never more than half the
    lifetime) so that the workers of a cluster do not all leave at once.
    """
    if margin is None:
        margin = min(min(max(0.1 * walltime, 30.0), 300.0), walltime / 2)
    margin = min(margin, 0.9 * walltime)
    life = walltime - margin
    return life, min(margin / 4, life / 2)


class JobqueueBackend:
    """One cluster on one batch system (SLURM, PBS, SGE, LSF, HTCondor, Moab or OAR)."""

    def __init__(self, spec: ClusterSpec) -> None:
        import dask.config

        self.spec = spec
        self.system: System = SYSTEMS[spec.backend]
        self.options: JobqueueOptions = spec.backend_options or OPTIONS[spec.backend]()
        base = (self.options.log_directory
                or dask.config.get("deploy.log-directory", default=None)
                or os.path.join("~", ".dask-deploy", "jobqueue"))
        self.log_dir = os.path.join(os.path.abspath(os.path.expanduser(base)), spec.name)
        self.tls_dir = os.path.join(self.log_dir, "tls")
        self._scripts = 0
        self._tagged = False
        self._probed = False

    # -- what one job asks for -----------------------------------------------------------

    @property
    def python(self) -> str:
        return self.options.python or sys.executable

    @property
    def processes(self) -> int:
        from ._options import default_processes

        if self.options.processes:
            return self.options.processes
        return default_processes(self.options.cores) if self.options.cores else 1

    def _job_resources(self, workers: Sequence[WorkerSpec]) -> tuple[int, int | None]:
        """Cores and memory (bytes or None) of a job running ``workers``."""
        cores = self.options.cores or sum(w.nthreads for w in workers)
        memory = self.options.memory_bytes
        if memory is None and all(isinstance(w.memory_limit, int) for w in workers):
            memory = sum(w.memory_limit for w in workers)  # type: ignore[misc]
        return cores, memory

    def _request(self, role: str, count: int, workers: Sequence[WorkerSpec],
                 o: JobqueueOptions | None = None) -> JobRequest:
        """``o``: the options of the units' pool (default: the cluster's)."""
        o = o or self.options
        if role == "scheduler":
            from dask.utils import parse_bytes

            mem = o.scheduler_memory
            return JobRequest(job_name(self.spec.name, role), self.log_dir, 1, o.scheduler_cores,
                              parse_bytes(mem) if isinstance(mem, str) else mem,
                              o.scheduler_walltime or o.walltime, o)
        cores, memory = self._job_resources(workers)
        return JobRequest(job_name(self.spec.name, role), self.log_dir, count, cores, memory,
                          o.walltime, o)

    # -- resource expansion: ``processes`` workers per job -------------------------------

    @hookimpl
    def deploy_expand_resources(self, cluster: ClusterSpec, workers: list[WorkerSpec]) -> None:
        """One job runs ``processes`` workers named ``<unit>-0``, ``<unit>-1``, ...

        Their threads and memory are already per worker: ``threads_per_worker`` and
        ``memory_limit`` default to ``cores // processes`` and ``memory / processes``.
        """
        n = self.processes
        if n > 1:
            workers[:] = [w.replace(suffix=f"{w.suffix}-{i}") for w in workers for i in range(n)]

    # -- the job script -----------------------------------------------------------------

    def _tls_args(self, role: str) -> list[str]:
        if self.spec.tls is None:
            return []
        cert, key = os.path.join(self.tls_dir, "cert.pem"), os.path.join(self.tls_dir, "key.pem")
        args = ["--tls-ca-file", cert, "--tls-cert", cert, "--tls-key", key]
        return ["--protocol", "tls", *args] if role == "scheduler" else args

    def _host_args(self) -> list[str]:
        if self.options.interface:
            return ["--interface", self.options.interface]
        host = self.spec.scheduler.host
        # On a real cluster the workers run elsewhere and bind to their own address; on one
        # machine (tests, a laptop) everything stays on loopback.
        return ["--host", host] if host and is_loopback(host) else []

    def worker_argv(self, address: str, w: WorkerSpec,
                    o: JobqueueOptions | None = None) -> list[str]:
        """The command line of one worker process (``_script.NAME`` stands for its name);
        ``o``: the options of its pool (default: the cluster's)."""
        o = o or self.options
        options = dict(w.options)
        if o.walltime and "lifetime" not in options:
            life, stagger = lifetime(parse_walltime(o.walltime, self.system.walltime_colon),
                                     o.lifetime_margin)
            options.update(lifetime=f"{life:.0f}s", lifetime_stagger=f"{stagger:.0f}s")
        # The bind address is _host_args' (a compute node binds its own); the worker's
        # dashboard stays as distributed has it.
        argv = [self.python, "-m", o.worker_command, address,
                *worker_cli_args(_script.NAME, w.replace(options=options), host=None,
                                 dashboard=True),
                *self._host_args()]
        if o.death_timeout is not None:
            argv += ["--death-timeout", f"{o.death_timeout:g}"]
        if o.local_directory:
            argv += ["--local-directory", o.local_directory]
        return argv + self._tls_args("worker") + list(o.worker_extra_args)

    def scheduler_argv(self) -> list[str]:
        s = self.spec.scheduler
        argv = [self.python, "-m", "distributed.cli.dask_scheduler",
                "--scheduler-file", self.scheduler_file, "--port", str(s.port)]
        if self.options.interface:
            argv += ["--interface", self.options.interface]
        elif s.host:
            argv += ["--host", s.host]
        if s.dashboard_address is None:
            argv.append("--no-dashboard")
        else:
            argv += ["--dashboard-address", s.dashboard_address]
        if s.idle_timeout is not None:
            argv += ["--idle-timeout", f"{s.idle_timeout:g}s"]
        return argv + self._tls_args("scheduler") + cli_flags(s.options)

    @property
    def scheduler_file(self) -> str:
        return os.path.join(self.log_dir, "scheduler.json")

    def render(self, req: JobRequest, units: Sequence[str],
               commands: Sequence[tuple[str, dict[str, str], list[str]]],
               env: dict[str, str]) -> str:
        """The whole job script for ``units`` (the elements of ``req``, in order)."""
        lines = [self.options.shebang, *self.system.header(req), *self.system.prologue()]
        lines += _script.body(cluster=self.spec.name, index_var=self.system.index_var,
                              first_index=self.system.first_index, units=units,
                              prologue=req.options.job_script_prologue, env=env,
                              grace=self.options.stop_grace, commands=commands,
                              stop_signals=self.system.stop_signals)
        return "\n".join(lines) + "\n"

    def _worker_script(self, address: str, units: Sequence[Unit]) -> tuple[JobRequest, str]:
        """One job (array) for ``units``, all of one pool: its header is that pool's."""
        workers = units[0].workers
        o = self.spec.options_of(units[0].pool) or self.options
        common = dict(set.intersection(*(set(w.env.items()) for w in workers)))
        commands = [(w.suffix, {k: v for k, v in w.env.items() if k not in common},
                     self.worker_argv(address, w, o)) for w in workers]
        req = self._request("worker", len(units), workers, o)
        return req, self.render(req, [u.name for u in units], commands, common)

    def job_script(self, scheduler_address: str | None = None, count: int = 1,
                   workers: Sequence[WorkerSpec] | None = None) -> str:
        """The script that would start ``count`` units (an array when more than one).

        What ``SLURMCluster.job_script()`` shows in dask-jobqueue; reachable as
        ``cluster.backend.job_script()`` or :func:`dask_deploy_jobqueue.job_script`.
        ``workers`` is a unit's expanded workers (default: this backend's own expansion of
        the spec). For HTCondor the submit description comes first, then the script it runs.
        """
        template = tuple(workers) if workers else self._template()
        units = [Unit(f"{self.spec.name}-{i}", template) for i in range(count)]
        protocol = "tls" if self.spec.tls else "tcp"
        address = scheduler_address or f"{protocol}://SCHEDULER-ADDRESS"
        req, script = self._worker_script(address, units)
        if isinstance(self.system, HTCondor):
            path = os.path.join(self.log_dir, "job-N.sh")
            return f"{self.system.submit_description(req, path)}\n# {path}:\n{script}"
        return script

    def _template(self) -> tuple[WorkerSpec, ...]:
        workers = [self.spec.worker]
        self.deploy_expand_resources(self.spec, workers)
        return tuple(workers)

    # -- running the system's commands --------------------------------------------------

    async def _exec(self, argv: Sequence[str], stdin: str | None = None,
                    cwd: str | None = None) -> tuple[int, str, str]:
        """Run one of the system's commands: (exit code, stdout, stderr)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd)
        except FileNotFoundError as e:
            raise BackendError(
                f"{argv[0]} is not on PATH: the {self.system.name} backend runs the batch "
                f"system's commands on this machine (a login node of the cluster)") from e
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), _COMMAND_TIMEOUT)
        except asyncio.TimeoutError as e:
            proc.kill()
            await proc.wait()
            raise BackendError(f"{' '.join(argv)} did not answer within {_COMMAND_TIMEOUT:g}s") from e
        except asyncio.CancelledError:  # e.g. a poll when the cluster closes: reap it now,
            if proc.returncode is None:  # not when the event loop is already gone
                proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace").strip()

    async def _run(self, argv: Sequence[str], stdin: str | None = None, check: bool = True,
                   cwd: str | None = None) -> str:
        code, out, err = await self._exec(argv, stdin, cwd)
        if check and code != 0:
            raise BackendError(f"{' '.join(argv)} failed (exit {code}): {err}")
        return out

    def _ensure_dirs(self) -> None:
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        if not self._tagged:  # before the first submission: gc reads it with the jobs
            self._write_tags()
            self._tagged = True
        tls = self.spec.tls
        if tls is None:
            return
        import tempfile

        # Only the user may read the key: a 0700 directory of ours (not a link, not another
        # user's) and 0600 files, created with those modes. The files are rewritten every
        # time: a cluster that re-uses a name must not run with the key an earlier one left
        # behind. Each is written to a new file and renamed over the old one, so a job that
        # reads it meanwhile gets the whole old or the whole new file, never half of one.
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.tls_dir, 0o700)
        st = os.lstat(self.tls_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise BackendError(f"{self.tls_dir} is not a directory of this user: remove it, "
                               "or choose another log_directory")
        os.chmod(self.tls_dir, 0o700)
        for name, text in (("cert.pem", tls.cert), ("key.pem", tls.key)):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.tls_dir)  # 0600, O_EXCL
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.replace(tmp, os.path.join(self.tls_dir, name))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def _write_tags(self) -> None:
        """Write ``owner.json``: who started this cluster (this process), when, and whether
        it outlives its client. Replaced, never written through (see the key files)."""
        import tempfile

        tags = {"owner": owner_tag(), "created": created_tag(), "owner_pid": os.getpid(),
                "detached": not self.spec.shutdown_on_close}
        fd, tmp = tempfile.mkstemp(prefix=".owner.", dir=self.log_dir)  # 0600, O_EXCL
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(tags, f)
            os.replace(tmp, os.path.join(self.log_dir, OWNER_FILE))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _read_tags(self, cid: str) -> dict[str, Any]:
        """The tags ``owner.json`` of cluster ``cid`` holds, each only if well-formed; {} if
        the file is missing, not a plain file of this user, or not what we write."""
        path = os.path.join(self._base, cid, OWNER_FILE)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return {}
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > 4096:
                return {}
            try:
                raw = json.load(f)
            except ValueError:
                return {}
        if not isinstance(raw, dict):
            return {}
        out: dict[str, Any] = {}
        owner = raw.get("owner")
        if isinstance(owner, str) and "@" in owner:
            out["owner"] = owner
        for key, kind in (("created", (int, float)), ("owner_pid", int), ("detached", bool)):
            value = raw.get(key)
            if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
                out[key] = value
        return out

    async def _dialect(self) -> System:
        """``pbs``: PBS Pro / OpenPBS, or a Torque-style server (Torque, SLURM's Torque
        wrappers), told apart once by ``qstat --version`` (only PBS's names
        ``pbs_version``); the two read and stop jobs differently (:class:`~._systems.Torque`)."""
        if self.system is SYSTEMS["pbs"] and not self._probed:
            _, out, err = await self._exec(["qstat", "--version"])
            self._probed = True
            if "pbs_version" not in out + err:
                self.system = TORQUE
        return self.system

    async def _submit(self, req: JobRequest, script: str) -> tuple[str, list[str], list[str]]:
        """Submit one job or array; return its id, element ids and output file paths."""
        await self._dialect()
        self._ensure_dirs()
        self._scripts += 1
        path = os.path.join(self.log_dir, f"job-{os.getpid()}-{self._scripts}.sh")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        target = path
        if isinstance(self.system, HTCondor):
            target = path[:-3] + ".sub"
            with open(target, "w") as f:
                f.write(self.system.submit_description(req, path))
        stdin = script if self.system.submit_stdin else None
        out = await self._run(self.system.submit_command_for(req, target), stdin=stdin,
                              cwd=self.log_dir if self.system.submit_in_log_dir else None)
        job_id = self.system.parse_submit(out)
        return job_id, self.system.element_ids(job_id, req.count), self.system.log_paths(req, job_id)

    # -- lifecycle hooks ------------------------------------------------------------------

    @hookimpl
    async def deploy_prepare(self, cluster: ClusterSpec) -> None:
        if shutil.which(self.system.submit_binary) is None:
            raise BackendError(
                f"{self.system.submit_binary} is not on PATH: run the {self.system.name} backend "
                "on a machine that can submit jobs (a login node), with the system's commands "
                "installed")
        self._ensure_dirs()

    @hookimpl
    async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                   units: Sequence[Unit]) -> list[Handle]:
        # Units of one pool with the same workers share one job script: one array, one
        # submission; each pool's jobs have their own header (queue, account, walltime).
        groups: dict[tuple[str, str], list[Unit]] = {}
        for unit in units:  # (WorkerSpec holds mappings, so it is not hashable: key by repr)
            groups.setdefault((unit.pool, repr(unit.workers)), []).append(unit)
        arrays = self.options.array and (await self._dialect()).arrays
        batches = [[u] for g in groups.values() for u in g] if not arrays \
            else list(groups.values())
        tasks = [asyncio.ensure_future(self._start_batch(scheduler_address, b)) for b in batches]
        try:
            await asyncio.wait(tasks)
        finally:  # also when cancelled (a close's last resort): nothing submitted is lost
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
            handles = {h.name: h for t in tasks if not t.cancelled() and t.exception() is None
                       for h in t.result()}
            errors = [BackendError("cancelled") if t.cancelled() else t.exception()
                      for t in tasks if t.cancelled() or t.exception() is not None]
            if errors:
                # The batch was refused as a whole: take back what was submitted.
                with contextlib.suppress(Exception):
                    await self._stop(list(handles.values()))
        if errors:
            raise errors[0] if isinstance(errors[0], BackendError) else BackendError(str(errors[0]))
        return [handles[u.name] for u in units]

    async def _start_batch(self, address: str, units: Sequence[Unit]) -> list[Handle]:
        req, script = self._worker_script(address, units)
        job_id, elements, logs = await self._submit(req, script)
        now = time.time()
        return [Handle(self.spec.backend, self.spec.name, u.name, element,
                       {"job": req.name, "array": job_id, "log": log, "role": "worker",
                        "workers": list(u.worker_names), "submitted": now})
                for u, element, log in zip(units, elements, logs, strict=True)]

    @hookimpl
    async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
        await self._stop([h for h in handles if h.data.get("kind") != "tls-dir"])
        for h in handles:  # from deploy_discover (gc): after the jobs, which read the key
            if h.data.get("kind") == "tls-dir":
                self._remove_tls_dir(h)

    async def _stop(self, handles: Sequence[Handle]) -> None:
        """SIGTERM first (the job ends COMPLETED), the system's kill if still there later.

        Workers go before schedulers (``dask-deploy gc`` passes both): a worker told to
        leave by a closing scheduler while it is being signalled is the slow case.
        """
        workers = [h for h in handles if h.data.get("role") != "scheduler"]
        schedulers = [h for h in handles if h.data.get("role") == "scheduler"]
        for batch in (workers, schedulers):
            if batch:
                await self._stop_batch(batch)

    async def _stop_batch(self, handles: Sequence[Handle]) -> None:
        await self._dialect()
        ids = [h.backend_id for h in handles]

        async def run(commands: list[list[str]]) -> None:
            for cmd in commands:
                await self._run(cmd, check=False)

        async def ended() -> bool:  # one cheap status query per round, only while stopping
            listing = await self._listing(handles)
            return not any(listing.get(h.backend_id, (Phase.GONE, ""))[0]
                           in (Phase.PENDING, Phase.RUNNING) for h in handles)

        # The job script kills its workers itself after stop_grace; allow for that.
        await stop_then_wait(lambda: run(self.system.stop_commands(ids, self.options.stop_grace)),
                             ended, self.options.stop_grace + 10,
                             kill=lambda: run(self.system.kill_commands(ids)), kill_grace=60.0,
                             what=f"jobs {ids} of {self.spec.name}", interval=0.2)

    async def _listing(self, handles: Sequence[Handle]) -> dict[str, tuple[Phase, str]]:
        """One status query per job name: element id -> (phase, reason)."""
        await self._dialect()
        by_name: dict[str, list[str]] = {}
        for h in handles:
            by_name.setdefault(h.data.get("job") or job_name(h.cluster, "worker"), []).append(h.backend_id)
        out: dict[str, tuple[Phase, str]] = {}
        for name, ids in by_name.items():
            argv = self.system.status_command(name, ids)
            code, text, err = await self._exec(argv)
            # A failed query must not read as "every job is gone": it raises, and the core
            # retries next round. Some systems fail when only some jobs are gone, though.
            if code != 0 and not self.system.partial_answer(text, err):
                raise BackendError(f"{' '.join(argv)} failed (exit {code}): {err}")
            out.update(self.system.parse_status(text))
        return out

    @hookimpl
    async def deploy_poll(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> list[Status]:
        listing = await self._listing(handles)
        statuses = []
        for h in handles:
            found = listing.get(h.backend_id)
            if found is None:
                statuses.append(self._status_from_log(h))
            elif found[0] is Phase.FAILED:
                detail = _last_error(self._read_log(h))
                statuses.append(Status(Phase.FAILED, f"{found[1]}: {detail}" if detail else found[1]))
            else:
                statuses.append(Status(found[0], found[1]))
        # A scheduler job that ended (walltime, scancel) is named, for cluster.error.
        return [Status(st.phase, f"job {h.backend_id} of {self.system.name}: {st.reason}")
                if h.data.get("role") == "scheduler" and st.phase in (Phase.FAILED, Phase.GONE)
                else st for h, st in zip(handles, statuses, strict=True)]

    def _read_log(self, handle: Handle) -> str:
        path = handle.data.get("log")
        if not path:
            return ""
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _status_from_log(self, h: Handle) -> Status:
        """The system no longer lists the job: its output file says how it ended."""
        text = self._read_log(h)
        codes = re.findall(_script.TRAILER_RE, text)
        if codes:
            code = int(codes[-1])
            if code == 0:
                return Status(Phase.GONE, "the job finished")
            return Status(Phase.FAILED, f"exit code {code}: {_last_error(text)}")
        if text:
            return Status(Phase.FAILED, f"the job ended before its script did: {_last_error(text)}")
        if time.time() - float(h.data.get("submitted", 0)) < _SUBMIT_GRACE:
            return Status(Phase.PENDING, "submitted")
        return Status(Phase.GONE, f"no longer known to {self.system.name}")

    @hookimpl
    async def deploy_get_logs(self, cluster: ClusterSpec, handle: Handle) -> str:
        return self._read_log(handle)

    # -- remote scheduler ---------------------------------------------------------------

    @hookimpl
    async def deploy_start_scheduler(self, cluster: ClusterSpec) -> SchedulerInfo:
        self._ensure_dirs()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.scheduler_file)
        req = self._request("scheduler", 1, [])
        script = self.render(req, [f"{cluster.name}-scheduler"], [("", {}, self.scheduler_argv())], {})
        job_id, elements, logs = await self._submit(req, script)
        handle = Handle(cluster.backend, cluster.name, f"{cluster.name}-scheduler", elements[0],
                        {"job": req.name, "array": job_id, "log": logs[0], "role": "scheduler",
                         "submitted": time.time()})
        what = f"the scheduler job {handle.backend_id} of {cluster.name}"

        async def written(running_is_enough: bool) -> dict[str, Any] | bool | None:
            ident = self._read_scheduler_file()
            if ident is not None:
                return ident
            status = (await self.deploy_poll(cluster, [handle]))[0]
            if status.phase in (Phase.FAILED, Phase.GONE):
                raise BackendError(f"{what} ended before it was up ({status.reason}); its "
                                   f"output:\n{self._read_log(handle)[-2000:]}")
            return True if running_is_enough and status.phase is Phase.RUNNING else None

        try:  # whatever goes wrong from here on (also a cancel), the job goes too
            # Queued: as long as queue_timeout allows (None: as long as it takes); then
            # running: start_timeout to write its address.
            queued = await wait_until(
                lambda: written(True), math.inf if cluster.queue_timeout is None
                else cluster.queue_timeout, f"{what} leaving the queue", interval=0.2,
                why=lambda: f"queue_timeout={cluster.queue_timeout:g}s (still queued)")
            ident = queued if isinstance(queued, dict) else await wait_until(
                lambda: written(False), cluster.start_timeout, f"{what} writing its address",
                interval=0.2, why=lambda: f"start_timeout={cluster.start_timeout:g}s; "
                                          f"{self.scheduler_file} is still missing")
            assert isinstance(ident, dict)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._stop([handle])
            raise
        address = ident["address"]
        dash = ident.get("services", {}).get("dashboard")
        host = address.split("://")[-1].rsplit(":", 1)[0]
        return SchedulerInfo(handle, address, f"{host}:{dash}" if dash else None)

    def _read_scheduler_file(self) -> dict[str, Any] | None:
        try:
            with open(self.scheduler_file) as f:
                ident = json.load(f)
        except (OSError, ValueError):
            return None  # not there yet, or half written
        return ident if isinstance(ident, dict) and "address" in ident else None

    @hookimpl
    async def deploy_stop_scheduler(self, cluster: ClusterSpec, handle: Handle) -> None:
        await self._stop([handle])

    # -- discovery and teardown ---------------------------------------------------------

    @hookimpl
    async def deploy_discover(self, cluster: ClusterSpec, cluster_id: str | None) -> list[Handle]:
        """Jobs of ``cluster_id`` (every dask-deploy cluster if None) still queued or running.

        Asks the batch system (its listing of this user's jobs), not our records, so it works
        from any process, e.g. ``dask-deploy gc`` after the client was killed.
        """
        user = getpass.getuser()
        out = await self._run((await self._dialect()).list_command(user))
        # The listing is this user's jobs: that is their owner (the submitting host is not
        # in it; without a creation time gc leaves them alone unless it can tell more).
        # The cluster's owner.json (under the log folder gc was given) adds the client's
        # host, pid and the creation time; the listing's user stays the owner's user.
        found = []
        tags: dict[str, dict[str, Any]] = {}
        for job in self.system.parse_listing(out):
            tag = parse_job_name(job.name)
            if tag is None or job.phase not in (Phase.PENDING, Phase.RUNNING) \
                    or job.owner not in ("", user):
                continue
            cid, role = tag
            if cluster_id is not None and cid != cluster_id:
                continue
            if cid not in tags:
                tags[cid] = self._read_tags(cid)
            owned = tags[cid]
            host = str(owned.get("owner", "@")).rpartition("@")[2]
            name = f"{cid}-scheduler" if role == "scheduler" else f"{cid}-job-{job.element}"
            found.append(Handle(cluster.backend, cid, name, job.element,
                                {"job": job_name(cid, role), "role": role, **owned,
                                 "owner": f"{user}@{host}"}))
        # A cluster's key folder is listed with its jobs, tagged like them, so that gc, which
        # judges a cluster as one thing, removes it with the jobs of a killed client (it
        # would otherwise outlive that gc run). Only a folder without jobs says that no
        # scheduler runs.
        busy = {h.cluster for h in found}
        for h in self._tls_dirs(user, cluster_id):
            if h.cluster not in tags:
                tags[h.cluster] = self._read_tags(h.cluster)
            owned = {k: v for k, v in tags[h.cluster].items() if k != "created"}
            host = str(owned.get("owner", "@")).rpartition("@")[2]
            data = {**h.data, **owned, "owner": f"{user}@{host}"}
            if h.cluster in busy:
                del data["scheduler_running"]
            found.append(dataclasses.replace(h, data=data))
        return found

    @property
    def _base(self) -> str:
        """The folder that holds each cluster's folder (``log_directory``)."""
        return os.path.dirname(self.log_dir)

    def _tls_dirs(self, user: str, cluster_id: str | None) -> list[Handle]:
        """The ``tls/`` key folders of clusters under our log folder (a crashed client's key
        stays there otherwise). Their age is the last time a start wrote the key, so gc's
        grace period covers a cluster that is starting (the key is written before its first
        submission)."""
        try:
            names = [cluster_id] if cluster_id is not None else sorted(os.listdir(self._base))
        except OSError:
            return []
        found = []
        for cid in names:
            path = os.path.join(self._base, cid, "tls")
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue  # not ours to report (nor to remove)
            created = st.st_mtime
            with contextlib.suppress(OSError):
                created = max(created, os.lstat(os.path.join(path, "key.pem")).st_mtime)
            found.append(Handle(self.spec.backend, cid, f"{cid}-tls", path,
                                {"kind": "tls-dir", "path": path, "owner": f"{user}@",
                                 "created": created, "scheduler_running": False}))
        return found

    def _remove_tls_dir(self, handle: Handle) -> None:
        """Remove a key folder that :meth:`_tls_dirs` found (and the scheduler file beside
        it), only if it is where this backend keeps them for that cluster."""
        path = os.path.join(self._base, handle.cluster, "tls")
        if handle.data.get("path") != path:
            raise BackendError(f"{handle.data.get('path')!r} is not the key folder of "
                               f"{handle.cluster} under {self._base}: not removed")
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                raise BackendError(f"{path} is not a directory of this user: not removed")
            shutil.rmtree(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._base, handle.cluster, "scheduler.json"))

    @hookimpl
    async def deploy_teardown(self, cluster: ClusterSpec) -> None:
        if cluster.shutdown_on_close:
            # The core stopped every job first; the key is not needed any more. The output
            # files stay (the record of what ran, as with dask-jobqueue's log_directory).
            shutil.rmtree(self.tls_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(self.scheduler_file)


def _last_error(text: str) -> str:
    """The most telling line of a job's output: the last error-looking line, else the last."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not re.search(_script.TRAILER_RE, line)]
    if not lines:
        return "no output"
    for line in reversed(lines[-30:]):
        if re.search(r"error|Error|No such file|not found|Killed|CANCELLED|TIME LIMIT", line):
            return line[-500:]
    return lines[-1][-500:]
