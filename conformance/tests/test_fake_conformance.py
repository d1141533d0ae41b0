"""The whole conformance suite against the in-process ``fake`` backend."""

from __future__ import annotations

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
