"""The whole conformance suite against the in-process ``fake`` backend."""

from __future__ import annotations

import pytest
from dask_deploy_conformance import ConformanceSuite


class TestFakeConformance(ConformanceSuite):
    @pytest.fixture
    def deploy_backend(self) -> str:
        return "fake"
