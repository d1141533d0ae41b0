"""Several hosts: three network namespaces with one sshd each, on a bridge of our own.

The client stays in the root namespace; the scheduler runs on host 1 and the workers on
hosts 2 and 3. ``127.0.0.1`` inside a namespace is that namespace's own loopback, so the
dashboard of host 1 is reachable from here only through the SSH forward.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dask_deploy import Cluster
from dask_deploy_conformance import wait_for as wait_until
from distributed import Client

pytestmark = pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning")

TIMEOUT = 120


@pytest.fixture(scope="module")
def hosts(ssh_harness: Any) -> Iterator[Any]:
    workdir = Path(tempfile.mkdtemp(prefix="dask-deploy-netns-"))
    workdir.chmod(0o755)
    try:
        with ssh_harness.namespace_hosts(3, workdir) as made:
            yield made
    except ssh_harness.Unavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"network namespaces are needed under CI: {e}")
        pytest.skip(str(e))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def options(hosts: Any, **extra: Any) -> dict[str, Any]:
    return {"hosts": hosts.addresses, "scheduler": "remote",
            "connect_options": [s.connect_options for s in hosts.servers],
            "remote_python": hosts.servers[0].python, "name": f"t-{os.urandom(4).hex()}",
            "quiet": True, **extra}


def worker_hosts(cluster: Any) -> list[str]:
    return sorted(w["host"] for w in cluster.scheduler_info["workers"].values())


def test_scheduler_on_first_host_workers_on_the_others(hosts: Any) -> None:
    h1, h2, h3 = hosts.addresses
    with Cluster.from_name("ssh", n_workers=4, **options(hosts)) as cluster:
        assert cluster.scheduler_address.startswith(f"tls://{h1}:")
        cluster.wait_for_workers(4, timeout=TIMEOUT)
        assert worker_hosts(cluster) == [h2, h2, h3, h3]
        with Client(cluster) as client:
            assert client.submit(lambda: 1).result(timeout=TIMEOUT) == 1
        # Host 1's dashboard listens on *its* loopback: only the SSH forward reaches it.
        proxy = cluster.dashboard_link.partition("/status")[0]
        with urllib.request.urlopen(f"{proxy}/health", timeout=30) as r:
            assert r.read() == b"ok"


def test_workers_of_a_lost_host_are_replaced_on_the_others(hosts: Any) -> None:
    _, h2, h3 = hosts.addresses
    # Notice a dead link within ~3 s (SSH keepalives), instead of the default ~30 s.
    opts = options(hosts, n_workers=2)
    opts["connect_options"] = [{**o, "keepalive_interval": 1, "keepalive_count_max": 3}
                               for o in opts["connect_options"]]
    with Cluster.from_name("ssh", **opts) as cluster:
        cluster.wait_for_workers(2, timeout=TIMEOUT)
        assert worker_hosts(cluster) == [h2, h3]
        hosts.link(3, up=False)
        try:
            # Replaced on host 2, without tripping the crash-loop limit (max_failures=5).
            wait_until(lambda: worker_hosts(cluster) == [h2, h2], what="both workers on host 2")
            assert cluster.error is None
            # The scheduler could not hear from the lost worker: the core removed it, so that
            # its replacement could take its name at once.
            assert "Removed the lost worker" in cluster.get_logs(scheduler=False, workers=False)["Cluster"]
            with Client(cluster) as client:
                assert client.submit(lambda: 2).result(timeout=TIMEOUT) == 2
        finally:
            hosts.link(3, up=True)
        # Host 3 is back: the backend reconnects by itself and places new workers there again.
        lost = next(h for h in cluster.backend._hosts.values() if h.address == h3)
        wait_until(lambda: lost.up, what="the backend to reconnect to host 3")
        cluster.scale(3)
        wait_until(lambda: worker_hosts(cluster) == [h2, h2, h3], what="a new worker on host 3")
