"""The shared conformance suite against the gateway backend on a real dask-gateway server.

The backend claims ``managed`` (the server starts, configures and stops the scheduler and
the workers), so the suite itself skips, saying why, what that rules out: generic worker
options, worker-side faults, a local scheduler, task subprocesses (the server's local
backend signals a worker's process, not its group). ``logs_after_death`` is not claimed
(the gateway API keeps no logs). Everything else runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dask
import pytest
from dask_deploy_conformance import ConformanceSuite
from dask_deploy_testing.gateway import GatewayServer


class TestGatewayConformance(ConformanceSuite):
    """Every check of the suite; the gateway server runs the scheduler and the workers."""

    @pytest.fixture(autouse=True)
    def _auth_by_config(self, gateway_server: GatewayServer, monkeypatch: pytest.MonkeyPatch
                        ) -> Iterator[None]:
        # auth="basic" with the credentials in dask's `gateway.auth.kwargs`, as a user would
        # configure it: the options stay plain JSON (the orphan check hands them to another
        # interpreter on its command line) and no password is in an option or a record. The
        # other interpreter reads the same configuration from the environment.
        # Its defaults first: leaving dask.config.set restores what it changed as it found
        # it, and a `gateway` tree it created would go, taking defaults loaded in between.
        import dask_gateway  # noqa: F401

        for key, value in gateway_server.auth_env().items():
            monkeypatch.setenv(key, value)
        with dask.config.set(gateway_server.auth_config()):
            yield

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "gateway"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], gateway_server: GatewayServer
                       ) -> dict[str, Any]:
        return {**deploy_options, **gateway_server.options(), "auth": "basic"}

    @pytest.fixture
    def deploy_faults(self, deploy_faults: Any) -> Any:
        return deploy_faults.replace(
            # The server refuses a cluster option it does not offer: the cluster fails to start.
            cluster_start_failure={"cluster_options": {"dask_deploy_conformance_invalid": 1}},
            # Each worker the server starts is a fresh interpreter importing distributed:
            # seconds to connect, slow enough for the adapt check without an added delay.
            slow_start={})

    @pytest.fixture
    def deploy_max_workers(self) -> int:
        return 2  # every worker is a fresh interpreter the server starts, on these 2 cores
