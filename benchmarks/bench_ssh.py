"""dask-deploy's ssh backend vs distributed's SSHCluster, against the same real sshds.

Two private sshds on 127.0.0.1 (two "hosts", one port each) and one non-root user, as in
the ssh plugin's tests. Both clusters put the scheduler on the first host and spread the
workers over both hosts (SSHCluster: hosts=[A, A, B] with n_workers per host; ours:
scheduler="remote", the same hosts). Runs alternate (ours, theirs, ours, ...) so that
machine load hits both alike. Measured: constructor call to N workers connected
("ready"), and close() until no process of the test user is left on the hosts ("close";
SSHCluster's close() returns before its remote processes are gone).

Each side runs with its defaults: ours forks non-nanny workers from one agent per host and
speaks TLS; SSHCluster starts one SSH session and one interpreter (plus a nanny) per worker,
over plain TCP.

Run (as root, which creates the test user and sshds): ``uv run python benchmarks/bench_ssh.py``
[``--repeats 3 --sizes 1,4,8``]. Results go to stdout and ``benchmarks/results/ssh.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _harness() -> Any:
    from dask_deploy_testing import sshd

    return sshd


def _gone(h: Any) -> None:
    """Wait until no Python process of the test user is left on the hosts (what close means)."""
    deadline = time.monotonic() + 120
    while h.user_processes(needle="python") and time.monotonic() < deadline:
        time.sleep(0.01)


def ours(n: int, a: Any, b: Any, h: Any) -> tuple[float, float]:
    from dask_deploy import Cluster

    hosts = ["127.0.0.1", "127.0.0.1", "127.0.0.1"] if n > 1 else ["127.0.0.1", "127.0.0.1"]
    opts = [a.connect_options, a.connect_options, b.connect_options] if n > 1 else \
        [a.connect_options, b.connect_options]
    t0 = time.perf_counter()
    cluster = Cluster.from_name("ssh", hosts=hosts, connect_options=opts, scheduler="remote",
                                remote_python=a.python, n_workers=n, quiet=True)
    cluster.wait_for_workers(n, timeout=300)
    t1 = time.perf_counter()
    cluster.close()
    _gone(h)
    return t1 - t0, time.perf_counter() - t1


def theirs(n: int, a: Any, b: Any, h: Any) -> tuple[float, float]:
    from distributed import SSHCluster

    per_host = max(1, n // 2)
    hosts = ["127.0.0.1", "127.0.0.1", "127.0.0.1"] if n > 1 else ["127.0.0.1", "127.0.0.1"]
    opts = [a.connect_options, a.connect_options, b.connect_options] if n > 1 else \
        [a.connect_options, b.connect_options]
    t0 = time.perf_counter()
    cluster = SSHCluster(hosts, connect_options=opts, remote_python=a.python,
                         worker_options={"n_workers": per_host, "host": "127.0.0.1"},
                         scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})
    cluster.wait_for_workers(n, timeout=300)
    t1 = time.perf_counter()
    cluster.close()
    _gone(h)
    return t1 - t0, time.perf_counter() - t1


def ours_scale(a: Any, b: Any, h: Any) -> float:
    """Seconds from scale(8) to 8 workers on a running 4-worker cluster (SSHCluster cannot)."""
    from dask_deploy import Cluster

    cluster = Cluster.from_name("ssh", hosts=["127.0.0.1"] * 2 + ["127.0.0.1"],
                                connect_options=[a.connect_options, a.connect_options,
                                                 b.connect_options],
                                scheduler="remote", remote_python=a.python, n_workers=4, quiet=True)
    try:
        cluster.wait_for_workers(4, timeout=300)
        t0 = time.perf_counter()
        cluster.scale(8)
        cluster.wait_for_workers(8, timeout=300)
        return time.perf_counter() - t0
    finally:
        cluster.close()
        _gone(h)


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1,4,8")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    h = _harness()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dask-deploy-bench-ssh-") as tmp:
        Path(tmp).chmod(0o755)  # sshd reads authorized_keys as the test user
        keys = Path(tmp) / "keys"
        keys.mkdir()
        keys.chmod(0o755)
        a = h.start_sshd(Path(tmp) / "a", keys=keys)
        b = h.start_sshd(Path(tmp) / "b", python=a.python, keys=keys)
        try:
            ours(1, a, b, h)  # warm both paths (page cache, sshd) before measuring
            theirs(1, a, b, h)
            for n in sizes:
                rows: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": []}
                for _ in range(args.repeats):
                    rows["ours"].append(ours(n, a, b, h))
                    rows["theirs"].append(theirs(n, a, b, h))
                ready = [o[0] / t[0] for o, t in zip(rows["ours"], rows["theirs"], strict=True)]
                close = [o[1] / t[1] for o, t in zip(rows["ours"], rows["theirs"], strict=True)]
                results[str(n)] = {
                    "ours_ready": summary([r[0] for r in rows["ours"]]),
                    "theirs_ready": summary([r[0] for r in rows["theirs"]]),
                    "ours_close": summary([r[1] for r in rows["ours"]]),
                    "theirs_close": summary([r[1] for r in rows["theirs"]]),
                    "ready_ratio": summary(ready), "close_ratio": summary(close),
                }
                r = results[str(n)]
                print(f"N={n}: ready ours {r['ours_ready']['median']:.2f}s vs SSHCluster "
                      f"{r['theirs_ready']['median']:.2f}s, ratio min/med/max "
                      f"{r['ready_ratio']['min']:.2f}/{r['ready_ratio']['median']:.2f}/"
                      f"{r['ready_ratio']['max']:.2f}; close ours {r['ours_close']['median']:.2f}s "
                      f"vs {r['theirs_close']['median']:.2f}s, ratio "
                      f"{r['close_ratio']['min']:.2f}/{r['close_ratio']['median']:.2f}/"
                      f"{r['close_ratio']['max']:.2f}", flush=True)
            scale = summary([ours_scale(a, b, h) for _ in range(args.repeats)])
            results["scale_4_to_8_ours"] = scale
            print(f"scale 4->8 after start (ours only): min/med/max {scale['min']:.2f}/"
                  f"{scale['median']:.2f}/{scale['max']:.2f}s", flush=True)
        finally:
            a.stop()
            b.stop()
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ssh.json").write_text(json.dumps(results, indent=2))
    leftover = h.user_processes(needle="python")
    if leftover:
        print(f"WARNING: processes of the test user remain: {leftover}", file=sys.stderr)


if __name__ == "__main__":
    main()
