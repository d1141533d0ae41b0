"""The shared conformance suite against ``slurm``, on the real single-node SLURM.

Every worker is a batch job (several run at once thanks to OverSubscribe), so each check
pays sbatch + a fresh interpreter per worker; the timeouts are generous because other
test runs share these 2 cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite
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

    @pytest.fixture
    def deploy_timeout(self) -> float:
        return 120.0

    @pytest.fixture
    def deploy_max_workers(self) -> int:
        return 2  # each worker is a job and an interpreter: keep the run within minutes
