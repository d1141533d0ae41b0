"""Fixtures of the ssh backend's tests: a real private sshd and a non-root user to log in as.

Under ``CI=true`` a missing sshd is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from dask_deploy_testing import sshd as harness


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
