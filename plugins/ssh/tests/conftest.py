"""Fixtures of the ssh backend's tests: a real private sshd and a non-root user to log in as.

Under ``CI=true`` a missing sshd is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_harness() -> ModuleType:
    # --import-mode=importlib puts no test folder on sys.path: load the harness by its path.
    name = "dask_deploy_ssh_tests_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("sshd_harness.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


harness = _load_harness()


@pytest.fixture(scope="session")
def ssh_harness() -> ModuleType:
    return harness


@pytest.fixture(scope="session")
def sshd() -> Iterator[Any]:
    """A private sshd on 127.0.0.1 (free port) for the whole session."""
    # Not under pytest's tmp folder: that one is private to root, and sshd reads
    # authorized_keys as the test user.
    workdir = Path(tempfile.mkdtemp(prefix="dask-deploy-sshd-"))
    try:
        try:
            server = harness.start_sshd(workdir)
        except harness.Unavailable as e:
            if os.environ.get("CI") == "true":
                pytest.fail(f"sshd is needed under CI: {e}")
            pytest.skip(f"no sshd here: {e}")
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def ssh_options(sshd: Any) -> dict[str, Any]:
    """``Cluster.from_name("ssh", **ssh_options)`` reaches the private sshd as the test user."""
    return {"hosts": [sshd.host], "connect_options": dict(sshd.connect_options),
            "remote_python": sshd.python}
