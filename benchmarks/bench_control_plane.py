"""Control-plane cost: our SpecCluster vs ``distributed.deploy.SpecCluster``, no processes.

Both clusters drive a backend that does nothing: ours a no-op backend registered in this
process (``deploy_start_workers`` returns handles, ``deploy_poll`` says RUNNING, workers
never connect), distributed's a no-op ``ProcessInterface``. What is timed is the
bookkeeping alone:

* **up**: ``scale(N)`` until every unit was asked to start (the backend saw N starts);
* **down**: ``scale(0)`` until every unit was asked to stop (the backend saw N stops);
* both also as CPU time of the process (``time.process_time``), which a busy machine
  inflates far less than wall time;
* **memory per unit**: Python heap growth (tracemalloc) from before ``scale(N)`` to all
  started, divided by N, in a separate untimed pass (tracemalloc slows everything).

Each trial runs in a fresh interpreter and the two contenders alternate within each round.

    uv run python benchmarks/bench_control_plane.py [--sizes 10000 100000] [--rounds 3]
    uv run python benchmarks/bench_control_plane.py --profile down 100000   # cProfile, ours
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


class _Counter:
    """Counts starts and stops and sets an event when a target is reached."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0
        self.want: tuple[str, int] | None = None
        self.reached = asyncio.Event()

    def expect(self, what: str, n: int) -> None:
        self.want = (what, n)
        self.reached.clear()
        self._check()

    def _check(self) -> None:
        if self.want and getattr(self, self.want[0]) >= self.want[1]:
            self.reached.set()

    def add(self, what: str, n: int) -> None:
        setattr(self, what, getattr(self, what) + n)
        self._check()


def _ours(counter: _Counter) -> Callable[[], Any]:
    from dask_deploy import (
        BackendInfo,
        ClusterSpec,
        Handle,
        Phase,
        SchedulerSpec,
        SpecCluster,
        Status,
        hookimpl,
        register_backend,
    )
    from dask_deploy._specs import Unit

    running = Status(Phase.RUNNING)

    class Noop:
        @hookimpl
        async def deploy_start_workers(self, cluster: ClusterSpec, scheduler_address: str,
                                       units: Sequence[Unit]) -> list[Handle]:
            counter.add("started", len(units))
            return [Handle("noop", cluster.name, u.name, u.name) for u in units]

        @hookimpl
        async def deploy_stop_workers(self, cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
            counter.add("stopped", len(handles))

        @hookimpl
        async def deploy_poll(self, cluster: ClusterSpec,
                              handles: Sequence[Handle]) -> list[Status]:
            return [running] * len(handles)

    register_backend(BackendInfo("noop", "does nothing", lambda spec: Noop(),
                                 capabilities=frozenset({"loopback"})))
    spec = ClusterSpec("noop", "bench", scheduler=SchedulerSpec(dashboard_address=None),
                       start_timeout=3600, poll_interval=3600)

    async def make() -> Any:
        return await SpecCluster(spec, asynchronous=True, extensions={}, quiet=True)

    return make


def _theirs(counter: _Counter) -> Callable[[], Any]:
    from distributed import Scheduler
    from distributed.deploy.spec import ProcessInterface, SpecCluster

    class Noop(ProcessInterface):  # type: ignore[misc]
        async def start(self) -> None:
            counter.add("started", 1)
            await super().start()

        async def close(self) -> None:
            counter.add("stopped", 1)
            await super().close()

    async def make() -> Any:
        return await SpecCluster(
            workers={}, worker={"cls": Noop, "options": {}},
            scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False}},
            asynchronous=True, silence_logs=logging.CRITICAL)

    return make


async def _run(kind: str, n: int, memory: bool, profile: str | None) -> dict[str, float]:
    import tracemalloc

    counter = _Counter()
    cluster = await (_ours if kind == "ours" else _theirs)(counter)()
    out: dict[str, float] = {}
    try:
        if memory:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        prof = None
        if profile == "up":
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        counter.expect("started", n)
        cluster.scale(n)
        await counter.reached.wait()
        out["up"] = time.perf_counter() - t0
        out["up_cpu"] = time.process_time() - c0
        if prof is not None:
            prof.disable()
        if memory:
            await asyncio.sleep(0.5)  # let the round that started them finish its bookkeeping
            out["bytes_per_unit"] = (tracemalloc.get_traced_memory()[0] - before) / n
            tracemalloc.stop()
        await asyncio.sleep(0.2)  # the round that started them is over
        if profile == "down":
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        t1, c1 = time.perf_counter(), time.process_time()
        counter.expect("stopped", n)
        cluster.scale(0)
        await counter.reached.wait()
        out["down"] = time.perf_counter() - t1
        out["down_cpu"] = time.process_time() - c1
        if prof is not None:
            prof.disable()
            import pstats
            pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    finally:
        await cluster.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trial", nargs=3, metavar=("KIND", "N", "MEM"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", nargs=2, metavar=("up|down", "N"),
                        help="cProfile our cluster's scale-up or scale-down of N units")
    args = parser.parse_args()
    if args.trial:
        kind, n, mem = args.trial
        print(json.dumps(asyncio.run(_run(kind, int(n), mem == "1", None))))
        return
    if args.profile:
        print(asyncio.run(_run("ours", int(args.profile[1]), False, args.profile[0])))
        return
    kinds = ("ours", "SpecCluster")
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    memory: dict[tuple[str, int], float] = {}

    def trial(kind: str, n: int, mem: bool) -> dict[str, float]:
        out = subprocess.run([sys.executable, __file__, "--trial", kind, str(n), "1" if mem else "0"],
                             capture_output=True, text=True, check=True)
        return dict(json.loads(out.stdout.splitlines()[-1]))

    for r in range(args.rounds):
        for n in args.sizes:
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                results.setdefault((kind, n), []).append(trial(kind, n, False))
    for n in args.sizes:
        for kind in kinds:
            memory[kind, n] = trial(kind, n, True)["bytes_per_unit"]

    def fmt(values: list[float]) -> str:
        return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f} s"

    print("| N | metric | ours min/med/max | SpecCluster min/med/max | ratio (median) |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        for metric in ("up", "up_cpu", "down", "down_cpu"):
            ours = [t[metric] for t in results["ours", n]]
            theirs = [t[metric] for t in results["SpecCluster", n]]
            ratio = statistics.median(ours) / statistics.median(theirs)
            label = f"scale {metric}".replace("_cpu", " (CPU time)")
            print(f"| {n} | {label} | {fmt(ours)} | {fmt(theirs)} | {ratio:.2f} |")
        mo, mt = memory["ours", n], memory["SpecCluster", n]
        print(f"| {n} | heap per unit | {mo / 1024:.2f} KiB | {mt / 1024:.2f} KiB | {mo / mt:.2f} |")


if __name__ == "__main__":
    main()
