"""Fixtures: one real dask-gateway server (local backend, basic auth) for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dask_deploy_testing.gateway import GatewayServer


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Cluster records (and `gc`) stay inside this test.
    monkeypatch.setenv("DASK_DEPLOY_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture(scope="session")
def gateway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """``dask-gateway-server`` on 127.0.0.1 (a dev dependency: it always starts or fails)."""
    with GatewayServer(str(tmp_path_factory.mktemp("gateway"))) as server:
        yield server
