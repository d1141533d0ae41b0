"""The proxied dashboard of a remote-scheduler cluster in a real browser.

Debian's ``chromium`` (installed by ``testing/ci-setup.sh``) driven by Playwright's Python
package as the system browser. The test waits, polling with generous deadlines, until the
Bokeh status page has drawn its plots and then until the page receives, over the proxied
websocket, updates that name tasks submitted after it loaded: live data, not a cached page.
Once with the plain link, once with a JupyterHub-style ``distributed.dashboard.link``
through a prefix-stripping proxy (what jupyter-server-proxy does).
A screenshot goes to ``$DASK_DEPLOY_SCREENSHOT_DIR`` (default: the test's tmp directory).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import dask.config
import pytest
from aiohttp import web
from dask_deploy import Cluster
from dask_deploy._proxy import pipe_websocket
from distributed import Client

DEADLINE = 120.0  # seconds: a cold chromium on 2 busy cores is slow


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK) and os.geteuid() == 0:
        # As the SSH/SLURM/Grid Engine fixtures do: a plain `uv run pytest` as root on a
        # fresh machine sets up what it needs (the same idempotent script .ci/run runs).
        setup = Path(__file__).resolve().parents[2] / "testing" / "ci-setup.sh"
        subprocess.run(["bash", str(setup)], capture_output=True, check=False, timeout=900)
        path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required under CI=true (testing/ci-setup.sh installs it)")
        pytest.skip("no chromium here (apt-get install chromium)")
    return path


def _tick(i: int) -> int:
    time.sleep(0.05)
    return i


_HUB_PATH = re.compile(r"^/user/alice/proxy/(\d+)(/.*)?$")
_DROP = {"host", "connection", "upgrade", "content-length", "transfer-encoding", "content-encoding"}


class HubProxy:
    """What JupyterHub's jupyter-server-proxy does for ``/user/NAME/proxy/PORT/...``: strip
    the prefix and forward to ``127.0.0.1:PORT`` (websockets too). Runs on a thread of its
    own, listening on loopback; the page must work from under that prefix."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        daemon=True)

    def __enter__(self) -> HubProxy:
        self._thread.start()
        assert self._ready.wait(30), "the hub proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            self._session = session
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        m = _HUB_PATH.match(request.rel_url.path)
        if not m:
            return web.Response(status=404, text="not under /user/alice/proxy/PORT")
        query = request.rel_url.query_string
        url = f"http://127.0.0.1:{m.group(1)}{m.group(2) or '/'}" + (f"?{query}" if query else "")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _DROP and not k.lower().startswith("sec-websocket")}
        session = self._session
        assert session is not None
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await pipe_websocket(session, request, url, headers)
        async with session.request(request.method, url, headers=headers, data=await request.read(),
                                   allow_redirects=False) as resp:
            body = await resp.read()
            return web.Response(status=resp.status, body=body, headers={
                k: v for k, v in resp.headers.items() if k.lower() not in _DROP - {"content-encoding"}})


@pytest.fixture(params=["direct", "jupyterhub"])
def link_template(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The default link template, or a JupyterHub one (env var fields, as distributed fills
    them) served by a prefix-stripping proxy like jupyter-server-proxy."""
    if request.param == "direct":
        yield request.param
        return
    with HubProxy() as hub:
        monkeypatch.setenv("DASK_DEPLOY_T15_HUB", f"http://127.0.0.1:{hub.port}")
        monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
        with dask.config.set({"distributed.dashboard.link":
                              "{DASK_DEPLOY_T15_HUB}{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"}):
            yield request.param


def test_proxied_dashboard_renders_live_plots_in_chromium(tmp_path: Path, link_template: str,
                                                          no_leaked_processes: None) -> None:
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the playwright package (dev dependency) is required under CI=true")
        pytest.skip("no playwright package")
    shots = Path(os.environ.get("DASK_DEPLOY_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    with Cluster.from_name("local", n_workers=2, scheduler="remote", name="t-browser") as cluster, \
            Client(cluster) as client:
        cluster.wait_for_workers(2, timeout=DEADLINE)
        proxy = cluster._proxy_server
        assert proxy is not None
        link = cluster.dashboard_link
        if link_template == "direct":  # the proxy, not the scheduler
            assert link == f"http://127.0.0.1:{proxy.port}/status"
        else:  # through the hub, to the core's proxy
            assert link == f"{os.environ['DASK_DEPLOY_T15_HUB']}/user/alice/proxy/{proxy.port}/status"
        page_port = int(link.split("/")[2].rpartition(":")[2])

        frames: list[str] = []
        lock = threading.Lock()

        def on_websocket(ws: Any) -> None:
            def received(payload: str | bytes) -> None:
                text = payload if isinstance(payload, str) else payload.decode("latin-1")
                with lock:
                    frames.append(text)

            if f":{page_port}/" in ws.url:  # the page's own socket, through the proxies
                ws.on("framereceived", received)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("websocket", on_websocket)
                page.goto(link, timeout=DEADLINE * 1000)
                # Bokeh draws each plot on canvases (inside shadow roots, which locators
                # pierce) once the document arrived over the socket: wait for the 8th.
                page.locator("canvas").nth(7).wait_for(state="attached", timeout=DEADLINE * 1000)
                assert frames, "no websocket frames came through the proxy"

                # Work submitted now can only reach the page as live websocket updates.
                futures = client.map(_tick, range(300), key=[f"browsertick-{i}" for i in range(300)])
                deadline = time.monotonic() + DEADLINE
                while True:
                    with lock:
                        live = any("browsertick" in f for f in frames)
                    if live:
                        break
                    assert time.monotonic() < deadline, \
                        f"no live task data over the websocket in {DEADLINE:g}s ({len(frames)} frames)"
                    page.wait_for_timeout(250)  # a poll step; the page keeps processing meanwhile
                assert sum(client.gather(futures)) == sum(range(300))
                assert page.locator("canvas").count() >= 8
                # Drawn, not just created: the canvases have a size.
                sizes = page.locator("canvas").evaluate_all("cs => cs.map(c => c.width * c.height)")
                assert sum(1 for a in sizes if a > 0) >= 8, sizes
                page.screenshot(path=str(shots / f"dashboard-status-{link_template}.png"), full_page=True)
            finally:
                browser.close()
    assert (shots / f"dashboard-status-{link_template}.png").stat().st_size > 10_000
