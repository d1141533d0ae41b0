"""What a user sees while SLURM holds a worker job in the queue (``--hold``), then releases it."""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import dask
import pytest
from dask_deploy import Cluster
from dask_deploy_conformance import wait_for as wait_until
from dask_deploy_testing.slurm import LocalSlurm

T = 120  # seconds: generous, the machine is shared


def test_held_job_shows_its_reason_then_connects_when_released(
        slurm: LocalSlurm, log_dir: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="dask_deploy.cluster")
    with Cluster.from_name("slurm", cores=1, memory="512MiB", log_directory=log_dir, name="held",
                           poll_interval=0.3, start_timeout=T, n_workers=1,
                           job_extra_directives=["--hold"]) as c:
        def row() -> Any:
            return c.status()["held-0"]

        wait_until(lambda: "JobHeldUser" in row().reason, T, "the held job's reason")
        held = row()
        assert held.phase == "pending" and not held.connected and held.age is not None
        assert held.reason == "PENDING (JobHeldUser)"
        report = c.status()
        assert report.connected_workers == 0 and report.planned_workers == 1
        assert "1 pending (PENDING (JobHeldUser))" in report.summary()
        assert "JobHeldUser" in c._repr_html_()
        assert "JobHeldUser" in c._widget().children[0].value  # the notebook widget's status tab
        assert "JobHeldUser" in c.get_logs(scheduler=False, workers=False)["Status"]

        (handle,) = c.handles.values()
        slurm.run("scontrol", "release", str(handle.data["array"]))
        c.wait_for_workers(1, timeout=T)
        wait_until(lambda: row().connected, T, "the released unit to connect")
        assert row().phase == "running" and row().reason == ""
        # dashboard_link (an in-process scheduler) honours distributed.dashboard.link.
        port = urllib.parse.urlsplit(c.dashboard_link).port
        monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/me/")
        with dask.config.set({"distributed.dashboard.link":
                              "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"}):
            assert c.dashboard_link == f"/user/me/proxy/{port}/status"
    lines = [r.getMessage() for r in caplog.records if r.name == "dask_deploy.cluster"]
    # One line per change, not per poll: the hold is logged once, then the start.
    held_lines = [line for line in lines if "JobHeldUser" in line]
    assert len(held_lines) == 1, lines
    assert held_lines[0] == "held: Unit held-0: pending (PENDING (JobHeldUser))"
    assert any(line == "held: Unit held-0: running" for line in lines), lines
