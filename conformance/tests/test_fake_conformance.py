"""The whole conformance suite against the in-process ``fake`` backend."""

from __future__ import annotations

from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite


class TestFakeConformance(ConformanceSuite):
    @pytest.fixture
    def deploy_backend(self) -> str:
        return "fake"


class TestFakeTwoWorkersPerUnitConformance(ConformanceSuite):
    """The same suite with every unit running two workers (a job with ``processes=2``, a
    node with two GPUs): scaling rounds up to whole units, a unit stops and restarts whole."""

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "fake"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, object]) -> dict[str, object]:
        return {**deploy_options, "workers_per_unit": 2}

    @pytest.mark.xfail(strict=False, reason=(
        "core (dask_deploy._adaptive): Adaptive picks single workers to close, and a unit "
        "stops whole, so scaling down one worker of a two-worker unit drops both: the plan "
        "falls below minimum (adapt(1, 3): sizes 2, 4, 0, 2), and the sibling is stopped "
        "without being retired (its tasks are lost: KilledWorker on real backends)"))
    def test_adapt_within_bounds_under_load(self, deploy_cluster: Any, deploy_profile: Any,
                                            deploy_max_workers: int, deploy_timeout: float) -> None:
        super().test_adapt_within_bounds_under_load(deploy_cluster, deploy_profile,
                                                    deploy_max_workers, deploy_timeout)
