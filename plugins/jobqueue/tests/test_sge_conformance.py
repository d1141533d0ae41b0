"""The shared conformance suite against ``sge``, on the live one-host Grid Engine
(:mod:`dask_deploy_testing.sge`).

Every worker unit is an element of a task array (``qsub -t``), the remote scheduler a job
of its own, status and gc read ``qstat -xml``. The timeouts are generous because other
test runs share these 2 cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite
from dask_deploy_testing.sge import LocalSGE

pytestmark = pytest.mark.timeout(600)


class TestSgeConformance(ConformanceSuite):
    """Every check of the suite on the one-host Grid Engine: workers are elements of task
    arrays (``qsub -t``), the remote scheduler a job of its own, gc reads ``qstat -xml``."""

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "sge"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], sge: LocalSGE,
                       tmp_path: Path) -> dict[str, Any]:
        return {**deploy_options, "cores": 1, "memory": "512MiB", "log_directory": str(tmp_path),
                "queue": sge.queue, "poll_interval": 0.5, "stop_grace": 5.0}
