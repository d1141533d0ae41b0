"""The shared conformance suite against ``slurm``, on the real single-node SLURM.

Every worker is a batch job (several run at once thanks to OverSubscribe), so each check
pays sbatch + a fresh interpreter per worker; the timeouts are generous because other
test runs share these 2 cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dask_deploy_conformance import (
    ConformanceSuite,
    FaultChecks,
    LifecycleChecks,
    OptionChecks,
    ScalingChecks,
)
from dask_deploy_testing.slurm import LocalSlurm

pytestmark = pytest.mark.timeout(600)


class TestSlurmConformance(ConformanceSuite):
    """Every check of the suite, with workers (and a remote scheduler) as SLURM jobs."""

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "slurm"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], slurm: LocalSlurm,
                       tmp_path: Path) -> dict[str, Any]:
        return {**deploy_options, "cores": 1, "memory": "512MiB", "log_directory": str(tmp_path),
                "poll_interval": 0.5, "stop_grace": 5.0}


class TestSlurmTwoProcessesConformance:
    """Jobs of two worker processes each (``processes=2``): only the checks whose outcome
    depends on a unit running several workers, not the whole suite again (CI time).

    Picked because each looks at workers one by one where a unit holds two: their names
    (``<unit>-0``, ``<unit>-1``, not the unit's name twice), scaling rounded up to whole jobs
    (and scaling down a named worker takes its whole job), threads and memory per worker
    process (not per job), the generic options in each process of a job, and a killed
    worker's job replaced as a whole while other jobs run on. The other checks (close,
    logs, leaks, discovery, adaptivity, the state machine) treat a job as one unit whatever
    it runs and are covered by :class:`TestSlurmConformance`; the suite's own handling of
    multi-worker units in all of them is checked against the fake backend
    (``TestFakeTwoWorkersPerUnitConformance``).
    """

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "slurm"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], slurm: LocalSlurm,
                       tmp_path: Path) -> dict[str, Any]:
        return {**deploy_options, "cores": 2, "processes": 2, "memory": "1GiB",
                "log_directory": str(tmp_path), "poll_interval": 0.5, "stop_grace": 5.0}

    @pytest.fixture
    def deploy_max_workers(self) -> int:
        return 4  # two jobs

    test_sync_start_compute_close = LifecycleChecks.test_sync_start_compute_close
    test_scale_down_named_workers = ScalingChecks.test_scale_down_named_workers
    test_scale_by_cores_and_memory = ScalingChecks.test_scale_by_cores_and_memory
    test_generic_options_reach_the_worker = OptionChecks.test_generic_options_reach_the_worker
    test_dead_worker_is_replaced = FaultChecks.test_dead_worker_is_replaced
