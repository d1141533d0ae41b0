"""The shared conformance suite against the gateway backend on a real dask-gateway server."""

from __future__ import annotations

from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite
from dask_deploy_testing.gateway import GatewayServer


class TestGatewayConformance(ConformanceSuite):
    """Every check of the suite; the gateway server runs the scheduler and the workers."""

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "gateway"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], gateway_server: GatewayServer
                       ) -> dict[str, Any]:
        return {**deploy_options, **gateway_server.options()}

    @pytest.fixture
    def deploy_max_workers(self) -> int:
        return 2  # every worker is a fresh interpreter the server starts, on these 2 cores
