"""The whole conformance suite against the ``local`` backend (the core's reference backend)."""

from __future__ import annotations

from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite


class TestLocalConformance(ConformanceSuite):
    @pytest.fixture
    def deploy_backend(self) -> str:
        return "local"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any]) -> dict[str, Any]:
        # Workers stop at once when asked (the default grace is for real work in flight).
        return {**deploy_options, "stop_grace": 1.0}
