"""The shared conformance suite against ``ecs`` on the emulator (tasks run by the TaskRunner).

The scheduler runs in the test process by default here (each check would otherwise start a
scheduler task too, and the suite's short ``start_timeout`` checks are about workers);
:class:`RemoteSchedulerChecks` still runs its check with ``scheduler="remote"``, and
``test_ecs.py`` covers the remote scheduler throughout.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from dask_deploy_conformance import PROFILES, ConformanceSuite
from dask_deploy_testing.cloud import MotoServer, TaskRunner

pytestmark = pytest.mark.timeout(600)


class TestECSConformance(ConformanceSuite):
    @pytest.fixture
    def deploy_backend(self) -> str:
        return "ecs"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], emulator: tuple[MotoServer, TaskRunner],
                       ecs_cluster: str) -> dict[str, Any]:
        return {
            **deploy_options, "cluster_arn": ecs_cluster, "image": "dask-deploy:test",
            "resolve_address": "dask_deploy_testing.cloud:loopback", "client_cidrs": ["127.0.0.1/32"],
            "scheduler": "local", "scheduler_port": 0, "dashboard_address": "127.0.0.1:0",
            "worker_cpu": 256, "worker_mem": 512, "scheduler_cpu": 256, "scheduler_mem": 512,
            "poll_interval": 0.2, "start_timeout": 90,
        }

    @pytest.fixture
    def deploy_timeout(self) -> float:
        return 120.0

    @pytest.fixture
    def deploy_max_workers(self) -> int:
        return 2

    @pytest.fixture
    def deploy_profile(self, request: pytest.FixtureRequest) -> Any:
        # Each example starts real processes: the small profile unless one is asked for.
        name = request.config.getoption("--deploy-profile") or os.environ.get(
            "DASK_DEPLOY_CONFORMANCE_PROFILE") or "ci"
        return PROFILES[name]()
