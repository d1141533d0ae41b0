"""The shared conformance suite against ``pbs``, through SLURM's Torque wrappers on the
real CI SLURM (the ``torque`` fixture puts ``qsub``/``qstat``/``qdel`` first on PATH).

The backend finds no ``pbs_version`` in ``qstat --version`` and speaks Torque: one job per
unit, status from ``qstat -f`` text, a completed job judged by its output file. What the
wrappers cannot show (PBS Pro's JSON, arrays, ``qdel -W``, PBS-only states) stays with the
golden tests (README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite
from dask_deploy_testing.slurm import LocalSlurm

pytestmark = pytest.mark.timeout(600)


class TestPbsConformance(ConformanceSuite):
    """Every check of the suite with ``pbs`` workers (and a remote scheduler) as jobs
    submitted through the Torque wrappers."""

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "pbs"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], torque: LocalSlurm,
                       tmp_path: Path) -> dict[str, Any]:
        return {**deploy_options, "cores": 1, "memory": "512MiB", "log_directory": str(tmp_path),
                "poll_interval": 0.5, "stop_grace": 5.0}
