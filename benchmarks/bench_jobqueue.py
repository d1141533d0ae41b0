"""slurm (sge, pbs) backend vs ``dask_jobqueue.SLURMCluster`` (``SGECluster``,
``PBSCluster``) on the same real server: a private SLURM, the one-host Grid Engine of the
tests (``--system sge``), or that SLURM through its Torque wrappers (``--system pbs``:
``slurm-wlm-torque``'s ``qsub``/``qstat``/``qdel`` first on PATH, see
dask_deploy_testing.torque; both contenders submit with the wrappers' ``qsub``).

Measures, for each contender in its default configuration (ours: TLS, no nanny, job
arrays; dask-jobqueue: plain TCP, a nanny per worker, one sbatch per job):

* ``ready``: constructor to N workers connected (N = 1, 4, 8; 1 core per job);
* ``close``: ``close()`` called to no job of the cluster left in the queue (squeue);
* ``submit50``: ``scale(50)`` to 50 jobs in the queue (8 run at once here, 42 wait), the
  number of ``sbatch`` calls that took, and then closing those 50 (to an empty queue);
* the final SLURM state of a stopped job (COMPLETED vs CANCELLED).

A private single-node SLURM is started once (root only; see dask_deploy_testing.slurm);
with ``--system sge`` the one-host Grid Engine (dask_deploy_testing.sge; only ``ready`` and
``close`` are measured there, and the final state is not read: Grid Engine forgets a job
when it ends, ``qacct`` would need accounting).
Each trial runs in a fresh interpreter (imports paid before the clock starts); the
contenders alternate within every round, so both see the same machine state. Prints a
markdown table of min/median/max and the ratio ours/anchor of the medians.

    sudo uv run python benchmarks/bench_jobqueue.py [--sizes 1 4 8] [--rounds 5] [--submit-rounds 3]
    sudo uv run python benchmarks/bench_jobqueue.py --system sge --sizes 4 --rounds 5
    sudo uv run python benchmarks/bench_jobqueue.py --system pbs --sizes 4 --rounds 3 --submit-rounds 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

#: "slurm", "sge" or "pbs": the batch system of this run (trials read it from the environment).
SYSTEM = os.environ.get("DASK_DEPLOY_BENCH_SYSTEM", "slurm")


def queue(name: str) -> list[str]:
    if SYSTEM == "sge":
        out = subprocess.run(["qstat", "-xml", "-u", "*"], capture_output=True, text=True,
                             check=True).stdout
        return [f"{j.findtext('JB_job_number')}.{j.findtext('tasks') or ''}"
                for j in ET.fromstring(out).iter("job_list") if j.findtext("JB_name") == name]
    out = subprocess.run(["squeue", "--noheader", "--array", f"--name={name}", "--format=%i"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def wait(cond: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met")
        time.sleep(0.02)


def state(job: str) -> str:
    if SYSTEM == "sge":
        return "?"
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True,
                         check=False).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "?")


def make(kind: str, name: str, logs: str, n: int) -> tuple[Any, str]:
    """A cluster of ``n`` workers and the SLURM job name its jobs carry."""
    common: dict[str, Any] = {"cores": 1, "memory": "512MiB", "walltime": "00:30:00"}
    if SYSTEM == "sge":
        common["queue"] = "all.q"
    if kind == "ours":
        from dask_deploy import Cluster

        return (Cluster.from_name(SYSTEM, name=name, n_workers=n, log_directory=logs, quiet=True,
                                  **common), f"dask-deploy.{name}.worker")
    from dask_jobqueue.pbs import PBSCluster
    from dask_jobqueue.sge import SGECluster
    from dask_jobqueue.slurm import SLURMCluster

    cls = {"sge": SGECluster, "pbs": PBSCluster}.get(SYSTEM, SLURMCluster)
    cluster = cls(job_name=name, n_workers=n, log_directory=logs, processes=1,
                           scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
                           worker_extra_args=["--host", "127.0.0.1"], **common)
    return cluster, name


def trial_ready(kind: str, n: int) -> dict[str, Any]:
    name = f"b{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    cluster, job_name = make(kind, name, tempfile.mkdtemp(), n)
    cluster.wait_for_workers(n, timeout=300)
    ready = time.perf_counter() - t0
    jobs = queue(job_name)
    t1 = time.perf_counter()
    cluster.close()
    wait(lambda: not queue(job_name))
    closed = time.perf_counter() - t1
    return {"ready": ready, "close": closed, "jobs": len(jobs), "final_state": state(jobs[0])}


def trial_submit(kind: str, n: int) -> dict[str, Any]:
    name = f"s{uuid.uuid4().hex[:8]}"
    cluster, job_name = make(kind, name, tempfile.mkdtemp(), 0)
    calls_before = _sbatch_calls()
    t0 = time.perf_counter()
    cluster.scale(n)
    wait(lambda: len(queue(job_name)) >= n)
    submitted = time.perf_counter() - t0
    calls = _sbatch_calls() - calls_before
    t1 = time.perf_counter()
    cluster.close()
    wait(lambda: not queue(job_name))
    return {"submit": submitted, "close": time.perf_counter() - t1, "sbatch_calls": calls}


def _sbatch_calls() -> int:
    """Job submissions slurmctld has seen (``sdiag``: "Jobs submitted" counts elements, so
    count the array-aware "sbatch" RPCs instead)."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "REQUEST_SUBMIT_BATCH_JOB" in line:
            return int(line.split("count:")[1].split()[0])
    return 0


def run(kind: str, what: str, n: int) -> dict[str, Any]:
    # In a folder of its own: the Torque wrappers' qsub writes PBSCluster's output files
    # (<script>.o<id>, .e<id>) where it runs.
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--trial", what, kind, str(n)],
                         capture_output=True, text=True, env=os.environ, cwd=tempfile.mkdtemp())
    if out.returncode != 0:
        raise RuntimeError(f"{what} {kind} n={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def table(results: dict[tuple[str, str, int], list[dict[str, Any]]], rows: list[tuple[str, int, str]],
          anchor: str) -> None:
    print(f"| N | metric | ours min / median / max | {anchor} min / median / max | "
          "ratio ours/anchor (median) |")
    print("|---|---|---|---|---|")
    for what, n, metric in rows:
        cells, meds = [], []
        for kind in ("ours", anchor):
            xs = sorted(float(r[metric]) for r in results[(kind, what, n)])
            meds.append(statistics.median(xs))
            cells.append(f"{xs[0]:.2f} / {meds[-1]:.2f} / {xs[-1]:.2f}")
        ratio = meds[0] / meds[1] if meds[1] else float("nan")
        print(f"| {n} | {metric} | {cells[0]} | {cells[1]} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=["slurm", "sge", "pbs"], default="slurm")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--submit-n", type=int, default=50)
    parser.add_argument("--submit-rounds", type=int, default=3)
    parser.add_argument("--trial", nargs=3, metavar=("WHAT", "KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        what, kind, n = args.trial
        fn = trial_ready if what == "ready" else trial_submit
        print(json.dumps(fn(kind, int(n))))
        return

    global SYSTEM
    SYSTEM = os.environ["DASK_DEPLOY_BENCH_SYSTEM"] = args.system
    from dask_deploy_testing.sge import local_sge
    from dask_deploy_testing.slurm import local_slurm

    server: Any = local_sge if args.system == "sge" else local_slurm
    anchor = {"sge": "SGECluster", "pbs": "PBSCluster"}.get(args.system, "SLURMCluster")
    if args.system == "pbs":  # the Torque wrappers, first on PATH for both contenders
        from dask_deploy_testing.torque import torque_bin

        os.environ["PATH"] = f"{torque_bin()}{os.pathsep}{os.environ['PATH']}"
    if args.system == "sge":
        args.submit_rounds = 0  # the submit50 trial reads SLURM's sdiag
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    with server() as srv:
        os.environ.update(srv.env)
        os.environ["DASK_DEPLOY_STATE_DIR"] = tempfile.mkdtemp()
        for r in range(args.rounds):
            for n in args.sizes:
                for kind in (["ours", anchor] if r % 2 == 0 else [anchor, "ours"]):
                    res = run(kind, "ready", n)
                    results.setdefault((kind, "ready", n), []).append(res)
                    print(f"round {r} ready n={n} {kind}: {res}", file=sys.stderr)
        for r in range(args.submit_rounds):
            for kind in (["ours", anchor] if r % 2 == 0 else [anchor, "ours"]):
                res = run(kind, "submit", args.submit_n)
                results.setdefault((kind, "submit", args.submit_n), []).append(res)
                print(f"round {r} submit n={args.submit_n} {kind}: {res}", file=sys.stderr)
    rows = [("ready", n, m) for n in args.sizes for m in ("ready", "close")]
    if args.submit_rounds:
        rows += [("submit", args.submit_n, m) for m in ("submit", "close", "sbatch_calls")]
    table(results, rows, anchor)
    for kind in ("ours", anchor):
        states = sorted({r["final_state"] for n in args.sizes for r in results[(kind, "ready", n)]})
        print(f"\nfinal state of stopped jobs, {kind}: {', '.join(states)}")


if __name__ == "__main__":
    main()
