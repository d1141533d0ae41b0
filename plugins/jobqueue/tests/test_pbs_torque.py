"""The pbs backend's job scripts through SLURM's Torque wrappers, on the real CI SLURM.

Debian has no PBS or Torque server. ``slurm-wlm-torque``'s ``qsub``/``qstat``/``qdel``
(unpacked by ci-setup.sh, first on PATH for these tests only) hand the script to
``sbatch``, which reads its ``#PBS`` lines. That checks for real what a PBS-directive
reader makes of our header (name, walltime, array range) and that the submit output
parses; what the wrappers cannot show (PBS Pro's ``qstat -F json``, ``PBS_ARRAY_INDEX``,
``-o <dir>/`` naming, ``qdel -W``) stays covered by the golden tests (see the README).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from dask_deploy import ClusterSpec
from dask_deploy_jobqueue import PBSOptions
from dask_deploy_jobqueue._backend import JobqueueBackend
from dask_deploy_jobqueue._systems import SYSTEMS
from dask_deploy_testing.slurm import LocalSlurm

T = 120.0


def script(tmp_path: Path, count: int) -> Path:
    # /bin/true stands in for the interpreter: each "worker" exits 0 at once, so the job
    # runs the whole body (supervision loop, trailer) in well under a second.
    spec = ClusterSpec(backend="pbs", name="torque", backend_options=PBSOptions(
        cores=1, memory="256MiB", walltime="00:20:00", log_directory=str(tmp_path / "logs"),
        python="/bin/true"))
    path = tmp_path / "job.sh"
    path.write_text(JobqueueBackend(spec).job_script(count=count))
    return path


def qsub(path: Path) -> str:
    out = subprocess.run(["qsub", str(path)], capture_output=True, text=True, check=True,
                         cwd=path.parent, timeout=60).stdout
    return SYSTEMS["pbs"].parse_submit(out)


def show(slurm: LocalSlurm, job: str) -> dict[str, str]:
    out = slurm.run("scontrol", "-o", "show", "job", job)
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def wait_state(slurm: LocalSlurm, job: str, states: set[str]) -> dict[str, str]:
    deadline = time.monotonic() + T
    while True:
        info = show(slurm, job)
        if info.get("JobState") in states or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def test_plain_job_runs_with_its_pbs_directives(torque: LocalSlurm, tmp_path: Path) -> None:
    assert Path(subprocess.run(["which", "qsub"], capture_output=True, text=True,
                               check=True).stdout.strip()).parent.name == "bin"
    job = qsub(script(tmp_path, 1))
    assert job.isdigit()
    info = wait_state(torque, job, {"COMPLETED", "FAILED", "CANCELLED"})
    assert info["JobName"] == "dask-deploy.torque.worker"  # from #PBS -N
    assert info["TimeLimit"] == "00:20:00"  # from #PBS -l walltime
    assert info["JobState"] == "COMPLETED", info
    # the wrapper names the output after the script (its own -o wins over #PBS -o)
    out = (tmp_path / f"job.sh.o{job}").read_text()
    assert "dask-deploy: job finished (exit 0)" in out
    # its qstat is Torque's text format, not PBS Pro's JSON
    text = subprocess.run(["qstat", "-f", job], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    assert "Job_Name = dask-deploy.torque.worker" in text and "job_state = C" in text


def test_array_directive_makes_a_slurm_array(torque: LocalSlurm, tmp_path: Path) -> None:
    """``#PBS -J 1-2`` becomes a SLURM array of two; but SLURM sets SLURM_ARRAY_TASK_ID,
    not PBS_ARRAY_INDEX, so each element finds no unit and fails at once: the limit of
    the wrappers that makes the pbs backend submit one job per unit there (README)."""
    job = qsub(script(tmp_path, 2))
    elements = [f"{job}_1", f"{job}_2"]
    for element in elements:
        info = wait_state(torque, element, {"COMPLETED", "FAILED", "CANCELLED"})
        assert info["ArrayJobId"] == job and info["JobState"] == "FAILED", info
    out = (tmp_path / f"job.sh.o{job}").read_text()
    assert "dask-deploy: no unit for array index" in out
