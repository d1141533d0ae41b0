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

    # The suite marks this check xfail(strict=True) for a core bug (an in-flight start goes
    # on after close and may leave a cluster record). The ssh backend refuses to connect or
    # boot agents once torn down, so here the check passes unless the core's window is hit:
    # not strict, or a pass would fail the run.
    @pytest.mark.xfail(strict=False, reason="core bug: SpecCluster._close() does not stop an "
                       "in-flight _start() (see dask_deploy_conformance.suite.CORE_BUGS)")
    def test_no_leak_after_close_during_start(self, deploy_cluster: Any,
                                              deploy_timeout: float) -> None:
        super().test_no_leak_after_close_during_start(deploy_cluster, deploy_timeout)
