"""Fixtures: one real single-node SLURM and one one-host Grid Engine for the whole session
(see dask_deploy_testing.slurm and .sge), and SLURM's Torque wrappers for the pbs backend."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from dask_deploy_testing.sge import LocalSGE, local_sge
from dask_deploy_testing.slurm import LocalSlurm, local_slurm
from dask_deploy_testing.torque import torque_bin


@pytest.fixture(scope="session")
def slurm_session() -> Iterator[LocalSlurm]:
    """munged + slurmctld + slurmd from a generated slurm.conf; stopped by PID at the end.

    Under CI=true a SLURM that cannot be started fails the tests instead of skipping them.
    """
    try:
        cm = local_slurm()
        slurm = cm.__enter__()
    except Exception as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"a real SLURM is required under CI=true: {e}")
        pytest.skip(f"no SLURM here: {e}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = slurm.conf  # the backend's commands (and the jobs) use it
    try:
        yield slurm
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cm.__exit__(None, None, None)


@pytest.fixture
def slurm(slurm_session: LocalSlurm) -> Iterator[LocalSlurm]:
    """The session's SLURM, checked for leaks: no job may still be queued or running after
    a test (every test closes its clusters, and closing must stop every job)."""
    slurm_session.cancel_all()
    yield slurm_session
    left = slurm_session.job_ids()
    slurm_session.cancel_all()
    assert not left, f"jobs left in the queue after the test: {left}"


@pytest.fixture(scope="session")
def sge_session() -> Iterator[LocalSGE]:
    """sge_qmaster + sge_execd (started unless already running; stopped by PID if started
    here). Under CI=true a Grid Engine that cannot be started fails the tests."""
    try:
        cm = local_sge()
        sge = cm.__enter__()
    except Exception as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"a real Grid Engine is required under CI=true: {e}")
        pytest.skip(f"no Grid Engine here: {e}")
    try:
        yield sge
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def sge(sge_session: LocalSGE) -> Iterator[LocalSGE]:
    """The session's Grid Engine, checked for leaks as ``slurm`` is."""
    sge_session.delete_all()
    yield sge_session
    left = sge_session.job_ids()
    sge_session.delete_all()
    assert not left, f"jobs left in the queue after the test: {left}"


@pytest.fixture
def torque(slurm: LocalSlurm, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSlurm]:
    """The session's SLURM, with SLURM's Torque wrappers (qsub/qstat/qdel) first on PATH
    for this test only: the pbs backend runs them by name, and Grid Engine's qsub stays
    where the sge tests find it. Under CI=true missing wrappers fail the test."""
    try:
        path = torque_bin()
    except Exception as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"SLURM's Torque wrappers are required under CI=true: {e}")
        pytest.skip(f"no Torque wrappers here: {e}")
    monkeypatch.setenv("PATH", f"{path}{os.pathsep}{os.environ.get('PATH', '')}")
    yield slurm
    # The wrappers' qstat shows a cancelled job that is still COMPLETING (its processes
    # being killed, up to KillWait) as C, done, so a close returns before SLURM is through
    # with it: wait for that here, before the ``slurm`` fixture's leak check, which counts
    # COMPLETING jobs. A job still PENDING or RUNNING remains a leak.
    deadline = time.monotonic() + 30
    while slurm.run("squeue", "-h", "-r", "-t", "CG", "-o", "%i").strip() \
            and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture
def log_dir(tmp_path: object) -> str:
    return str(tmp_path)


@pytest.fixture(autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test keeps its cluster records (detached clusters) to itself."""
    path = str(tmp_path_factory.mktemp("state"))
    monkeypatch.setenv("DASK_DEPLOY_STATE_DIR", path)
    return path


# The conformance classes here (slurm, pbs, sge) run every worker as a batch job and an
# interpreter on 2 shared cores: generous timeouts, and few workers to keep within minutes.
@pytest.fixture
def deploy_timeout() -> float:
    return 120.0


@pytest.fixture
def deploy_max_workers() -> int:
    return 2
