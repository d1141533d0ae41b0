"""Adaptive scaling on the local backend: our policy vs distributed's ``Adaptive`` on our
backend vs ``LocalCluster``'s adapt, same run.

Each trial, in a fresh interpreter: a cluster with no worker, ``adapt(minimum=0,
maximum=4)`` with each contender's defaults, then 16 tasks of 0.5 s. Measured:

* **first result**: from submitting the tasks to the first result (includes starting
  workers from zero);
* **idle to retired**: for every worker, from the moment the cluster went idle (the last
  task finished, seen by a scheduler plugin) to the scheduler removing the worker; the p95
  and the median over all workers of all trials;
* **starts**: how many workers were started in the trial (a flapping policy starts more).

Contenders alternate within each round.

    uv run python benchmarks/bench_adaptive.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

KINDS = ("ours", "distributed-Adaptive", "LocalCluster")


def trial(kind: str) -> dict[str, Any]:
    from distributed import Client, LocalCluster, as_completed
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Watch(SchedulerPlugin):  # type: ignore[misc]
        def __init__(self) -> None:
            self.removed: list[float] = []
            self.added = 0
            self.last_done = 0.0

        def add_worker(self, scheduler: Any = None, worker: Any = None) -> None:
            self.added += 1

        def remove_worker(self, scheduler: Any = None, worker: Any = None, **kw: Any) -> None:
            self.removed.append(time.monotonic())

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kw: Any) -> None:
            if start == "processing" and finish == "memory":
                self.last_done = time.monotonic()

    cluster: Any
    if kind == "LocalCluster":
        cluster = LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None)
        cluster.adapt(minimum=0, maximum=4)
    else:
        from dask_deploy import Cluster

        cluster = Cluster.from_name("local", n_workers=0, quiet=True, dashboard_address=None)
        if kind == "ours":
            cluster.adapt(minimum=0, maximum=4)
        else:
            from distributed.deploy.adaptive import Adaptive

            cluster.adapt(Adaptive=Adaptive, minimum=0, maximum=4)
    watch = Watch()
    cluster.scheduler.add_plugin(watch)
    client = Client(cluster)
    try:
        time.sleep(1.0)  # the adaptive loop is running
        t0 = time.monotonic()
        futures = client.map(time.sleep, [0.5] * 16, pure=False)
        first = None
        for future in as_completed(futures):  # noqa: B007 (deleted below)
            first = time.monotonic() - t0 if first is None else first
        done = time.monotonic() - t0
        del futures, future  # a result still referenced keeps its worker (correctly)
        deadline = time.monotonic() + 120
        while len(watch.removed) < watch.added and time.monotonic() < deadline:
            time.sleep(0.02)
        idle_at = watch.last_done
        return {"first": first, "done": done, "starts": watch.added,
                "retired": [t - idle_at for t in watch.removed],
                "left": watch.added - len(watch.removed)}
    finally:
        client.close()
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial)))
        return
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for r in range(args.rounds):
        order = KINDS if r % 2 == 0 else KINDS[::-1]
        for kind in order:
            out = subprocess.run([sys.executable, __file__, "--trial", kind],
                                 capture_output=True, text=True, check=True, timeout=600)
            results[kind].append(json.loads(out.stdout.splitlines()[-1]))

    def p95(values: list[float]) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, max(0, round(0.95 * len(values)) - 1))]

    print("| contender | first result (median) | all done (median) | idle to retired "
          "median / p95 / max | workers started (mean) | never retired |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        rs = results[kind]
        retired = [x for r in rs for x in r["retired"]]
        print(f"| {kind} | {statistics.median(r['first'] for r in rs):.2f} s | "
              f"{statistics.median(r['done'] for r in rs):.2f} s | "
              f"{statistics.median(retired):.2f} / {p95(retired):.2f} / {max(retired):.2f} s | "
              f"{statistics.mean(r['starts'] for r in rs):.1f} | "
              f"{sum(r['left'] for r in rs)} |")


if __name__ == "__main__":
    main()
