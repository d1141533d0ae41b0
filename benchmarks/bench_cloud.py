"""AWS backends on the emulator: time to N workers ready, and API calls per worker.

Batched starts (``run_task`` with ``count`` up to 10) against one call per worker, as
dask-cloudprovider does it, on ``fargate`` with moto and the task runner of
:mod:`dask_deploy_testing.cloud` (every task a local process; all on 127.0.0.1). Each trial
runs in a fresh interpreter with its own emulator; the two modes alternate within every
round. Times are wall clock: the scheduler task's start, then ``scale(N)`` to N connected
workers, then close (stop every task and wait until ECS reports it stopped). Calls are
counted by the backend's client: the ``run_task`` / ``stop_task`` calls, and every AWS call
made between ``scale(N)`` and N workers ready (that includes the status polls).

dask-cloudprovider itself cannot be run here: it would dial the addresses the emulator
hands out (10.x, public), which these machines must never do.

    uv run python benchmarks/bench_cloud.py [--sizes 1 4 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

OPTIONS: dict[str, Any] = {
    "image": "dask-deploy:bench", "resolve_address": "dask_deploy_testing.cloud:loopback",
    "client_cidrs": ["127.0.0.1/32"], "scheduler_port": 0, "dashboard_address": ":0",
    "worker_cpu": 256, "worker_mem": 512, "scheduler_cpu": 256, "scheduler_mem": 512,
    "threads_per_worker": 1, "poll_interval": 0.5, "start_timeout": 300, "quiet": True,
}


def trial(mode: str, n: int) -> dict[str, float]:
    from dask_deploy import Cluster
    from dask_deploy_cloud._ecs import ECSBackend
    from dask_deploy_testing.cloud import emulated_aws

    if mode == "single":
        ECSBackend.batch_size = 1  # type: ignore[misc]  # one run_task per worker
    with emulated_aws():
        t0 = time.perf_counter()
        cluster = Cluster.from_name("fargate", n_workers=0, **OPTIONS)
        scheduler = time.perf_counter() - t0
        calls = cluster.backend.aws.calls
        before = dict(calls)
        t1 = time.perf_counter()
        cluster.scale(n)
        cluster.wait_for_workers(n, timeout=600)
        ready = time.perf_counter() - t1
        start_calls = sum(calls.values()) - sum(before.values())
        run_task = calls["ecs.run_task"] - before.get("ecs.run_task", 0)
        stops = calls["ecs.stop_task"]
        t2 = time.perf_counter()
        cluster.close()
        closed = time.perf_counter() - t2
        worker_stops = calls["ecs.stop_task"] - stops - 1  # the scheduler's task is one of them
    return {"scheduler": scheduler, "ready": ready, "close": closed,
            "run_task_per_worker": run_task / n, "stop_task_per_worker": worker_stops / n,
            "start_calls_per_worker": start_calls / n}


def _fmt(values: list[float]) -> str:
    return f"{min(values):6.2f} {statistics.median(values):6.2f} {max(values):6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trial", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial[0], int(args.trial[1]))))
        return
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for n in args.sizes:
            order = ["batched", "single"] if r % 2 == 0 else ["single", "batched"]
            for mode in order:
                out = subprocess.run([sys.executable, __file__, "--trial", mode, str(n)],
                                     capture_output=True, text=True, timeout=1200, check=True)
                results.setdefault((mode, n), []).append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"round {r} n={n} {mode}: {results[(mode, n)][-1]}", file=sys.stderr)
    print("| N | mode | scheduler s (min med max) | N workers ready s (min med max) | close s "
          "(min med max) | run_task / worker | stop_task / worker | AWS calls / worker started |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.sizes:
        for mode in ("batched", "single"):
            rs = results[(mode, n)]
            col = {k: [r[k] for r in rs] for k in rs[0]}
            print(f"| {n} | {mode} | {_fmt(col['scheduler'])} | {_fmt(col['ready'])} | {_fmt(col['close'])} "
                  f"| {statistics.median(col['run_task_per_worker']):.2f} "
                  f"| {statistics.median(col['stop_task_per_worker']):.2f} "
                  f"| {statistics.median(col['start_calls_per_worker']):.1f} |")
        b = statistics.median(r["ready"] for r in results[("batched", n)])
        s = statistics.median(r["ready"] for r in results[("single", n)])
        print(f"|  | ratio batched/single (ready, medians) | | {b / s:.2f} | | | | |")


if __name__ == "__main__":
    main()
