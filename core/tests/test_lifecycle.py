"""Clusters that outlive their process, garbage collection, the dashboard proxy, TLS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from typing import Any

import aiohttp
import psutil
import pytest
from dask_deploy import Cluster, SpecError, attach, list_clusters
from dask_deploy._proxy import DashboardProxy
from distributed import Client


def test_detached_cluster_outlives_its_creator_and_is_attached_elsewhere(
        state_dir: str, wait_until: Any, agents_of: Any) -> None:
    creator = textwrap.dedent("""
        from dask_deploy import Cluster
        c = Cluster.from_name("local", n_workers=2, scheduler="remote", shutdown_on_close=False,
                              name="t-det")
        c.wait_for_workers(2, timeout=60)
        c.close()  # detach: the cluster keeps running
    """)
    subprocess.run([sys.executable, "-c", creator], check=True, timeout=120)
    [record] = list_clusters()
    assert record.name == "t-det" and record.detached and record.owner_pid is None
    assert oct(os.stat(os.path.join(state_dir, "clusters", "t-det.json")).st_mode & 0o777) == "0o600"

    cluster = attach("t-det")
    try:
        assert set(cluster.handles) == {"t-det-0", "t-det-1"}
        cluster.scale(3)
        cluster.wait_for_workers(3, timeout=60)
        with Client(cluster) as client:
            assert client.submit(lambda: 6 * 7).result() == 42
        assert "t-det-2" in cluster.get_logs()
    finally:
        cluster.close()  # an attachment leaves the cluster running
    assert len(agents_of("t-det")) == 1
    again = Cluster.from_name("local", name="t-det")  # from_name re-attaches by name
    assert len(again.handles) == 3
    again.shutdown()
    wait_until(lambda: not agents_of("t-det"), 30, "the detached agent to exit")
    assert list_clusters() == []


def test_detaching_needs_a_remote_scheduler() -> None:
    with pytest.raises(SpecError, match='scheduler="remote"'):
        Cluster.from_name("local", shutdown_on_close=False)


def test_gc_removes_what_a_killed_creator_left(wait_until: Any, agents_of: Any) -> None:
    script = textwrap.dedent("""
        import sys, time
        from dask_deploy import Cluster
        c = Cluster.from_name("local", n_workers=2, name="t-gc")
        c.wait_for_workers(2, timeout=60)
        print("ready", flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        [agent] = agents_of("t-gc")
        pids = [agent.pid, *(c.pid for c in agent.children())]
        assert len(pids) == 3
        agent.suspend()  # a hung agent cannot clean up after its client...
        proc.kill()  # ...whose process dies without closing anything
        proc.wait(30)
        gc = [sys.executable, "-m", "dask_deploy._cli", "gc", "-b", "local", "--cluster", "t-gc",
              "--grace", "0"]
        dry = subprocess.run(gc, capture_output=True, text=True, check=True, timeout=120)
        assert "would remove local t-gc" in dry.stdout and "nothing removed" in dry.stdout, dry.stdout
        assert all(psutil.pid_exists(p) for p in pids)  # without --yes gc removes nothing
        out = subprocess.run([*gc, "--yes"], capture_output=True, text=True, check=True, timeout=120)
        assert "removed local t-gc" in out.stdout, out.stdout
        wait_until(lambda: not [p for p in pids if psutil.pid_exists(p)
                                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
                   30, "gc to kill the agent and its workers")
        assert list_clusters() == []  # the stale record went too
    finally:
        proc.kill()


def test_gc_keeps_live_clusters(wait_until: Any, agents_of: Any) -> None:
    with Cluster.from_name("local", n_workers=1, name="t-live") as cluster:
        cluster.wait_for_workers(1, timeout=60)
        out = subprocess.run([sys.executable, "-m", "dask_deploy._cli", "gc", "-b", "local",
                              "--cluster", "t-live", "--grace", "0", "--yes"],
                             capture_output=True, text=True, check=True, timeout=120)
        assert "keeping local t-live" in out.stdout and "0 removed" in out.stdout, out.stdout
        assert len(agents_of("t-live")) == 1


async def _fetch_dashboard(link: str) -> tuple[int, str, str]:
    """GET the dashboard page and open its bokeh websocket, all through ``link``."""
    base = link.split("/status")[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/status") as r:
            page = await r.text()
            status = r.status
        token = re.search(r'"token":\s*"([^"]+)"', page)
        assert token, "no bokeh session token in the dashboard page"
        async with session.ws_connect(base.replace("http", "ws", 1) + "/status/ws",
                                      protocols=("bokeh", token.group(1))) as ws:
            msg = await ws.receive(timeout=30)
            first = msg.data if isinstance(msg.data, str) else repr(msg)
    return status, page, first


def test_dashboard_through_the_proxy_http_and_websocket() -> None:
    with Cluster.from_name("local", n_workers=1, scheduler="remote", name="t-dash") as cluster:
        link = cluster.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        sched_dash = cluster.scheduler_handle.dashboard_address
        assert sched_dash and sched_dash.split(":")[-1] not in link  # it is the proxy's port
        status, page, first = asyncio.run(_fetch_dashboard(link))
        assert status == 200 and "Dask" in page
        assert "ACK" in first  # bokeh's first websocket message, relayed by the proxy


def test_proxy_refuses_non_loopback_without_token() -> None:
    with pytest.raises(SpecError, match="needs a token") as info:
        DashboardProxy("http://127.0.0.1:1", host="0.0.0.0", port=0)
    assert info.value.option == "dashboard_proxy_address"


def test_proxy_token_is_enforced() -> None:
    async def main() -> tuple[int, int, int]:
        from aiohttp import web

        app = web.Application()
        async def page(request: web.Request) -> web.Response:
            return web.Response(text="dashboard")

        app.router.add_get("/status", page)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        proxy = DashboardProxy(f"http://127.0.0.1:{port}", token="s3cret")
        url = await proxy.start()
        # unsafe=True: keep cookies from an IP address host, as browsers do
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            codes = []
            for q in ("", "?token=wrong", "?token=s3cret"):
                async with s.get(url + "/status" + q) as r:
                    codes.append(r.status)
            async with s.get(url + "/status") as r:  # the cookie from the good request works
                codes.append(r.status)
        await proxy.close()
        await runner.cleanup()
        return tuple(codes)  # type: ignore[return-value]

    assert asyncio.run(main()) == (403, 403, 200, 200)


def test_remote_scheduler_traffic_is_tls_and_the_key_never_leaks(state_dir: str,
                                                                  agents_of: Any) -> None:
    from distributed.comm import connect

    with Cluster.from_name("local", n_workers=1, scheduler="remote", name="t-tls") as cluster, \
            Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tls://")
        assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
        key_line = cluster.spec.tls.key.strip().splitlines()[1]
        # Plain TCP to the scheduler's port gets no answer from a Dask comm.
        plain = "tcp://" + cluster.scheduler_address.split("://")[1]

        async def talk_plain() -> None:
            comm = await connect(plain, timeout=5)
            await comm.write({"op": "identity"})
            await asyncio.wait_for(comm.read(), 5)

        with pytest.raises(Exception):  # noqa: B017 - any failure: TLS is required
            asyncio.run(talk_plain())
        # Not in any command line or environment of what the backend started ...
        for proc in agents_of("t-tls"):
            for p in [proc, *proc.children()]:
                assert key_line not in " ".join(p.cmdline())
                assert key_line not in json.dumps(p.environ())
        # ... nor in any log; only in the user's 0600 record, which attaching needs.
        logs = cluster.get_logs()
        assert all(key_line not in text for text in logs.values())
        log_dir = cluster.backend.logs
        for name in os.listdir(log_dir):
            with open(os.path.join(log_dir, name), errors="replace") as f:
                assert key_line not in f.read(), name
        record = os.path.join(state_dir, "clusters", "t-tls.json")
        assert os.stat(record).st_mode & 0o077 == 0


def test_dask_cluster_discovery_lists_our_clusters() -> None:
    from importlib.metadata import entry_points

    [ep] = [e for e in entry_points(group="dask_cluster_discovery") if e.name == "dask_deploy"]
    discover = ep.load()

    async def names() -> list[str]:
        return [name async for name, _ in discover()]

    with Cluster.from_name("local", n_workers=0, name="t-disc"):
        assert "t-disc" in asyncio.run(names())
    assert "t-disc" not in asyncio.run(names())


def test_sigint_of_a_detached_creator_does_not_kill_the_cluster(wait_until: Any,
                                                                agents_of: Any) -> None:
    script = textwrap.dedent("""
        import time
        from dask_deploy import Cluster
        c = Cluster.from_name("local", n_workers=1, scheduler="remote", shutdown_on_close=False,
                              name="t-det-int", quiet=True)
        c.wait_for_workers(1, timeout=60)
        print("ready", flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        assert len(agents_of("t-det-int")) == 1  # detached means detached
    finally:
        proc.kill()
    attach("t-det-int").shutdown()
    wait_until(lambda: not agents_of("t-det-int"), 30, "shutdown")


def test_a_forgotten_detached_cluster_closes_itself_after_its_idle_timeout(
        wait_until: Any, agents_of: Any) -> None:
    # distributed's idle clock starts with the scheduler, not with the first worker, so a short
    # idle_timeout could end the scheduler before a slow worker connects. The option is given
    # long, checked on the scheduler, and shortened once the cluster is left alone.
    cluster = Cluster.from_name("local", n_workers=1, scheduler="remote", shutdown_on_close=False,
                                idle_timeout=600, name="t-idle", quiet=True)
    cluster.wait_for_workers(1, timeout=60)
    address, security = cluster.scheduler_address, cluster.security
    cluster.close()  # detached, and nobody uses it any more
    assert len(agents_of("t-idle")) == 1
    with Client(address, security=security) as client:
        assert client.run_on_scheduler(_idle_timeout) == 600
        client.run_on_scheduler(_idle_timeout, 1.0)
    wait_until(lambda: not agents_of("t-idle"), 90, "the idle cluster to stop itself")
    [line] = [x for x in run_list().splitlines() if x.startswith("t-idle")]
    assert " dead " in line  # listed as dead until `dask-deploy gc` prunes the record


def _idle_timeout(seconds: float | None = None, dask_scheduler: Any = None) -> float:
    if seconds is not None:
        dask_scheduler.idle_timeout = seconds
    return float(dask_scheduler.idle_timeout)


def run_list() -> str:
    return subprocess.run([sys.executable, "-m", "dask_deploy._cli", "list"], capture_output=True,
                          text=True, check=True, timeout=120).stdout


def test_detaching_needs_a_backend_that_can() -> None:
    from dask_deploy import BackendInfo, register_backend
    from dask_deploy._local import LocalBackend

    register_backend(BackendInfo("t-nodetach", "local without detach", factory=LocalBackend,
                                 capabilities=frozenset({"scale", "remote_scheduler"})))
    with pytest.raises(SpecError, match="cannot leave a cluster running") as info:
        Cluster.from_name("t-nodetach", scheduler="remote", shutdown_on_close=False)
    assert info.value.option == "shutdown_on_close"
