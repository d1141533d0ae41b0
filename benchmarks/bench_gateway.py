"""Ready time for 4 workers on one dask-gateway server: ours vs ``dask_gateway.GatewayCluster``.

Both contenders talk to the same real ``dask-gateway-server`` (local backend, started once
by ``dask_deploy_testing.gateway``), which starts the scheduler and the workers as local
processes. Each trial, from the call to the cluster until 4 workers are connected (and
then the close, timed separately):

* ``ours``: ``Cluster.from_name("gateway", n_workers=4, ...)`` and ``wait_for_workers(4)``;
* ``GatewayCluster``: ``Gateway(...).new_cluster()``, ``scale(4)``, ``wait_for_workers(4)``.

Contenders alternate within each round; the ratio is ours / GatewayCluster (median).

    uv run python benchmarks/bench_gateway.py [--rounds 3] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def ours(server: Any, n: int) -> tuple[float, float]:
    from dask_deploy import Cluster
    from distributed import Client

    t0 = time.perf_counter()
    cluster = Cluster.from_name("gateway", n_workers=n, **server.options())
    with Client(cluster) as client:
        client.wait_for_workers(n, timeout=300)
        ready = time.perf_counter() - t0
    t1 = time.perf_counter()
    cluster.close()
    return ready, time.perf_counter() - t1


def gateway_cluster(server: Any, n: int) -> tuple[float, float]:
    from dask_gateway import Gateway
    from distributed import Client

    t0 = time.perf_counter()
    gw = Gateway(**server.gateway_kwargs())
    cluster = gw.new_cluster()
    cluster.scale(n)
    with Client(cluster) as client:
        client.wait_for_workers(n, timeout=300)
        ready = time.perf_counter() - t0
    t1 = time.perf_counter()
    cluster.shutdown()  # gw closes in its __del__ (closing it here too makes that raise)
    return ready, time.perf_counter() - t1


def main() -> None:
    from dask_deploy_testing.gateway import GatewayServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "GatewayCluster": []}
    with GatewayServer() as server:
        for _ in range(args.rounds):
            results["ours"].append(ours(server, args.workers))
            results["GatewayCluster"].append(gateway_cluster(server, args.workers))
    summary: dict[str, Any] = {k: {"ready_median_s": round(statistics.median(r for r, _ in v), 2),
                   "ready_all_s": [round(r, 2) for r, _ in v],
                   "close_median_s": round(statistics.median(c for _, c in v), 2)}
               for k, v in results.items()}
    summary["ratio_ready_ours_over_GatewayCluster"] = round(
        summary["ours"]["ready_median_s"] / summary["GatewayCluster"]["ready_median_s"], 2)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
