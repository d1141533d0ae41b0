"""The slurm backend against a real slurmctld + slurmd (started by the session fixture).

Every test closes what it starts; the ``slurm`` fixture fails a test that leaves any job in
the queue. Waits poll a condition with a generous deadline (2 busy cores).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dask_deploy import Cluster, ClusterSpec, CrashLoopError, Phase
from dask_deploy_conformance import wait_for as wait_until
from dask_deploy_jobqueue import SLURMOptions, job_script
from dask_deploy_jobqueue._backend import JobqueueBackend
from dask_deploy_testing.slurm import LocalSlurm
from distributed import Client

T = 120  # seconds: generous, the machine is shared


def cluster(log_dir: str, name: str, **options: Any) -> Any:
    options = {"cores": 1, "memory": "512MiB", "log_directory": log_dir, "name": name,
               "poll_interval": 0.5, "start_timeout": T, **options}
    return Cluster.from_name("slurm", **options)


def workers(c: Any) -> set[str]:
    return {w["name"] for w in c.scheduler_info["workers"].values()}


def test_scale_submits_one_array(slurm: LocalSlurm, log_dir: str) -> None:
    with cluster(log_dir, "arr", n_workers=4) as c:
        c.wait_for_workers(4, timeout=T)
        assert workers(c) == {"arr-0", "arr-1", "arr-2", "arr-3"}
        handles = list(c.handles.values())
        # one submission: every unit is an element of the same array
        assert len({h.data["array"] for h in handles}) == 1
        array = handles[0].data["array"]
        assert sorted(h.backend_id for h in handles) == [f"{array}_{i}" for i in range(1, 5)]
        assert len(list(Path(log_dir, "arr").glob("job-*.sh"))) == 1
        # each element is a job of its own in the queue, named after the cluster
        queue = slurm.run("squeue", "--noheader", "--array", "--format=%i %j %T").split("\n")
        assert sum("dask-deploy.arr.worker RUNNING" in line for line in queue) == 4
        script = next(Path(log_dir, "arr").glob("job-*.sh")).read_text()
        assert "#SBATCH --array=1-4" in script
        with Client(c) as client:
            assert client.submit(lambda x: x + 1, 41).result(timeout=T) == 42
            assert sum(client.gather(client.map(lambda x: x * x, range(20)))) == 2470
        # TLS by default: the scheduler speaks tls:// and the key file is private
        assert c.scheduler_address.startswith("tls://")
        assert oct(os.stat(Path(log_dir, "arr", "tls", "key.pem")).st_mode & 0o777) == "0o600"
        # one element is tracked and stopped on its own
        c.scale(3)
        wait_until(lambda: len(c.handles) == 3 and len(workers(c)) == 3, T, "scale down to 3")
        assert slurm.job_state(f"{array}_4") == "COMPLETED"
        assert all(slurm.job_state(f"{array}_{i}") == "RUNNING" for i in (1, 2, 3))


def test_processes_per_job(slurm: LocalSlurm, log_dir: str) -> None:
    with cluster(log_dir, "procs", cores=2, processes=2, memory="1GiB", n_workers=4) as c:
        assert c.workers_per_unit == 2
        c.wait_for_workers(4, timeout=T)
        assert workers(c) == {"procs-0-0", "procs-0-1", "procs-1-0", "procs-1-1"}
        info = c.scheduler_info["workers"].values()
        assert {w["nthreads"] for w in info} == {1}
        assert {w["memory_limit"] for w in info} == {2**29}
        assert len(c.handles) == 2  # two jobs of two workers
        script = job_script(c)
        assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=1024M" in script
        assert c.scheduler_address in script


def test_failing_job_counts_towards_the_crash_loop_limit(slurm: LocalSlurm, log_dir: str) -> None:
    with cluster(log_dir, "crash", python="/nonexistent/python", n_workers=1,
                 max_failures=2) as c:
        with pytest.raises(CrashLoopError) as e:
            c.wait_for_workers(1, timeout=T)
        assert "No such file or directory" in str(e.value)
        assert "exit code 127" in str(e.value) or "NonZeroExitCode" in str(e.value)
        # not resubmitted forever: exactly max_failures jobs ran
        outputs = sorted(Path(log_dir, "crash").glob("*.out"))
        assert len(outputs) == 2
        logs = c.get_logs()
        assert any("/nonexistent/python" in str(text) for name, text in logs.items()
                   if name.startswith("crash-"))


def test_refused_submission_is_a_failure(slurm: LocalSlurm, log_dir: str) -> None:
    with (cluster(log_dir, "refused", queue="no-such-partition", n_workers=1, max_failures=1) as c,
          pytest.raises(CrashLoopError, match=r"(?i)invalid partition")):
        c.wait_for_workers(1, timeout=T)


def test_graceful_stop_completes_and_logs_survive(slurm: LocalSlurm, log_dir: str) -> None:
    with cluster(log_dir, "grace", n_workers=1) as c:
        c.wait_for_workers(1, timeout=T)
        job = c.handles["grace-0"].backend_id
        c.scale(0)
        wait_until(lambda: not c.handles, T, "the job to be stopped")
        # SIGTERM first: the job ends COMPLETED, not CANCELLED (dask-jobqueue#640)
        assert slurm.job_state(job) == "COMPLETED"
        log = c.get_logs()["grace-0"]
        assert "Registered to:" in log  # the worker's own output, read after its end
        assert "dask-deploy: job finished (exit 0)" in log


def test_walltime_retires_workers_before_the_limit(slurm: LocalSlurm, log_dir: str) -> None:
    # 1 minute of walltime, a 48 s margin: the worker leaves after 12 +/- 6 s and is
    # replaced, while SLURM would only kill the job after 60 s.
    with cluster(log_dir, "life", walltime="00:01:00", lifetime_margin=48, n_workers=1) as c:
        c.wait_for_workers(1, timeout=T)
        first = c.handles["life-0"].backend_id
        wait_until(lambda: slurm.job_state(first) != "RUNNING", T, "the first worker to retire")
        assert slurm.job_state(first) == "COMPLETED"
        # the unit is started again (a new job under the same unit name)
        wait_until(lambda: "life-0" in c.handles and c.handles["life-0"].backend_id != first
                   and "life-0" in workers(c), T, "the replacement worker")
        # a clean retirement is not a failure
        assert c.error is None and "failed" not in str(c.get_logs(scheduler=False, workers=False))


def test_remote_scheduler_in_a_job(slurm: LocalSlurm, log_dir: str) -> None:
    with cluster(log_dir, "remote", scheduler="remote", n_workers=2) as c:
        assert c.scheduler is None  # not in this process
        handle = c.scheduler_handle.handle
        assert handle.data["role"] == "scheduler"
        assert slurm.job_state(handle.backend_id) == "RUNNING"
        assert c.scheduler_address.startswith("tls://127.0.0.1:")
        c.wait_for_workers(2, timeout=T)
        with Client(c) as client:
            assert client.submit(lambda: 7).result(timeout=T) == 7
        assert "Scheduler at:" in c.get_logs(cluster=False, workers=False)["Scheduler"]
    assert slurm.job_state(handle.backend_id) == "COMPLETED"


def test_discover_and_gc_of_orphaned_jobs(slurm: LocalSlurm, log_dir: str) -> None:
    # A detached cluster (its scheduler in a job of its own) outlives its client.
    c = cluster(log_dir, "orphan", scheduler="remote", n_workers=2, shutdown_on_close=False)
    try:
        c.wait_for_workers(2, timeout=T)
        jobs = sorted([c.scheduler_handle.handle.backend_id,
                       *(h.backend_id for h in c.handles.values())])
    finally:
        c.close()  # detached: the jobs stay
    assert all(slurm.job_state(j) == "RUNNING" for j in jobs)
    # A fresh process knows only the backend's defaults and the cluster id.
    spec = ClusterSpec(backend="slurm", name="gc-probe", backend_options=SLURMOptions())
    backend = JobqueueBackend(spec)

    async def discover(cid: str | None) -> list[Any]:
        return list(await backend.deploy_discover(cluster=spec, cluster_id=cid))

    found = asyncio.run(discover("orphan"))
    assert sorted(h.backend_id for h in found) == jobs
    assert {h.cluster for h in found} == {"orphan"}
    assert sorted(h.data["role"] for h in found) == ["scheduler", "worker", "worker"]
    assert {h.backend_id for h in asyncio.run(discover(None))} >= set(jobs)
    assert asyncio.run(discover("someone-else")) == []
    # what `dask-deploy gc` does with them
    asyncio.run(backend.deploy_stop_workers(cluster=spec, handles=found))
    assert asyncio.run(discover("orphan")) == []
    states = {j: slurm.job_state(j) for j in jobs}
    outputs = [p.read_text()[-3000:] for p in Path(log_dir, "orphan").glob("*.out")]
    assert set(states.values()) == {"COMPLETED"}, (states, outputs)


def test_poll_reports_pending_with_the_reason(slurm: LocalSlurm, log_dir: str) -> None:
    """A job that cannot start yet is PENDING with SLURM's reason, not silently waiting."""
    spec = ClusterSpec(backend="slurm", name="held", backend_options=SLURMOptions(
        log_directory=log_dir, job_extra_directives=["--hold"]))
    backend = JobqueueBackend(spec)

    async def scenario() -> tuple[Any, Any]:
        from dask_deploy import Unit

        [h] = await backend.deploy_start_workers(cluster=spec, scheduler_address="tcp://127.0.0.1:1",
                                                 units=[Unit("held-0", (spec.worker,))])
        try:
            [status] = await backend.deploy_poll(cluster=spec, handles=[h])
        finally:
            await backend.deploy_stop_workers(cluster=spec, handles=[h])
        [after] = await backend.deploy_poll(cluster=spec, handles=[h])
        return status, after

    status, after = asyncio.run(scenario())
    assert status.phase is Phase.PENDING and "JobHeldUser" in status.reason
    assert after.phase is Phase.FAILED and "CANCELLED" in after.reason  # it never ran


def test_queue_timeout_bounds_the_wait_of_a_queued_job(slurm: LocalSlurm, log_dir: str) -> None:
    """A held job is queued (PENDING): start_timeout does not apply, queue_timeout does."""
    from dask_deploy import StartTimeout

    held = {"job_extra_directives": ["--hold"], "queue_timeout": 3}
    with (
        cluster(log_dir, "queued", n_workers=1, max_failures=1, **held) as c,
        pytest.raises(CrashLoopError, match=r"still queued after queue_timeout=3s"),
    ):
        c.wait_for_workers(1, timeout=T)
    # a remote scheduler's job too: the start fails and its job is cancelled
    with pytest.raises(StartTimeout, match=r"queue_timeout=3s \(still queued\)"):
        cluster(log_dir, "queuedsched", scheduler="remote", start_timeout=1, **held)
    assert "queuedsched" not in slurm.run("squeue", "--noheader", "--format=%j")


def test_scancelled_remote_scheduler_is_lost_within_two_polls(slurm: LocalSlurm, log_dir: str) -> None:
    """A remote scheduler whose job ends (scancel here; walltime alike) is noticed."""
    import time

    from dask_deploy import SchedulerLost

    poll = 1.0
    with cluster(log_dir, "lost", scheduler="remote", n_workers=1, poll_interval=poll) as c:
        c.wait_for_workers(1, timeout=T)
        job = c.scheduler_handle.handle.backend_id
        assert c.spec.scheduler.idle_timeout == 1200  # the remote scheduler's default
        slurm.run("scancel", job)
        wait_until(lambda: slurm.job_state(job) not in ("RUNNING", "COMPLETING"), T,
                   "the scheduler job to end")
        ended = time.monotonic()
        # two poll intervals, plus what the machine (2 busy cores) may add to one round
        wait_until(lambda: isinstance(c.error, SchedulerLost), 2 * poll + 3,
                   "cluster.error to say the scheduler is lost")
        assert time.monotonic() - ended <= 2 * poll + 3
        assert job in str(c.error) and "lost" in str(c.error), c.error
        assert "CANCELLED" in str(c.error)


def test_gc_removes_the_key_folder_a_crashed_client_left(slurm: LocalSlurm, log_dir: str) -> None:
    """``<log_dir>/<cluster>/tls`` of a cluster with no job left is found, judged, removed."""
    from dask_deploy import TLS
    from dask_deploy._gc import collect_garbage

    left = JobqueueBackend(ClusterSpec(backend="slurm", name="keyleft", tls=TLS.temporary(),
                                       backend_options=SLURMOptions(log_directory=log_dir)))
    left._ensure_dirs()  # what a start writes before its first submission; then a crash:
    gone = subprocess.Popen(["true"])  # its client's pid no longer runs
    gone.wait()
    owner = Path(log_dir, "keyleft", "owner.json")
    owner.write_text(json.dumps({**json.loads(owner.read_text()), "owner_pid": gone.pid}))
    tls = Path(log_dir, "keyleft", "tls")
    Path(log_dir, "keyleft", "scheduler.json").write_text("{}")
    assert (tls / "key.pem").exists()
    probe = JobqueueBackend(ClusterSpec(backend="slurm", name="gc-probe",
                                        backend_options=SLURMOptions(log_directory=log_dir)))

    async def discover(cid: str | None) -> list[Any]:
        return list(await probe.deploy_discover(cluster=probe.spec, cluster_id=cid))

    [found] = asyncio.run(discover("keyleft"))
    assert found.data["kind"] == "tls-dir" and found.data["path"] == str(tls)
    assert found.cluster == "keyleft" and found.data["owner"].startswith(f"{os.environ.get('USER') or ''}")
    assert "keyleft" in {h.cluster for h in asyncio.run(discover(None))}
    said: list[str] = []
    opts = {"slurm": {"log_directory": log_dir}}
    # young (a start may be under way): gc keeps it
    dead = asyncio.run(collect_garbage(["slurm"], opts, echo=said.append, clusters=["keyleft"],
                                       confirm=lambda _: True))
    assert dead == [] and tls.exists(), said
    # past the grace period: dead (no job, no scheduler), removed with the scheduler file
    dead = asyncio.run(collect_garbage(["slurm"], opts, echo=said.append, clusters=["keyleft"],
                                       grace=0, confirm=lambda _: True))
    assert [v.kind for v in dead] == ["tls-dir"], said
    assert not tls.exists() and not Path(log_dir, "keyleft", "scheduler.json").exists()
    assert Path(log_dir, "keyleft").is_dir()  # the output files stay
    assert asyncio.run(discover("keyleft")) == []
    # a handle naming any other folder is refused
    bad = type(found)(found.backend, "keyleft", found.name, "/etc", {**found.data, "path": "/etc"})
    with pytest.raises(Exception, match="not the key folder"):
        asyncio.run(probe.deploy_stop_workers(cluster=probe.spec, handles=[bad]))


def test_a_running_clusters_key_folder_is_tagged_like_its_jobs(slurm: LocalSlurm, log_dir: str) -> None:
    """Listed with its job and judged with it (gc keeps or removes both), never as a folder
    whose scheduler is known not to run."""
    with cluster(log_dir, "keybusy", n_workers=1) as c:
        c.wait_for_workers(1, timeout=T)
        found = c.sync(c._call, "deploy_discover", cluster_id="keybusy")
        job, key = sorted(found, key=lambda h: str(h.data.get("kind")))
        assert job.data.get("kind") is None and key.data["kind"] == "tls-dir"
        assert key.data["owner_pid"] == job.data["owner_pid"] == os.getpid()
        assert "scheduler_running" not in key.data


def test_pools_submit_to_their_own_partitions(slurm: LocalSlurm, log_dir: str) -> None:
    """~10 s: each pool's jobs are separate arrays with the pool's queue in their header."""
    pools = {"cpu": {}, "big": {"queue": slurm.second_partition, "walltime": "00:20:00",
                                "resources": {"BIG": 1}}}
    with cluster(log_dir, "pl", n_workers=1, pools=pools) as c:
        c.scale(2, pool="big")
        c.wait_for_workers(3, timeout=T)
        assert workers(c) == {"pl-cpu-0", "pl-big-1", "pl-big-2"}
        part = {h.name: slurm.run("squeue", "--noheader", "--job", h.backend_id,
                                  "--format=%P").strip() for h in c.handles.values()}
        assert part == {"pl-cpu-0": slurm.partition, "pl-big-1": slurm.second_partition,
                        "pl-big-2": slurm.second_partition}
        arrays = {n: h.data["array"] for n, h in c.handles.items()}
        assert arrays["pl-big-1"] == arrays["pl-big-2"] != arrays["pl-cpu-0"]
        scripts = [p.read_text() for p in Path(log_dir, "pl").glob("job-*.sh")]
        big = next(s for s in scripts if "--partition=second" in s)
        assert "#SBATCH --time=00:20:00" in big and "--lifetime" in big
        with Client(c) as client:
            assert client.submit(lambda: 1, resources={"BIG": 1}).result(timeout=T) == 1
