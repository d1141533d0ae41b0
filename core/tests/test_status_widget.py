"""What a notebook and terminal user sees: the widget, cluster.status(), progress lines,
dashboard links through distributed.dashboard.link."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import dask.config
import pytest
from dask_deploy import Cluster, CrashLoopError
from distributed import Client
from distributed.core import Status

CLI = [sys.executable, "-m", "dask_deploy._cli"]


def test_widget_builds_shows_units_and_scales(no_leaked_processes: None, wait_until: Any) -> None:
    import ipywidgets  # a dev dependency: never skipped
    with Cluster.from_name("local", n_workers=2, name="t-widget") as cluster:
        cluster.wait_for_workers(2, timeout=60)
        cluster._ipython_display_()  # what a notebook calls: crashed on "group" in Unit
        tab = cluster._widget()
        assert isinstance(tab, ipywidgets.Tab)
        status_html = tab.children[0].value
        assert "Backend: <b>local</b>" in status_html
        assert "2/2 workers connected" in status_html
        for unit in ("t-widget-0", "t-widget-1"):
            assert unit in status_html
        assert "connected" in status_html
        scaling = tab.children[1]
        assert "Workers: 2 / 2" in scaling.children[0].value
        buttons = {b.description: b for box in scaling.children[1].children
                   for b in box.children if isinstance(b, ipywidgets.Button)}
        assert set(buttons) == {"Scale", "Adapt"}
        request = scaling.children[1].children[0].children[0]
        request.value = 3
        buttons["Scale"].click()  # the widget's own control, as a click in the notebook
        cluster.wait_for_workers(3, timeout=60)
        assert len(cluster.units) == 3
        # The periodic refresh re-renders the status tab from the same table.
        wait_until(lambda: "3/3 workers connected" in tab.children[0].value, 30, "widget refresh")


def test_status_rows_reasons_logs_and_lifecycle(no_leaked_processes: None,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dask_deploy.cluster")
    with Cluster.from_name("local", n_workers=0, name="t-status") as cluster:
        # cluster.status is still distributed's lifecycle state, and callable.
        assert cluster.status == Status.running and cluster.status.name == "running"
        assert cluster.status in (Status.running, Status.starting)
        assert len(cluster.status()) == 0
        cluster.scale(2)
        early = cluster.status()
        assert [r.unit for r in early] == ["t-status-0", "t-status-1"]
        assert all(r.phase in ("requested", "pending", "running") for r in early)
        assert all(r.workers == (r.unit,) for r in early)  # one worker per unit: its name
        cluster.wait_for_workers(2, timeout=60)
        with Client(cluster) as client:  # Client reads cluster.status too
            assert client.submit(sum, [1, 2]).result() == 3
        report = cluster.sync(cluster._refresh_status)
        assert report.connected_workers == report.planned_workers == 2
        for row in report:
            assert row.connected and row.phase == "running" and row.state == "connected"
            assert row.age is not None and row.age >= 0
        assert report["t-status-1"].unit == "t-status-1"
        assert "t-status-0" in report.text() and "2/2 workers connected" in report.text()
        logs = cluster.get_logs(scheduler=False, workers=False)
        assert "t-status-0" in logs["Status"] and "connected" in logs["Status"]
        assert "Unit t-status-0: running" in logs["Cluster"]
    lines = [r.getMessage() for r in caplog.records if r.name == "dask_deploy.cluster"]
    assert any("Unit t-status-1: running" in line for line in lines)
    assert cluster.status == Status.closed


def test_status_of_failing_units_and_quiet(no_leaked_processes: None,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dask_deploy.cluster")
    with Cluster.from_name("local", n_workers=1, worker_options={"no_such_option": 1},
                           max_failures=2, name="t-status-bad", quiet=True) as cluster:
        with pytest.raises(CrashLoopError):
            cluster.wait_for_workers(1, timeout=120)
        report = cluster.status()
        assert report.error and "consecutive worker failures" in report.error
        (row,) = report.rows
        assert row.unit.startswith("t-status-bad-") and not row.connected
        assert row.phase in ("requested", "failed") and row.reason
        assert "stopped:" in report.summary()
        assert "consecutive worker failures" in cluster._repr_html_()
    # quiet=True: the changes are kept for get_logs(), never logged.
    assert not [r for r in caplog.records if r.name == "dask_deploy.cluster"]


def test_status_command_on_a_detached_cluster(agents_of: Any, wait_until: Any) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    up = cli("up", "local", "-n", "2", "--detach", "-o", "name=t-cli-status")
    # The proxy of `up` ends with it: it names the command whose link lasts.
    assert "Dashboard: http://127.0.0.1:" in up.stdout
    assert "`dask-deploy dashboard t-cli-status` serves a lasting one" in up.stdout
    try:
        out = cli("status", "t-cli-status").stdout
        assert "t-cli-status on local: 2/2 workers connected" in out
        assert "t-cli-status-0" in out and "t-cli-status-1" in out and "connected" in out
        watch = subprocess.Popen([*CLI, "status", "t-cli-status", "--watch", "--interval", "0.2"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert watch.stdout is not None
            seen = ""
            for line in watch.stdout:
                seen += line
                if "t-cli-status-1" in line:
                    break
            assert "UNIT" in seen and "t-cli-status-1" in seen
            watch.send_signal(signal.SIGINT)
            assert watch.wait(60) == 0
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
        bad = subprocess.run([*CLI, "status", "t-cli-status", "--watch", "--interval", "0"],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "--interval" in bad.stderr
    finally:
        cli("down", "t-cli-status")
    wait_until(lambda: not agents_of("t-cli-status"), 30, "the cluster to stop")


JUPYTERHUB_LINK = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"


def test_dashboard_link_honours_the_template_local_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    with dask.config.set({"distributed.dashboard.link": JUPYTERHUB_LINK}), \
            Cluster.from_name("local", n_workers=0, name="t-link") as cluster:
        port = cluster.scheduler_info["services"]["dashboard"]
        assert cluster.dashboard_link == f"/user/alice/proxy/{port}/status"
        assert cluster.dashboard_link in cluster._repr_html_()
    with dask.config.set({"distributed.dashboard.link": "{scheme}://{host}:{port}/status"}), \
            Cluster.from_name("local", n_workers=0, name="t-link2") as cluster:
        port = cluster.scheduler_info["services"]["dashboard"]
        assert cluster.dashboard_link == f"http://127.0.0.1:{port}/status"


def test_dashboard_link_honours_the_template_through_the_proxy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    with Cluster.from_name("local", n_workers=1, scheduler="remote", name="t-link-remote") as cluster:
        proxy = cluster._proxy_server
        assert proxy is not None
        plain = cluster.dashboard_link  # the default template: the proxy's own address
        assert plain == f"http://127.0.0.1:{proxy.port}/status"
        with urllib.request.urlopen(plain, timeout=30) as page:
            assert page.status == 200 and b"Dask" in page.read()
        with dask.config.set({"distributed.dashboard.link": JUPYTERHUB_LINK}):
            # The proxy's port, never the remote scheduler's: that is what the browser reaches.
            assert cluster.dashboard_link == f"/user/alice/proxy/{proxy.port}/status"
        with dask.config.set({"distributed.dashboard.link": "{NO_SUCH_VARIABLE_15}/{port}"}):
            assert cluster.dashboard_link == plain  # an unset variable: the plain link, no error
