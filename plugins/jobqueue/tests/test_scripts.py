"""Job scripts per system (golden-ish), options, defaults and the script body's behaviour.

The body is run for real with bash and a fake ``python`` (a shell script standing in for
``dask worker``), so that the supervision logic (array index -> unit, one failing worker
ends the job, SIGTERM -> exit 0, the trailer) is tested without a batch system.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
from dask_deploy import TLS, Cluster, ClusterSpec, SpecError, WorkerSpec
from dask_deploy_conformance import wait_for as wait_until
from dask_deploy_jobqueue import (
    HTCondorOptions,
    LSFOptions,
    MoabOptions,
    OAROptions,
    PBSOptions,
    SGEOptions,
    SLURMOptions,
    job_script,
)
from dask_deploy_jobqueue._backend import JobqueueBackend, lifetime
from dask_deploy_jobqueue._options import default_processes, defaults, parse_walltime

OPTS = {"slurm": SLURMOptions, "pbs": PBSOptions, "sge": SGEOptions, "lsf": LSFOptions,
        "htcondor": HTCondorOptions, "moab": MoabOptions, "oar": OAROptions}


def spec(system: str, tmp: str, tls: TLS | None = None, nthreads: int = 2,
         memory: int | str | None = 4 * 2**30, **options: object) -> ClusterSpec:
    opts = {"cores": 4, "memory": "8GiB", "processes": 2, "log_directory": tmp,
            "python": "/opt/py/bin/python", **options}
    if system == "lsf" and "walltime" not in options:
        opts["walltime"] = "01:00"
    elif system != "htcondor" and "walltime" not in options:
        opts["walltime"] = "01:00:00"
    return ClusterSpec(backend=system, name="golden",
                       worker=WorkerSpec(nthreads=nthreads, memory_limit=memory),
                       backend_options=OPTS[system](**opts), tls=tls)


def header(script: str, prefix: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(prefix)]


# --------------------------------------------------------------------------------------
# Golden-ish scripts: the directives each system gets
# --------------------------------------------------------------------------------------


def test_slurm_array_script(tmp_path: Path) -> None:
    s = job_script(spec("slurm", str(tmp_path), queue="regular", account="proj42",
                        job_extra_directives=["--constraint=haswell"]), count=3)
    logs = f"{tmp_path}/golden"
    assert header(s, "#SBATCH") == [
        "#SBATCH --job-name=dask-deploy.golden.worker",
        f"#SBATCH --output={logs}/%A_%a.out",
        "#SBATCH --array=1-3",
        "#SBATCH --partition=regular",
        "#SBATCH --account=proj42",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8192M",
        "#SBATCH --time=01:00:00",
        "#SBATCH --constraint=haswell",
    ]
    assert s.startswith("#!/usr/bin/env bash\n")
    assert 'case "${SLURM_ARRAY_TASK_ID}" in' in s
    assert "  1) UNIT=golden-0 ;;" in s and "  3) UNIT=golden-2 ;;" in s
    # two processes per job, each with half the job's cores and memory
    workers = [line for line in s.splitlines() if "distributed.cli.dask_worker" in line]
    assert len(workers) == 2
    assert '--name "${UNIT}"-0 ' in workers[0] and '--name "${UNIT}"-1 ' in workers[1]
    for w in workers:
        # in a process group of its own (setsid when the node has it)
        assert w.startswith("$SETSID /opt/py/bin/python -m distributed.cli.dask_worker "
                            "tcp://SCHEDULER-ADDRESS ")
        assert "--nthreads 2 --memory-limit 4294967296 --no-nanny" in w
        # walltime 1h: workers retire 5 min before, staggered
        assert "--lifetime 3300s --lifetime-stagger 75s" in w
        assert "--death-timeout 60" in w and w.endswith("&")


def test_slurm_single_job_and_skips(tmp_path: Path) -> None:
    s = job_script(spec("slurm", str(tmp_path), job_directives_skip=["--mem", "--time"],
                        job_cpu=8, walltime=None))
    lines = header(s, "#SBATCH")
    assert f"#SBATCH --output={tmp_path}/golden/%j.out" in lines
    assert "#SBATCH --cpus-per-task=8" in lines
    assert not any("--array" in line or "--mem" in line or "--time" in line for line in lines)
    assert "UNIT=golden-0\n" in s and "case" not in s
    assert "--lifetime" not in s  # no walltime, no lifetime


def test_pbs_script(tmp_path: Path) -> None:
    s = job_script(spec("pbs", str(tmp_path), queue="workq", account="acct"), count=4)
    assert header(s, "#PBS") == [
        "#PBS -N dask-deploy.golden.worker",
        "#PBS -j oe",
        f"#PBS -o {tmp_path}/golden/",
        "#PBS -J 1-4",
        "#PBS -q workq",
        "#PBS -A acct",
        "#PBS -l select=1:ncpus=4:mem=8192MB",
        "#PBS -l walltime=01:00:00",
    ]
    assert 'case "${PBS_ARRAY_INDEX}" in' in s
    custom = job_script(spec("pbs", str(tmp_path), resource_spec="select=2:ncpus=8"))
    assert "#PBS -l select=2:ncpus=8" in custom and "-J" not in custom


def test_sge_script(tmp_path: Path) -> None:
    s = job_script(spec("sge", str(tmp_path), queue="all.q", project="p1",
                        resource_spec="h_vmem=8G"), count=2)
    assert header(s, "#$") == [
        "#$ -N dask-deploy.golden.worker",
        "#$ -S /bin/bash",
        "#$ -j y",
        f"#$ -o {tmp_path}/golden/$JOB_ID.$TASK_ID.out",
        "#$ -cwd",
        "#$ -notify",
        "#$ -t 1-2",
        "#$ -q all.q",
        "#$ -P p1",
        "#$ -l h_vmem=8G",
        "#$ -l h_rt=01:00:00",
    ]
    assert 'case "${SGE_TASK_ID}" in' in s
    assert "\ntrap stop TERM INT USR2\n" in s  # qdel's notice to a -notify job
    # a plain job's $TASK_ID differs between Grid Engines ("undefined" or "0"): not used
    assert f"#$ -o {tmp_path}/golden/$JOB_ID.out" in job_script(spec("sge", str(tmp_path)))


def test_lsf_script(tmp_path: Path) -> None:
    s = job_script(spec("lsf", str(tmp_path), queue="normal", project="p2", lsf_units="MB"),
                   count=5)
    assert header(s, "#BSUB") == [
        "#BSUB -J dask-deploy.golden.worker[1-5]",
        f"#BSUB -o {tmp_path}/golden/%J.%I.out",
        "#BSUB -q normal",
        "#BSUB -P p2",
        "#BSUB -n 4",
        '#BSUB -R "span[hosts=1]"',
        "#BSUB -M 8192",
        '#BSUB -R "rusage[mem=8192]"',
        "#BSUB -W 01:00",
    ]
    assert 'case "${LSB_JOBINDEX}" in' in s
    # LSF reads HH:MM: one hour of walltime, so workers retire after 55 minutes
    assert "--lifetime 3300s" in s


def test_moab_script(tmp_path: Path) -> None:
    """dask-jobqueue's MoabJob is a PBSJob submitted with msub: the same directives, with
    Moab's array syntax (msub -t name[range])."""
    s = job_script(spec("moab", str(tmp_path), queue="batch", account="acct"), count=3)
    assert header(s, "#PBS") == [
        "#PBS -N dask-deploy.golden.worker",
        "#PBS -j oe",
        f"#PBS -o {tmp_path}/golden/",
        "#PBS -t dask-deploy.golden.worker[1-3]",
        "#PBS -q batch",
        "#PBS -A acct",
        "#PBS -l select=1:ncpus=4:mem=8192MB",
        "#PBS -l walltime=01:00:00",
    ]
    assert 'case "${MOAB_JOBARRAYINDEX:-${PBS_ARRAYID}}" in' in s
    single = job_script(spec("moab", str(tmp_path), resource_spec="nodes=1:ppn=4"))
    assert "#PBS -l nodes=1:ppn=4" in single and " -t " not in single and "-J" not in single


def test_oar_script(tmp_path: Path) -> None:
    """dask-jobqueue's OARJob: resources and walltime on one -l line (two would make a
    moldable job), --project, and memory as a per-core property when one is named."""
    s = job_script(spec("oar", str(tmp_path), queue="default", project="p3",
                        memory_per_core_property_name="memcore"), count=3)
    assert header(s, "#OAR") == [
        "#OAR -n dask-deploy.golden.worker",
        f"#OAR -O {tmp_path}/golden/%jobid%.out",
        f"#OAR -E {tmp_path}/golden/%jobid%.out",
        "#OAR --array 3",
        "#OAR -q default",
        "#OAR --project p3",
        "#OAR -l /nodes=1/core=4,walltime=01:00:00",
        '#OAR -p "memcore>=2048"',  # 8 GiB over 4 cores, in MiB
    ]
    assert 'case "${OAR_ARRAY_INDEX}" in' in s
    custom = job_script(spec("oar", str(tmp_path), resource_spec="/host=1/core=8",
                             memory_per_core_property_name="not_applicable"))
    assert header(custom, "#OAR")[-1] == "#OAR -l /host=1/core=8,walltime=01:00:00"
    assert "--array" not in custom and "-p " not in custom
    # OAR reads one colon as hours:minutes: "02:00" is two hours, workers retire 5 min early
    assert "--lifetime 6900s" in job_script(spec("oar", str(tmp_path), walltime="02:00"))


def test_htcondor_submit_description(tmp_path: Path) -> None:
    s = job_script(spec("htcondor", str(tmp_path), disk="2GiB",
                        job_extra_directives=['requirements = (OpSys == "LINUX")']), count=3)
    description, _, script = s.partition("\n# ")
    assert description.splitlines() == [
        "universe = vanilla",
        f"executable = {tmp_path}/golden/job-N.sh",
        "arguments = $(Process)",
        'batch_name = "dask-deploy.golden.worker"',
        '+JobBatchName = "dask-deploy.golden.worker"',
        f"output = {tmp_path}/golden/$(Cluster).$(Process).out",
        "request_cpus = 4",
        "request_memory = 8192",
        "request_disk = 2097152",
        'requirements = (OpSys == "LINUX")',
        "queue 3",
    ]
    assert "exec 2>&1" in script
    assert 'case "${1}" in' in script and "  0) UNIT=golden-0 ;;" in script
    assert "--lifetime" not in script  # HTCondor has no walltime by default


def test_tls_files_are_referenced_never_inlined(tmp_path: Path) -> None:
    tls = TLS.temporary()
    s = job_script(spec("slurm", str(tmp_path), tls=tls))
    assert "BEGIN" not in s and tls.key.strip().splitlines()[1] not in s
    tls_dir = f"{tmp_path}/golden/tls"
    assert (f"--tls-ca-file {tls_dir}/cert.pem --tls-cert {tls_dir}/cert.pem "
            f"--tls-key {tls_dir}/key.pem") in s
    assert "tls://SCHEDULER-ADDRESS" in s


def test_tls_files_are_private(tmp_path: Path) -> None:
    backend = JobqueueBackend(spec("slurm", str(tmp_path), tls=TLS.temporary()))
    backend._ensure_dirs()
    assert stat.S_IMODE(os.stat(backend.tls_dir).st_mode) == 0o700
    for name in ("cert.pem", "key.pem"):
        assert stat.S_IMODE(os.stat(f"{backend.tls_dir}/{name}").st_mode) == 0o600
    assert Path(f"{backend.tls_dir}/key.pem").read_text() == backend.spec.tls.key  # type: ignore[union-attr]


def test_worker_options_and_env_become_flags(tmp_path: Path) -> None:
    base = spec("slurm", str(tmp_path), processes=1, walltime=None, interface="ib0",
                worker_extra_args=["--preload", "mymod"], local_directory="/scratch",
                job_script_prologue=["module load python", "source activate dask"])
    sp = ClusterSpec(backend="slurm", name="golden", backend_options=base.backend_options,
                     worker=WorkerSpec(nthreads=3, memory_limit=None, resources={"GPU": 1},
                                       env={"OMP_NUM_THREADS": "1", "A": "x y"},
                                       options={"lifetime": "1h", "nanny": False}))
    s = job_script(sp)
    assert "module load python\nsource activate dask\n" in s
    assert "export OMP_NUM_THREADS=1\n" in s and "export A='x y'\n" in s
    w = next(line for line in s.splitlines() if "dask_worker" in line)
    assert "--nthreads 3 --memory-limit 0 --no-nanny" in w and "--interface ib0" in w
    assert "--local-directory /scratch" in w and "--resources GPU=1" in w
    assert "--lifetime 1h" in w and w.rstrip(" &").endswith("--preload mymod")
    assert "--host" not in w  # the interface decides


# --------------------------------------------------------------------------------------
# Options, defaults and derived values
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("cores", 0), ("memory", "lots"), ("processes", -1), ("walltime", ""),
    ("job_extra_directives", "--foo"), ("stop_grace", -1), ("array", "yes"),
    ("walltime", "two hours"), ("scheduler_walltime", "1:2:3:4"),
])
def test_bad_options_name_the_option(option: str, value: object) -> None:
    with pytest.raises(SpecError) as e:
        SLURMOptions(**{option: value})  # type: ignore[arg-type]
    assert e.value.option == option


def test_processes_more_than_cores_is_refused() -> None:
    with pytest.raises(SpecError, match="processes"):
        SLURMOptions(cores=2, processes=4)


def test_from_name_refuses_unknown_options_before_starting_anything() -> None:
    with pytest.raises(SpecError, match="not an option of backend 'slurm'"):
        Cluster.from_name("slurm", cores=2, memroy="4GB")
    with pytest.raises(SpecError, match="cores"):
        Cluster.from_name("slurm", cores=0)


def test_walltime_parsing() -> None:
    assert parse_walltime("01:30:00") == 5400
    assert parse_walltime("2-00:00:00") == 2 * 86400
    assert parse_walltime("30:00") == 1800  # SLURM: minutes:seconds
    assert parse_walltime("30:00", "hours:minutes") == 30 * 3600  # LSF
    assert parse_walltime("45") == 45 * 60
    with pytest.raises(SpecError, match="walltime"):
        parse_walltime("soon")


def test_lifetime_leaves_a_margin_before_the_walltime() -> None:
    assert lifetime(3600, None) == (3300, 75)
    assert lifetime(600, None) == (540, 15)  # 10% of the walltime
    assert lifetime(40, None) == (20, 5)  # never more than half of it
    assert lifetime(7200, None) == (6900, 75)  # at most 5 minutes
    life, stagger = lifetime(60, 10)
    assert (life, stagger) == (50, 2.5) and life + stagger < 60
    assert lifetime(60, 48) == (12, 6)  # an explicit margin is kept; stagger <= lifetime / 2
    assert lifetime(60, 600) == (6, 3)  # at least a tenth of the walltime remains


def test_default_processes_follow_dask_jobqueue() -> None:
    assert [default_processes(c) for c in (1, 4, 6, 8, 9, 16, 36)] == [1, 4, 3, 4, 3, 4, 6]


def test_per_worker_defaults_follow_cores_and_memory() -> None:
    d = defaults("slurm", SLURMOptions)
    user = {"cores": 8, "memory": "16GB", "processes": 2}
    assert d["threads_per_worker"](user) == 4
    assert d["memory_limit"](user) == 8 * 10**9
    assert d["threads_per_worker"]({"cores": 16}) == 4  # 4 processes by default
    assert d["memory_limit"]({}) == "auto"
    assert d["security"] is True  # workers are elsewhere: TLS by default


def test_jobqueue_yaml_supplies_defaults() -> None:
    # Read by the core through the compatibility table when deploy.slurm is absent.
    from dask_deploy._options import build_spec

    with dask.config.set({"deploy.slurm": {}, "jobqueue.slurm.cores": 6,
                          "jobqueue.slurm.queue": "batch",
                          "jobqueue.slurm.job-extra-directives": ["--exclusive"]}):
        spec, _ = build_spec("slurm", {})
        o = spec.backend_options
        assert o.cores == 6 and o.queue == "batch" and o.job_extra_directives == ("--exclusive",)
        assert spec.worker.nthreads == 2  # 6 cores -> 3 processes of 2 threads
    spec, _ = build_spec("slurm", {})
    assert spec.backend_options.cores is None and spec.backend_options.walltime == "00:30:00"


def test_expansion_names_processes_by_suffix(tmp_path: Path) -> None:
    backend = JobqueueBackend(spec("slurm", str(tmp_path), processes=3, cores=6))
    workers = [backend.spec.worker]
    backend.deploy_expand_resources(backend.spec, workers)
    assert [w.suffix for w in workers] == ["-0", "-1", "-2"]
    # composes with an expansion that already ran (e.g. one worker per GPU)
    gpu = [backend.spec.worker.replace(suffix="-gpu0"), backend.spec.worker.replace(suffix="-gpu1")]
    backend.deploy_expand_resources(backend.spec, gpu)
    assert [w.suffix for w in gpu][:2] == ["-gpu0-0", "-gpu0-1"]
    single = JobqueueBackend(spec("slurm", str(tmp_path), processes=1))
    alone = [single.spec.worker]
    single.deploy_expand_resources(single.spec, alone)
    assert alone == [single.spec.worker]


# --------------------------------------------------------------------------------------
# The script body, run with bash and a fake worker
# --------------------------------------------------------------------------------------

FAKE_WORKER = textwrap.dedent("""\
    #!/bin/bash
    # Stands in for `python -m distributed.cli.dask_worker ADDRESS --name NAME ...`.
    name=$5
    echo "start $name" >> "$FAKE_LOG"
    if [ "$name" = "$FAKE_FAIL" ]; then echo "boom: $name failed" >&2; exit 3; fi
    if [ -n "$FAKE_QUICK" ]; then exit 0; fi
    if [ -n "$FAKE_STUBBORN" ]; then trap 'echo "ignored $name" >> "$FAKE_LOG"' TERM
    else trap 'echo "term $name" >> "$FAKE_LOG"; exit 0' TERM; fi
    while :; do sleep 0.05; done
    """)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    python = tmp_path / "python"
    python.write_text(FAKE_WORKER)
    python.chmod(0o755)
    yield python, tmp_path / "fake.log"
    # A test that failed midway must not leave its job or fake workers running (the workers
    # run in sessions of their own): end every process run from this test's own folder.
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if str(tmp_path).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)


def run_script(tmp_path: Path, python: str, log: Path, env: dict[str, str],
               count: int = 3, **options: object) -> subprocess.Popen[str]:
    script = tmp_path / "job.sh"
    script.write_text(job_script(spec("slurm", str(tmp_path), python=python, **options),
                                 count=count))
    return subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "FAKE_LOG": str(log), **env})


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_body_maps_the_array_index_to_its_unit(tmp_path: Path, fake: tuple[Path, Path]) -> None:
    python, log = fake
    proc = run_script(tmp_path, str(python), log, {"SLURM_ARRAY_TASK_ID": "2"})
    wait_until(lambda: len(lines(log)) == 2, 30, "both workers to start")
    assert sorted(lines(log)) == ["start golden-1-0", "start golden-1-1"]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    # SIGTERM: each worker is told once, they leave, the job ends with exit 0
    assert proc.returncode == 0, out
    assert sorted(lines(log)[2:]) == ["term golden-1-0", "term golden-1-1"]
    assert out.rstrip().endswith("dask-deploy: job finished (exit 0)")


def test_body_ends_the_job_when_one_worker_fails(tmp_path: Path, fake: tuple[Path, Path]) -> None:
    python, log = fake
    proc = run_script(tmp_path, str(python), log,
                      {"SLURM_ARRAY_TASK_ID": "1", "FAKE_FAIL": "golden-0-1"})
    out, _ = proc.communicate(timeout=30)
    # The sibling loops forever unless stopped: that the job ended at all means it was.
    assert proc.returncode == 3, out
    assert "boom: golden-0-1 failed" in out
    assert out.rstrip().endswith("dask-deploy: job finished (exit 3)")


@pytest.mark.parametrize("fail", ["", "golden-0-1"])
def test_body_reads_the_status_of_workers_that_ended_before_it_waits(
        tmp_path: Path, fake: tuple[Path, Path], fail: str) -> None:
    """Workers that end before the loop's ``wait -n`` (bash then answers 127, "no child"):
    the job's status is still theirs. Under load this happened by chance and such jobs
    ended 127; a DEBUG trap (through ``BASH_ENV``) makes it certain: it holds the script
    at ``wait -n`` until bash has reaped both workers."""
    python, log = fake
    hold = tmp_path / "hold.sh"
    hold.write_text("""trap 'if [ "$BASH_COMMAND" = "wait -n" ]; then for p in $pids; do """
                    """while kill -0 "$p" 2>/dev/null; do sleep 0.01; done; done; fi' DEBUG\n""")
    proc = run_script(tmp_path, str(python), log, {"SLURM_ARRAY_TASK_ID": "1", "FAKE_QUICK": "1",
                                                   "FAKE_FAIL": fail, "BASH_ENV": str(hold)})
    out, _ = proc.communicate(timeout=30)
    code = 3 if fail else 0
    assert proc.returncode == code, out
    assert sorted(lines(log)) == ["start golden-0-0", "start golden-0-1"]
    assert out.rstrip().endswith(f"dask-deploy: job finished (exit {code})")


def test_body_reports_a_missing_interpreter(tmp_path: Path, fake: tuple[Path, Path]) -> None:
    _, log = fake
    proc = run_script(tmp_path, "/nonexistent/python", log, {"SLURM_ARRAY_TASK_ID": "1"})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 127
    assert re.search(r"/nonexistent/python: No such file or directory", out)
    assert out.rstrip().endswith("dask-deploy: job finished (exit 127)")


def test_body_refuses_an_unknown_index(tmp_path: Path, fake: tuple[Path, Path]) -> None:
    python, log = fake
    proc = run_script(tmp_path, str(python), log, {"SLURM_ARRAY_TASK_ID": "9"})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "no unit for array index 9" in out
    assert not lines(log)


def test_body_handles_a_term_during_start(tmp_path: Path, fake: tuple[Path, Path]) -> None:
    """A stop that arrives while workers are starting still ends the job cleanly."""
    python, log = fake
    proc = run_script(tmp_path, str(python), log, {"SLURM_ARRAY_TASK_ID": "3"})
    wait_until(lambda: len(lines(log)) >= 1, 30, "a worker to start")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_body_kills_workers_that_do_not_leave(tmp_path: Path, fake: tuple[Path, Path]) -> None:
    """A worker that ignores SIGTERM is killed after stop_grace; the job still exits 0."""
    python, log = fake
    proc = run_script(tmp_path, str(python), log,
                      {"SLURM_ARRAY_TASK_ID": "1", "FAKE_STUBBORN": "1"}, stop_grace=1)
    wait_until(lambda: len(lines(log)) == 2, 30, "both workers to start")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert sorted(lines(log)[2:]) == ["ignored golden-0-0", "ignored golden-0-1"]
    assert "SIGKILL after 1s" in out
    assert out.rstrip().endswith("dask-deploy: job finished (exit 0)")
