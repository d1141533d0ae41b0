"""Local backend vs ``distributed.LocalCluster``: time to N workers ready, close time, memory.

Each trial runs in a fresh interpreter (imports are paid before the clock starts) and the
two contenders alternate within every round, so both see the same machine state. Prints a
table of min/median/max and the ratio ours/anchor of the medians.

    uv run python benchmarks/bench_local.py [--sizes 1 4 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time


def trial(kind: str, n: int) -> dict[str, float]:
    import psutil
    from dask_deploy import Cluster
    from distributed import LocalCluster

    t0 = time.perf_counter()
    if kind == "ours":
        cluster = Cluster.from_name("local", n_workers=n, quiet=True)
    else:
        cluster = LocalCluster(n_workers=n, host="127.0.0.1", dashboard_address="127.0.0.1:0")
    cluster.wait_for_workers(n, timeout=300)
    ready = time.perf_counter() - t0
    time.sleep(2)  # let workers settle before measuring memory
    pss = 0
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            pss += p.memory_full_info().pss
    t1 = time.perf_counter()
    cluster.close()
    closed = time.perf_counter() - t1
    return {"ready": ready, "close": closed, "mem_per_worker": pss / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trial", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial[0], int(args.trial[1]))))
        return
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for n in args.sizes:
            order = ["ours", "LocalCluster"] if r % 2 == 0 else ["LocalCluster", "ours"]
            for kind in order:
                out = subprocess.run([sys.executable, __file__, "--trial", kind, str(n)],
                                     capture_output=True, text=True, check=True)
                results.setdefault((kind, n), []).append(json.loads(out.stdout.splitlines()[-1]))
                print(f"round {r} n={n} {kind}: {results[(kind, n)][-1]}", file=sys.stderr)
    print("| N | metric | ours min/med/max | LocalCluster min/med/max | ratio ours/anchor (median) |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        for metric, unit, scale in (("ready", "s", 1), ("close", "s", 1),
                                    ("mem_per_worker", "MiB", 2**-20)):
            cells = []
            meds = []
            for kind in ("ours", "LocalCluster"):
                xs = sorted(x[metric] * scale for x in results[(kind, n)])
                meds.append(statistics.median(xs))
                cells.append(f"{xs[0]:.2f} / {meds[-1]:.2f} / {xs[-1]:.2f} {unit}")
            print(f"| {n} | {metric} | {cells[0]} | {cells[1]} | {meds[0] / meds[1]:.2f} |")


if __name__ == "__main__":
    main()
