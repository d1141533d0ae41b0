"""The proxied dashboard of a remote-scheduler cluster in a real browser.

Debian's ``chromium`` (installed by ``testing/ci-setup.sh``) driven by Playwright's Python
package as the system browser. The test waits, polling with generous deadlines, until the
Bokeh status page has drawn its plots and then until the page receives, over the proxied
websocket, updates that name tasks submitted after it loaded: live data, not a cached page.
A screenshot goes to ``$DASK_DEPLOY_SCREENSHOT_DIR`` (default: the test's tmp directory).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dask_deploy import Cluster
from distributed import Client

DEADLINE = 120.0  # seconds: a cold chromium on 2 busy cores is slow


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required under CI=true (testing/ci-setup.sh installs it)")
        pytest.skip("no chromium here (apt-get install chromium)")
    return path


def _tick(i: int) -> int:
    time.sleep(0.05)
    return i


def test_proxied_dashboard_renders_live_plots_in_chromium(tmp_path: Path,
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
        assert link == f"http://127.0.0.1:{proxy.port}/status"  # the proxy, not the scheduler

        frames: list[str] = []
        lock = threading.Lock()

        def on_websocket(ws: Any) -> None:
            def received(payload: str | bytes) -> None:
                text = payload if isinstance(payload, str) else payload.decode("latin-1")
                with lock:
                    frames.append(text)

            if f":{proxy.port}/" in ws.url:  # through our proxy only
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
                page.screenshot(path=str(shots / "dashboard-status.png"), full_page=True)
            finally:
                browser.close()
    assert (shots / "dashboard-status.png").stat().st_size > 10_000
