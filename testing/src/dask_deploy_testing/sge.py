"""A one-host Son of Grid Engine for tests and benchmarks (root only, Debian packages).

``with local_sge() as sge:`` makes sure a Grid Engine master and execution daemon answer
on this machine, with a queue ``all.q`` of this host and a parallel environment ``smp``:

* packages missing: runs ``plugins/jobqueue/ci-setup.sh`` (debconf-preseeded
  ``gridengine-master``, ``gridengine-exec``, ``gridengine-client``);
* daemons not running: writes the host aliases, starts ``sge_qmaster``, configures it
  (global config, scheduler, ``smp``, ``all.q``, submit host), then starts ``sge_execd``,
  both in the foreground (``SGE_ND``) so that their PIDs are ours;
* daemons already running (another test session, a developer's): configures and uses
  them, and leaves them running afterwards.

On exit it deletes the jobs it saw submitted (every job of this user) and stops, by PID,
only the daemons it started. Grid Engine's state lives where the Debian packages put it
(``/var/lib/gridengine``, ``/var/spool/gridengine``): a machine has one Grid Engine, so
the configuration is applied idempotently each time instead of in a private directory.

The traps (see the project's ``INFRA.md``): 127.0.0.1 reverse-resolves to ``localhost``,
so ``<hostname> localhost`` goes into ``host_aliases`` before the master starts;
``min_uid``/``min_gid`` must be 0 for root's jobs; ``load_thresholds NONE`` so that a busy
2-core machine does not put the queue into alarm state; a one-second scheduling interval
(and scheduling on submit) so that jobs start within about a second; the queue's
``pe_list`` may only name existing parallel environments. ``slots`` is generous
(oversubscribed, as the CI SLURM is) so that eight one-core jobs run on two cores.

Test infrastructure of the workspace's unpublished ``testing`` member; the published
backend does not need it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SGE_ROOT", "LocalSGE", "ensure_packages", "local_sge"]

SGE_ROOT = "/var/lib/gridengine"
SGE_CELL = "default"
_BIN = "/usr/lib/gridengine"  # the real binaries (/usr/bin/q* are wrappers setting SGE_ROOT)
_DAEMONS = (f"{_BIN}/sge_qmaster", f"{_BIN}/sge_execd")
_CLIENTS = ("qsub", "qstat", "qdel", "qconf")
_CI_SETUP = Path(__file__).resolve().parents[3] / "plugins" / "jobqueue" / "ci-setup.sh"
QUEUE = "all.q"
PE = "smp"
SLOTS = 16


def ensure_packages() -> str | None:
    """Install Grid Engine when missing and we are root; return why not, or None."""
    def present() -> bool:
        return all(os.access(d, os.X_OK) for d in _DAEMONS) and all(shutil.which(c) for c in _CLIENTS)

    if present():
        return None
    if os.geteuid() != 0:
        return "Grid Engine is not installed (run plugins/jobqueue/ci-setup.sh as root)"
    if not _CI_SETUP.exists():
        return f"Grid Engine is not installed and {_CI_SETUP} is missing"
    proc = subprocess.run(["sh", str(_CI_SETUP)], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not present():
        return f"installing Grid Engine failed: {proc.stderr[-2000:]}"
    return None


def _env() -> dict[str, str]:
    return {**os.environ, "SGE_ROOT": SGE_ROOT, "SGE_CELL": SGE_CELL}


@dataclass
class LocalSGE:
    """A running one-host Grid Engine: its host, queue and (if ours) daemons."""

    host: str
    queue: str = QUEUE
    pe: str = PE
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workdir: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {"SGE_ROOT": SGE_ROOT, "SGE_CELL": SGE_CELL}

    @property
    def started(self) -> bool:
        """Whether this object started the daemons (and will stop them)."""
        return bool(self.procs)

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        """Run a Grid Engine client command and return its stdout."""
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_env(),
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def job_ids(self) -> list[str]:
        """Every job (of any user) still queued, running or being deleted."""
        root = ET.fromstring(self.run("qstat", "-xml", "-u", "*"))
        return sorted({j.findtext("JB_job_number", "") for j in root.iter("job_list")} - {""})

    def delete_all(self, timeout: float = 60.0) -> None:
        """Delete every job and wait until the queue is empty (``qdel -f`` after a while)."""
        deadline = time.monotonic() + timeout
        forced = time.monotonic() + timeout / 2
        while time.monotonic() < deadline:
            ids = self.job_ids()
            if not ids:
                return
            force = ["-f"] if time.monotonic() > forced else []
            self.run("qdel", *force, *ids, check=False)
            time.sleep(0.3)
        raise RuntimeError(f"jobs still in the queue after qdel: {self.job_ids()}")

    def stop(self) -> None:
        """Stop the daemons this object started, by PID (never someone else's)."""
        if not self.procs:
            return
        with contextlib.suppress(Exception):
            self.delete_all(timeout=20)
        for name in ("sge_execd", "sge_qmaster"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def _answers() -> bool:
    """Whether a qmaster answers the client commands."""
    try:
        proc = subprocess.run(["qconf", "-sh"], capture_output=True, env=_env(), timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _wait(cond: Callable[[], bool], what: str, logs: list[Path], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    raise RuntimeError(f"{what} within {timeout:g}s\n{tails}")


def _edit(text: str, values: dict[str, str]) -> str:
    """Set ``key value`` lines of a Grid Engine configuration listing (continuations of a
    replaced value, lines ending in a backslash, are dropped with it)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        if skipping:
            skipping = line.rstrip().endswith("\\")
            continue
        key = line.split(None, 1)[0] if line.strip() else ""
        if key in values:
            out.append(f"{key} {values.pop(key)}")
            skipping = line.rstrip().endswith("\\")
        else:
            out.append(line)
    out += [f"{k} {v}" for k, v in values.items()]
    return "\n".join(out) + "\n"


def _apply(sge: LocalSGE, kind: str, name: str, text: str, tmp: Path) -> None:
    """Write one configuration object with ``qconf -M<kind>`` (or ``-A<kind>`` when new).

    ``qconf -Mconf`` takes the *file name* as the configuration's name, hence the folder
    per call.
    """
    folder = Path(tempfile.mkdtemp(dir=tmp))
    path = folder / name
    path.write_text(text)
    sge.run("qconf", f"-M{kind}", str(path))


def _configure(sge: LocalSGE, tmp: Path) -> None:
    """The global config, scheduler, ``smp`` and ``all.q`` (idempotent)."""
    # The daemons run jobs of root (the tests' user) only with min_uid/min_gid 0; a short
    # load report interval makes a fresh execd visible quickly. login_shells NONE: Grid
    # Engine's default starts a job whose shell is bash as a *login* shell, which reads the
    # test user's profile. Here that runs `pyenv init`, whose `pyenv rehash` takes a lock
    # file; a job killed while holding it (the suite stops jobs that are still starting)
    # leaves the lock behind, and then every later job (and every shell on the machine)
    # waits 60 s for it: starts took over a minute and the crash-loop and adapt checks
    # timed out. SLURM's batch jobs are not login shells, so its runs never saw this.
    conf = sge.run("qconf", "-sconf", "global")
    _apply(sge, "conf", "global", _edit(conf, {"min_uid": "0", "min_gid": "0",
                                               "load_report_time": "00:00:05",
                                               "finished_jobs": "100",
                                               "login_shells": "NONE"}), tmp)
    sched = sge.run("qconf", "-ssconf")
    _apply(sge, "sconf", "sched", _edit(sched, {
        "schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1",
        # a job's expected load must not hold back the next jobs on a busy 2-core host
        "job_load_adjustments": "NONE", "load_adjustment_decay_time": "0:0:0",
        "schedd_job_info": "true"}), tmp)
    pe = {"pe_name": PE, "slots": "9999", "user_lists": "NONE", "xuser_lists": "NONE",
          "start_proc_args": "NONE", "stop_proc_args": "NONE", "allocation_rule": "$pe_slots",
          "control_slaves": "FALSE", "job_is_first_task": "TRUE", "urgency_slots": "min",
          "accounting_summary": "FALSE", "qsort_args": "NONE"}
    pe_text = "".join(f"{k} {v}\n" for k, v in pe.items())
    pes = sge.run("qconf", "-spl", check=False).split()
    folder = Path(tempfile.mkdtemp(dir=tmp))
    (folder / PE).write_text(pe_text)
    sge.run("qconf", "-Mp" if PE in pes else "-Ap", str(folder / PE))
    queues = sge.run("qconf", "-sql", check=False).split()
    template = sge.run("qconf", "-sq", QUEUE if QUEUE in queues else "")
    queue = _edit(template, {"qname": QUEUE, "hostlist": sge.host, "load_thresholds": "NONE",
                             "suspend_thresholds": "NONE", "slots": str(SLOTS),
                             "pe_list": PE, "shell": "/bin/bash"})
    folder = Path(tempfile.mkdtemp(dir=tmp))
    (folder / QUEUE).write_text(queue)
    sge.run("qconf", "-Mq" if QUEUE in queues else "-Aq", str(folder / QUEUE))
    if sge.host not in sge.run("qconf", "-ss", check=False).split():
        sge.run("qconf", "-as", sge.host)
    if sge.host not in sge.run("qconf", "-sh", check=False).split():
        sge.run("qconf", "-ah", sge.host)


def _queue_ready(sge: LocalSGE) -> bool:
    """``all.q@host`` is known and in no bad state (u: execd unheard, a/E/d/D/s...)."""
    try:
        out = sge.run("qstat", "-f", "-q", f"{QUEUE}@{sge.host}", "-xml", timeout=20)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    root = ET.fromstring(out)
    for q in root.iter("Queue-List"):
        if q.findtext("name", "") == f"{QUEUE}@{sge.host}":
            return not (q.findtext("state") or "").strip()
    return False


def _host_aliases(host: str) -> None:
    """``<host> localhost``: the daemons meet over 127.0.0.1, which resolves to localhost."""
    path = Path(SGE_ROOT, SGE_CELL, "common", "host_aliases")
    line = f"{host} localhost"
    text = path.read_text() if path.exists() else ""
    if not any(re.split(r"\s+", ln.strip()) == [host, "localhost"] for ln in text.splitlines()):
        path.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")


@contextlib.contextmanager
def local_sge() -> Iterator[LocalSGE]:
    """Start (or reuse) a one-host Grid Engine; stop what was started here on exit."""
    why = ensure_packages()
    if why:
        raise RuntimeError(why)
    host = socket.gethostname()
    try:
        socket.gethostbyname(host)
    except OSError as e:
        raise RuntimeError(f"the host name {host!r} does not resolve; add '127.0.0.1 {host}' "
                           "to /etc/hosts") from e
    act_qmaster = Path(SGE_ROOT, SGE_CELL, "common", "act_qmaster")
    if act_qmaster.exists() and act_qmaster.read_text().strip() != host and not _answers():
        # The packages wrote the master's name at install time; the host may have been
        # renamed since (a CI image built elsewhere): the master is this host.
        act_qmaster.write_text(host + "\n")
    tmp = Path(tempfile.mkdtemp(prefix="dd-sge-"))
    sge = LocalSGE(host, workdir=str(tmp))
    env = {**_env(), "SGE_ND": "1"}  # stay in the foreground: the PID we hold is the daemon's
    devnull = subprocess.DEVNULL
    try:
        if not _answers():
            if os.geteuid() != 0:
                raise RuntimeError("Grid Engine is not running and only root can start it")
            _host_aliases(host)
            qlog = tmp / "qmaster.log"
            with open(qlog, "wb") as out:
                sge.procs["sge_qmaster"] = subprocess.Popen(
                    [f"{_BIN}/sge_qmaster"], env=env, stdin=devnull, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)

            def master_up() -> bool:
                proc = sge.procs["sge_qmaster"]
                if proc.poll() is not None:
                    raise RuntimeError(f"sge_qmaster exited with {proc.returncode}: "
                                       f"{qlog.read_text(errors='replace')[-2000:]}")
                return _answers()

            _wait(master_up, "sge_qmaster did not answer", [qlog])
        _configure(sge, tmp)  # before sge_execd starts: it reads min_uid when it starts
        if not _queue_ready(sge) and sge.started:
            elog = tmp / "execd.log"
            with open(elog, "wb") as out:
                sge.procs["sge_execd"] = subprocess.Popen(
                    [f"{_BIN}/sge_execd"], env=env, stdin=devnull, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)

            def execd_up() -> bool:
                proc = sge.procs["sge_execd"]
                if proc.poll() is not None:
                    raise RuntimeError(f"sge_execd exited with {proc.returncode}: "
                                       f"{elog.read_text(errors='replace')[-2000:]}")
                return _queue_ready(sge)

            _wait(execd_up, f"the queue {QUEUE}@{host} did not become ready", [elog])
        elif not _queue_ready(sge):
            raise RuntimeError(f"Grid Engine answers but {QUEUE}@{host} is not usable "
                               f"(qstat -f): {sge.run('qstat', '-f', check=False)}")
        yield sge
    finally:
        sge.stop()
        shutil.rmtree(tmp, ignore_errors=True)
