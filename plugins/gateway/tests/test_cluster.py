"""The gateway backend end to end on a real dask-gateway server: one cluster, every path.

One test on purpose: a gateway cluster costs a scheduler and worker interpreters on these
2 cores, so the checks share it (the conformance class covers the contract check by check).
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest
from dask_deploy import Cluster, ClusterSpec, SpecError
from dask_deploy.hookspecs import BACKEND_PLAIN_HOOKS
from dask_deploy_conformance import wait_for
from dask_deploy_gateway import GatewayOptions
from dask_deploy_gateway._backend import GatewayBackend
from dask_deploy_testing.gateway import GatewayServer
from dask_gateway import Gateway
from distributed import Client


def _running(server: GatewayServer) -> list[Any]:
    # Asynchronous: a sync Gateway closed by `with` is closed again by its __del__, which
    # then raises (dask-gateway 2026.3).
    async def go() -> list[Any]:
        async with Gateway(**server.gateway_kwargs(), asynchronous=True) as gw:
            return list(await gw.list_clusters())

    return asyncio.run(go())


def _discover(server: GatewayServer, cluster_id: str | None) -> list[Any]:
    # A fresh plugin object, as `dask-deploy gc` in another process would build it.
    spec = ClusterSpec("gateway", "probe", backend_options=GatewayOptions(**server.options()))
    backend = GatewayBackend(spec)

    async def go() -> list[Any]:
        try:
            return list(await backend.deploy_discover(cluster=spec, cluster_id=cluster_id))
        finally:
            await backend.deploy_teardown(cluster=spec)

    return asyncio.run(go())


def test_options_are_validated() -> None:
    with pytest.raises(SpecError, match="address"):
        GatewayOptions(address="127.0.0.1:8000")
    with pytest.raises(SpecError, match="cluster_options"):
        GatewayOptions(cluster_options=[("worker_threads", 2)])  # type: ignore[arg-type]
    assert BACKEND_PLAIN_HOOKS == ("deploy_worker_name",)


def test_cluster_on_a_real_gateway(gateway_server: GatewayServer) -> None:
    with Cluster.from_name("gateway", **gateway_server.options(),
                           cluster_options={"worker_threads": 2}) as cluster:
        # The server's cluster runs the scheduler; its TLS identity is the cluster's.
        assert cluster.scheduler_address.startswith("gateway://")
        cluster.scale(2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            workers = client.scheduler_info()["workers"].values()
            # Options reached the server; the core sees the gateway's workers as its units.
            assert [w["nthreads"] for w in workers] == [2, 2]
            planned = sorted(w for u in cluster.units.values() for w in u.worker_names)
            assert sorted(w["name"] for w in cluster.scheduler_info["workers"].values()) == planned
            assert client.submit(sum, [1, 2, 3]).result() == 6

            # Tagged for gc, found by a fresh plugin object.
            found = _discover(gateway_server, cluster.name)
            assert [h.data["kind"] for h in found] == ["scheduler"]
            assert found[0].data["owner"] and found[0].data["created"]

            # A named scale-down stops exactly that unit, and the gateway does not put
            # another worker in its place (the count went down in the same step).
            keep, drop = planned
            cluster.sync(cluster.scale_down, [drop])
            wait_for(lambda: [w["name"] for w in cluster.scheduler_info["workers"].values()] == [keep],
                     timeout=60, what=f"only {keep} left")
            def gateway_count(dask_scheduler: Any) -> int:  # nested: pickled by value
                return int(dask_scheduler.services["gateway"].count)

            count = client.run_on_scheduler(gateway_count)
            assert count == 1  # the server starts workers up to this count: none for `drop`
            report = _running(gateway_server)
            assert len(report) == 1
            # Its log was kept when it was stopped (the gateway API keeps none).
            assert "worker" in cluster.sync(cluster.logs_of, drop).lower()

            # The dashboard answers through the core's proxy.
            with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as r:
                assert r.status == 200
            handle = cluster.handles[keep]
            assert handle.backend_id == report[0].name
    wait_for(lambda: not _running(gateway_server), timeout=60, what="the gateway cluster to stop")
    assert _discover(gateway_server, None) == []


@pytest.mark.parametrize(("option", "value"), [
    ("threads_per_worker", 3), ("memory_limit", "1GB"), ("resources", {"GPU": 1}),
    ("env", {"A": "1"}), ("worker_options", {"lifetime": "1h"})])
def test_worker_options_the_server_decides_are_refused(option: str, value: Any) -> None:
    """Never dropped silently: one line naming the option and cluster_options."""
    with pytest.raises(SpecError, match=f"{option}.*cluster_options"):
        Cluster.from_name("gateway", address="http://127.0.0.1:9", **{option: value})


def test_scheduler_options_and_a_local_scheduler_are_refused() -> None:
    """The server starts the scheduler: its options are refused like the workers'; a local
    scheduler (which would get no gateway workers) is refused when the cluster starts."""
    with pytest.raises(SpecError, match=r"scheduler_options.*cluster_options"):
        Cluster.from_name("gateway", address="http://127.0.0.1:9", scheduler_options={"x": 1})
    with pytest.raises(SpecError, match=r"scheduler.*remote"):
        Cluster.from_name("gateway", address="http://127.0.0.1:9", scheduler="local")
