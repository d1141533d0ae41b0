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
from dask_deploy_testing.k8s import Emulator

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
        return 2  # every worker is a pod, i.e. a fresh interpreter on these 2 cores

    def test_never_connecting_start_fails_after_timeout(self, deploy_cluster: Any, deploy_faults: Any,
                                                       deploy_timeout: float) -> None:
        # The check sets start_timeout=2, which also bounds the start of a scheduler pod (a
        # fresh interpreter, slower than 2 s on a busy machine): run it with the scheduler in
        # this process, so that only the workers it means to test are held to 2 s.
        deploy_cluster.options = {**deploy_cluster.options, "scheduler": "local"}
        super().test_never_connecting_start_fails_after_timeout(deploy_cluster, deploy_faults, deploy_timeout)

    @pytest.fixture(autouse=True)
    def _default_kubeconfig(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        # Some leak checks build a ClusterSpec without backend options: they then reach the
        # API server the default way, through $KUBECONFIG.
        path = REAL or request.getfixturevalue("emulator").kubeconfig
        monkeypatch.setenv("KUBECONFIG", path)
