"""The shared conformance suite against the k8s backend on the API-server emulator.

Set ``DASK_DEPLOY_K8S_KUBECONFIG`` to a kubeconfig to run the same suite against a real
cluster instead (opt-in; it needs an image with this client's ``distributed``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite
from dask_deploy_k8s.testing import Emulator

REAL = os.environ.get("DASK_DEPLOY_K8S_KUBECONFIG")


class TestK8sConformance(ConformanceSuite):
    """Every check of the suite, with pods run by the emulator's process kubelet."""

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "k8s"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], request: pytest.FixtureRequest
                       ) -> dict[str, Any]:
        if REAL:
            return {**deploy_options, "kubeconfig": REAL, "start_timeout": 300}
        emulator: Emulator = request.getfixturevalue("emulator")
        return {**deploy_options, **emulator.backend_options(), "python": sys.executable}

    @pytest.fixture
    def deploy_max_workers(self) -> int:
        return 3

    @pytest.fixture(autouse=True)
    def _default_kubeconfig(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        # Some leak checks build a ClusterSpec without backend options: they then reach the
        # API server the default way, through $KUBECONFIG.
        path = REAL or request.getfixturevalue("emulator").kubeconfig
        monkeypatch.setenv("KUBECONFIG", path)
