"""The shared conformance suite against the gateway backend on a real dask-gateway server.

Run by hand, out of CI (not collected: the file name does not start with ``test_``): each
check starts a gateway cluster, i.e. a scheduler and worker interpreters that the server
spawns, ~60-80 s per check on the 2 shared cores, so the 34 checks would take ~40 min::

    DASK_DEPLOY_CONFORMANCE_TIMEOUT=120 uv run pytest plugins/gateway/tests/gateway_conformance.py

``test_cluster.py`` (in CI) covers the backend end to end on one cluster.

Last run by hand (2026-12-02, shared 2 cores, in batches; ~23 min in all): 22 passed, 7
failed, 2 xfail (marked below), 1 skipped; not run: the state machine (and
``test_logs_of_dead_worker``, which skips: no ``logs_after_death``). Failures and causes:

* ``test_scale_by_cores_and_memory``, ``test_generic_options_reach_the_worker``: the server
  starts every worker with its own threads, memory and environment (its cluster options);
  dask-deploy's ``threads_per_worker``/``memory_limit``/``env`` do not reach them.
* ``test_crash_loop_limit``, ``test_close_after_failed_start``,
  ``test_no_leak_after_failed_start``: the suite's faults (worker preloads, an invalid
  scheduler option) cannot reach processes the server starts, so nothing fails.
* ``test_task_subprocess_gone_after_close`` / ``..._after_scale_down``: the server's
  ``UnsafeLocalBackend`` signals the worker process, not its process group, so a task's
  subprocess outlives its worker (a server-side limit; containers end it on k8s backends).
* ``test_orphans_of_a_killed_client_are_found_and_collected`` (skipped): its options hold a
  ``BasicAuth`` object, which the check cannot hand to another interpreter as JSON.
"""

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

    @pytest.mark.xfail(reason="start_timeout=2 also bounds the gateway cluster's own start (the "
                       "server spawns the scheduler: ~15 s here), and the suite's fault, a worker "
                       "preload, cannot reach workers the server starts with its own command",
                       strict=False)
    def test_never_connecting_start_fails_after_timeout(self, deploy_cluster: Any, deploy_faults: Any,
                                                       deploy_timeout: float) -> None:
        super().test_never_connecting_start_fails_after_timeout(deploy_cluster, deploy_faults,
                                                                deploy_timeout)

    @pytest.mark.xfail(reason="the check closes at each creating call of a cluster with "
                       "scheduler='local'; a gateway cluster's scheduler is always the server's",
                       strict=False)
    def test_no_leak_after_close_at_each_creating_call(self, deploy_cluster: Any,
                                                       deploy_capabilities: frozenset[str],
                                                       deploy_timeout: float) -> None:
        super().test_no_leak_after_close_at_each_creating_call(deploy_cluster, deploy_capabilities,
                                                               deploy_timeout)

    @pytest.mark.xfail(reason="the check's pools differ in resources, which the gateway backend "
                       "refuses (one line: the server starts workers with its own settings)",
                       strict=True, raises=Exception)
    def test_pools_scale_and_adapt_apart(self, deploy_cluster: Any, deploy_timeout: float) -> None:
        super().test_pools_scale_and_adapt_apart(deploy_cluster, deploy_timeout)
