"""The shared conformance suite against the ssh backend, on the real private sshd."""

from __future__ import annotations

from typing import Any

import pytest
from dask_deploy_conformance import ConformanceSuite

pytestmark = pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning")


class TestSSHConformance(ConformanceSuite):
    """Every check of the suite, with workers forked by an agent reached over SSH."""

    @pytest.fixture
    def deploy_backend(self) -> str:
        return "ssh"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any], ssh_options: dict[str, Any]
                       ) -> dict[str, Any]:
        return {**deploy_options, **ssh_options}

    @pytest.fixture
    def deploy_timeout(self) -> float:
        return 120.0  # other test runs share these 2 cores
