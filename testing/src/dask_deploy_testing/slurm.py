"""A throwaway single-node SLURM for tests and benchmarks (root only, Debian packages).

``with local_slurm() as slurm:`` starts a private ``munged``, ``slurmctld`` and ``slurmd``
from a generated ``slurm.conf`` in a temporary directory, sets ``SLURM_CONF`` so that every
SLURM command of this process (and the jobs, which inherit the environment) talks to it,
and on exit cancels every job and stops the daemons by PID. Nothing is written to
``/etc/slurm``, so it cannot clash with a system SLURM. The traps it avoids are described in
the project's ``INFRA.md``: ``proctrack/linuxproc`` and ``task/none`` (cgroups slow down
teardown), ``OverSubscribe=FORCE:4`` so that eight one-core jobs run on two cores, and a
node that resolves to 127.0.0.1.

Test infrastructure of the workspace's unpublished ``testing`` member, shared by the jobqueue
tests, their conformance run and the benchmark; the published backend does not need it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .net import free_port

__all__ = ["LocalSlurm", "ensure_packages", "local_slurm"]

_PACKAGES = ("sbatch", "squeue", "scancel", "slurmctld", "slurmd", "munged")
# The workspace's copy (this module is never published, so it always runs from a checkout).
_CI_SETUP = Path(__file__).resolve().parents[3] / "plugins" / "jobqueue" / "ci-setup.sh"


def ensure_packages() -> str | None:
    """Install SLURM and munge when missing and we are root; return why not, or None."""
    if all(shutil.which(p) for p in _PACKAGES):
        return None
    if os.geteuid() != 0:
        return "SLURM is not installed (run plugins/jobqueue/ci-setup.sh as root)"
    script = _CI_SETUP if _CI_SETUP.exists() else None
    cmd = ["sh", str(script)] if script else [
        "sh", "-c", "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
        "--no-install-recommends slurmctld slurmd slurm-client munge"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not all(shutil.which(p) for p in _PACKAGES):
        return f"installing SLURM failed: {proc.stderr[-2000:]}"
    return None


@dataclass
class LocalSlurm:
    """A running private SLURM: its configuration file, directory and daemons."""

    conf: str
    root: str
    node: str
    partition: str = "debug"
    #: A second partition on the same node (not the default): for per-pool ``queue``.
    second_partition: str = "second"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": self.conf}

    def run(self, *cmd: str, check: bool = True) -> str:
        """Run a SLURM client command against this SLURM and return its stdout."""
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, **self.env}, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout

    def job_ids(self) -> list[str]:
        """Every job still known to slurmctld that is not finished."""
        out = self.run("squeue", "-h", "-r", "-o", "%i")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def cancel_all(self, timeout: float = 30.0) -> None:
        """Cancel every job and wait until the queue is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.job_ids()
            if not ids:
                return
            self.run("scancel", *ids, check=False)
            time.sleep(0.2)
        raise RuntimeError(f"jobs still in the queue after scancel: {self.job_ids()}")

    def job_state(self, job_id: str) -> str:
        """``JobState`` from ``scontrol show job`` (finished jobs stay for MinJobAge)."""
        out = self.run("scontrol", "-o", "show", "job", job_id)
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        raise RuntimeError(f"no JobState for {job_id}: {out}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cancel_all(timeout=15)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _write_conf(root: Path, node: str, munge_socket: str) -> Path:
    cpus = os.cpu_count() or 1
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=ddtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=300
SchedulerParameters=sched_interval=1
SlurmctldParameters=enable_configless
MaxArraySize=10001
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={int(mem_kib * 0.8 / 1024)} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=second Nodes=ALL Default=NO MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
    return conf


def _wait(cond: object, what: str, logs: list[Path], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise RuntimeError(f"{what} within {timeout}s\n{tails}")


@contextlib.contextmanager
def local_slurm() -> Iterator[LocalSlurm]:
    """Start a private single-node SLURM; cancel all jobs and stop it on exit."""
    why = ensure_packages()
    if why:
        raise RuntimeError(why)
    node = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(node)
    except OSError as e:
        raise RuntimeError(f"the node name {node!r} does not resolve; add '127.0.0.1 {node}' "
                           "to /etc/hosts") from e
    root = Path(tempfile.mkdtemp(prefix="dd-slurm-"))
    root.chmod(0o755)  # munged (user munge) must reach its directory below
    munge_dir = root / "munge"
    munge_dir.mkdir()
    munge_dir.chmod(0o755)  # munged: "execute permissions for all required" on its socket dir
    shutil.chown(munge_dir, "munge", "munge")
    for d in ("state", "spool"):
        (root / d).mkdir()
    munge_socket = str(munge_dir / "munge.socket")
    conf = _write_conf(root, node, munge_socket)
    slurm = LocalSlurm(str(conf), str(root), node)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    devnull = subprocess.DEVNULL
    try:
        slurm.procs["munged"] = subprocess.Popen(
            ["/usr/sbin/munged", "-F", f"--socket={munge_socket}",
             f"--pid-file={munge_dir}/munged.pid", f"--log-file={munge_dir}/munged.log",
             f"--seed-file={munge_dir}/munged.seed"],
            user="munge", group="munge", stdin=devnull, stdout=devnull, stderr=devnull,
            start_new_session=True)
        _wait(lambda: os.path.exists(munge_socket), "munged did not start",
              [munge_dir / "munged.log"])
        logs = [root / "slurmctld.log", root / "slurmd.log"]
        slurm.procs["slurmctld"] = subprocess.Popen(
            ["slurmctld", "-D", "-i"], env=env, stdin=devnull, stdout=devnull,
            stderr=devnull, start_new_session=True)
        slurm.procs["slurmd"] = subprocess.Popen(
            ["slurmd", "-D", "-N", node], env=env, stdin=devnull, stdout=devnull,
            stderr=devnull, start_new_session=True)

        def idle() -> bool:
            for name, proc in slurm.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: " + "\n".join(
                        p.read_text()[-2000:] for p in logs if p.exists()))
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                 env=env, check=False).stdout
            return out.strip() == "idle"

        _wait(idle, "the SLURM node did not become idle", logs)
        yield slurm
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)
