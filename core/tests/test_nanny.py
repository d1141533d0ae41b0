"""``nanny=True``: workers under a Nanny on request; without it, nanny plugins warn once."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from dask_deploy import Cluster, SpecError, WorkerSpec
from dask_deploy.toolkit import worker_cli_args
from distributed import Client
from distributed.diagnostics.plugin import Environ


def _env_var() -> str | None:
    return os.environ.get("DASK_DEPLOY_T15")  # read in the worker's own environment


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "dask_deploy.cluster" and r.levelno == logging.WARNING]


def test_nanny_true_runs_workers_under_a_nanny_and_plugins_work(
        no_leaked_processes: None, wait_until: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dask_deploy.cluster")
    with Cluster.from_name("local", n_workers=1, nanny=True, name="t-nanny") as cluster, \
            Client(cluster) as client:
        cluster.wait_for_workers(1, timeout=60)
        assert all(w["nanny"] for w in cluster.scheduler_info["workers"].values())
        client.register_plugin(Environ({"DASK_DEPLOY_T15": "set-by-nanny"}))
        # Environ restarts the worker through its nanny, under the same name.
        wait_until(lambda: set(client.run(_env_var).values())
                   == {"set-by-nanny"}, 60, "the nanny plugin to reach the worker")
        assert [w["name"] for w in client.scheduler_info()["workers"].values()] == ["t-nanny-0"]
    assert not _warnings(caplog)


@pytest.mark.parametrize("placement", ["local", "remote"])
def test_nanny_plugin_without_a_nanny_warns_once(
        placement: str, no_leaked_processes: None, wait_until: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dask_deploy.cluster")
    with Cluster.from_name("local", n_workers=1, scheduler=placement,
                           name=f"t-nonanny-{placement}") as cluster, Client(cluster) as client:
        cluster.wait_for_workers(1, timeout=60)
        assert all(w["nanny"] is None for w in cluster.scheduler_info["workers"].values())
        client.register_plugin(Environ({"DASK_DEPLOY_T15": "1"}))
        wait_until(lambda: _warnings(caplog), 60, "the nanny-plugin warning")
        client.register_plugin(Environ({"DASK_DEPLOY_T15": "2"}))
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=60)
        (line,) = _warnings(caplog)  # once per cluster, not per round or per plugin
        assert "nanny=True" in line and "Environ" in line
        assert line in cluster.get_logs(scheduler=False, workers=False)["Cluster"]


def test_nanny_option_is_checked() -> None:
    with pytest.raises(SpecError) as bad:
        Cluster.from_name("local", nanny="yes")
    assert bad.value.option == "nanny"
    # A backend that does not claim the capability refuses it, before starting anything.
    with pytest.raises(SpecError, match="cannot run workers under a nanny") as refused:
        Cluster.from_name("fake", nanny=True)
    assert refused.value.option == "nanny"


def test_worker_cli_args_follow_the_spec() -> None:
    assert "--no-nanny" in worker_cli_args("w", WorkerSpec())
    assert "--nanny" in worker_cli_args("w", WorkerSpec(nanny=True))
    # An explicit argument (a backend's own option) still wins.
    assert "--no-nanny" in worker_cli_args("w", WorkerSpec(nanny=True), nanny=False)
    assert "--nanny" in worker_cli_args("w", WorkerSpec(), nanny=True)
