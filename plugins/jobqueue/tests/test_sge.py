"""The sge backend against the real one-host Grid Engine (started by the session fixture).

The shared conformance suite runs in test_conformance.py; these are the Grid Engine
specifics: the queue state as the pending reason, and the graceful stop through
``-notify`` (qdel sends SIGUSR2 before its SIGKILL), which leaves no process behind.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

from dask_deploy import ClusterSpec, Phase, Unit, WorkerSpec
from dask_deploy_jobqueue import SGEOptions
from dask_deploy_jobqueue._backend import JobqueueBackend
from dask_deploy_testing.sge import LocalSGE

T = 120.0


def backend(log_dir: str, name: str, **options: Any) -> tuple[ClusterSpec, JobqueueBackend]:
    spec = ClusterSpec(backend="sge", name=name, worker=WorkerSpec(nthreads=1),
                       backend_options=SGEOptions(log_directory=log_dir, queue="all.q",
                                                  stop_grace=5.0, **options))
    return spec, JobqueueBackend(spec)


def processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines()
            if "dask_worker" in line and all(m in line for m in marker.split())]


def test_poll_reports_pending_with_the_queue_state(sge: LocalSGE, log_dir: str) -> None:
    """A held job is PENDING with Grid Engine's state (hqw), not silently waiting."""
    spec, b = backend(log_dir, "held", job_extra_directives=["-h"])

    async def scenario() -> Any:
        [h] = await b.deploy_start_workers(cluster=spec, scheduler_address="tcp://127.0.0.1:1",
                                           units=[Unit("held-0", (spec.worker,))])
        try:
            return (await b.deploy_poll(cluster=spec, handles=[h]))[0]
        finally:
            await b.deploy_stop_workers(cluster=spec, handles=[h])

    status = asyncio.run(scenario())
    assert status.phase is Phase.PENDING and "hqw" in status.reason, status


def test_stop_is_graceful_and_leaves_no_process(sge: LocalSGE, log_dir: str) -> None:
    """qdel of a running -notify job: the script gets SIGUSR2, stops its workers and exits
    0. Before -notify, qdel's SIGKILL reached the job's process group only and each
    worker (in a session of its own) kept running."""
    # The workers look for a scheduler that is not there (and would wait 10 minutes).
    spec, b = backend(log_dir, "notify", death_timeout=600, local_directory=log_dir)
    units = [Unit(f"notify-{i}", (spec.worker,)) for i in range(2)]
    marker = f"tcp://127.0.0.1:1 {log_dir}"  # in every worker's command line (--local-directory)

    async def scenario() -> list[Any]:
        handles = await b.deploy_start_workers(cluster=spec, scheduler_address="tcp://127.0.0.1:1",
                                               units=units)
        try:
            deadline = time.monotonic() + T
            while time.monotonic() < deadline:
                states = await b.deploy_poll(cluster=spec, handles=handles)
                if all(s.phase is Phase.RUNNING for s in states) and len(processes(marker)) >= 2:
                    break
                await asyncio.sleep(0.3)
            logs = [Path(h.data["log"]).read_text() if Path(h.data["log"]).exists() else ""
                    for h in handles]
            assert len(processes(marker)) >= 2, f"the workers did not start: {states} {logs}"
        finally:
            await b.deploy_stop_workers(cluster=spec, handles=handles)
        return handles

    handles = asyncio.run(scenario())
    for h in handles:
        text = Path(h.data["log"]).read_text()
        assert "dask-deploy: stopping" in text and "dask-deploy: job finished (exit 0)" in text, text
    assert not processes(marker)
