"""The dask-deploy conformance suite against this backend.

Run with ``pytest tests`` (or, installed, ``dask-deploy conformance shell``).
"""

from __future__ import annotations

from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite


class TestShellConformance(ConformanceSuite):
    @pytest.fixture
    def deploy_backend(self) -> str:
        return "shell"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any]) -> dict[str, Any]:
        # Backend options every check uses; extend with your own fixtures' values (a
        # server's port, credentials), e.g. `def deploy_options(self, deploy_options, my_server)`.
        return {**deploy_options, "stop_grace": 1.0}
