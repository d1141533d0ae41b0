"""k8s backend on the API-server emulator: time to N workers ready, and close-to-no-pods time.

There is no anchor we can run here: dask-kubernetes' classic pod-per-worker KubeCluster was
removed, and its operator needs a real API server with CRDs. As a reference in the same run,
``distributed.LocalCluster`` with one process per worker pays the same per-worker cost that
dominates on the emulator (a fresh interpreter importing distributed), so ours/reference
shows what the API round trips, the watch, the pods' TLS and the port-forward add.

Each trial runs in a fresh interpreter (with its own emulator, started before the clock);
the two contenders alternate within every round.

    uv run python benchmarks/bench_k8s.py [--sizes 1 4 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time


def trial(kind: str, n: int) -> dict[str, float]:
    from dask_deploy import Cluster
    from dask_deploy_testing.k8s import Emulator
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory() as tmp, Emulator(tmp) as emu:
        t0 = time.perf_counter()
        if kind == "ours":
            cluster = Cluster.from_name("k8s", **emu.backend_options(n_workers=n, quiet=True))
        else:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0")
        cluster.wait_for_workers(n, timeout=600)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        cluster.close()
        closed = time.perf_counter() - t1
        if kind == "ours":  # close returns once the pods are gone: check that it is so
            pods = emu.call(lambda v1: v1.list_namespaced_pod("default"))
            assert not pods.items, [p.metadata.name for p in pods.items]
    return {"ready": ready, "close": closed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trial", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial[0], int(args.trial[1]))))
        return
    kinds = ["ours", "LocalCluster"]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for n in args.sizes:
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                out = subprocess.run([sys.executable, __file__, "--trial", kind, str(n)],
                                     capture_output=True, text=True, check=True)
                results.setdefault((kind, n), []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| N | metric | k8s on emulator min / median / max (s) | LocalCluster min / median / max (s) "
          "| ratio of medians |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        for metric in ("ready", "close"):
            cells = []
            medians = []
            for kind in kinds:
                values = sorted(t[metric] for t in results[(kind, n)])
                medians.append(statistics.median(values))
                cells.append(f"{values[0]:.2f} / {medians[-1]:.2f} / {values[-1]:.2f}")
            print(f"| {n} | {metric} | {cells[0]} | {cells[1]} | {medians[0] / medians[1]:.2f} |")


if __name__ == "__main__":
    main()
