from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import psutil
import pytest
from dask_deploy_conformance import wait_for as wait_until
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def agents_of(cluster_name: str) -> list[psutil.Process]:
    """Live agent processes of a cluster, found by their command line."""
    out = []
    for p in psutil.process_iter(["cmdline", "status", "ppid"]):
        cmd = p.info["cmdline"] or []
        if "dask_deploy._agent" in cmd and cluster_name in cmd and p.info["status"] != "zombie":
            out.append(p)
    pids = {p.pid for p in out}
    return [p for p in out if p.info["ppid"] not in pids]  # forked children share the cmdline


def live_descendants() -> set[int]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(autouse=True)
def state_dir(monkeypatch: pytest.MonkeyPatch) -> object:
    """Each test gets its own cluster records (a short path: agents put unix sockets there)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="dds-", dir="/tmp")
    monkeypatch.setenv("DASK_DEPLOY_STATE_DIR", path)
    yield path
    # A detached agent left by a failed test listens under this directory: stop it.
    for p in psutil.process_iter(["cmdline"]):
        if any(path in arg for arg in p.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                p.kill()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="wait_until")
def _wait_until() -> Callable[..., None]:
    return wait_until


@pytest.fixture(name="agents_of")
def _agents_of() -> Callable[[str], list[psutil.Process]]:
    return agents_of


@pytest.fixture
def no_leaked_processes() -> object:
    """Fail the test if it leaves a child process of ours running."""
    before = live_descendants()
    yield
    wait_until(lambda: not (live_descendants() - before), 30, "our child processes to exit")
