"""What a client killed with SIGKILL leaves behind is found and collected from another process.

Every other leak check calls ``deploy_discover`` in the interpreter that started the
cluster, so a backend whose discovery reads its own memory (a registry of the processes
*it* started) passes them all, and ``dask-deploy gc`` later finds nothing. Here a harness
interpreter starts the cluster and is killed with SIGKILL (no close, no atexit); the test
process then asks the backend what runs for that cluster (a fresh plugin object, as
``dask-deploy gc`` does), runs the garbage collection for it, and checks that nothing of it
is left: not in discover, not in this machine's process table.

For backends whose workers are processes: an in-process backend's workers die with their
client, so the check skips (with the reason) when the harness reports that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any

import pytest

from ._support import ClusterFactory, discover

__all__ = ["OrphanChecks"]

#: The harness: start the cluster, wait for its workers, report, then wait to be killed.
HARNESS = r"""
import importlib, importlib.util, json, os, sys, time
job = json.loads(sys.argv[1])
if job["module"]:  # a backend registered in the test process (register_backend), not installed
    try:
        module = importlib.import_module(job["module"])
    except ImportError:
        found = importlib.util.spec_from_file_location(job["module"], job["file"])
        module = importlib.util.module_from_spec(found)
        sys.modules[job["module"]] = module
        found.loader.exec_module(module)
    from dask_deploy import BackendInfo, register_backend
    for value in list(vars(module).values()):
        if isinstance(value, BackendInfo) and value.name == job["backend"]:
            register_backend(value)
from dask_deploy import from_name
from distributed import Client
cluster = from_name(job["backend"], **job["options"])
cluster.wait_for_workers(job["n"], timeout=job["timeout"])
with Client(cluster, set_as_default=False) as client:
    pids = client.run(os.getpid)
print("DASK-DEPLOY-HARNESS", json.dumps({"pid": os.getpid(), "workers": sorted(set(pids.values()))}),
      flush=True)
time.sleep(3600)
"""


def _job(factory: ClusterFactory, options: dict[str, Any], n: int, timeout: float) -> str:
    info = factory.info
    module = getattr(info.factory, "__module__", "") or ""
    try:
        file = inspect.getfile(info.factory)
    except (TypeError, OSError):
        file = ""
    try:
        return json.dumps({"backend": factory.backend, "options": options, "n": n,
                           "timeout": timeout, "module": module, "file": file})
    except TypeError as e:
        pytest.skip(f"the backend's options cannot be given to another interpreter as JSON: {e}")


MARK = "DASK-DEPLOY-HARNESS "


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The harness's report (the backend may print lines of its own before it), or None if
    none came within ``timeout``."""
    out: list[str] = []

    def read() -> None:
        for line in proc.stdout or ():
            if line.startswith(MARK):
                out.append(line[len(MARK):])
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0] if out else None


class OrphanChecks:
    """After its client was SIGKILLed, a cluster's workers are found from another process
    (``deploy_discover``) and removed by the garbage collection (``dask-deploy gc``)."""

    def test_orphans_of_a_killed_client_are_found_and_collected(
            self, deploy_cluster: ClusterFactory, deploy_timeout: float) -> None:
        from dask_deploy._gc import collect_garbage
        from dask_deploy._options import build_spec

        options = deploy_cluster.merged(n_workers=2)
        with tempfile.TemporaryFile("w+") as errors:
            proc = subprocess.Popen([sys.executable, "-c", HARNESS,
                                     _job(deploy_cluster, options, 2, deploy_timeout)],
                                    stdout=subprocess.PIPE, stderr=errors, text=True,
                                    start_new_session=True)
            try:
                line = _read_line(proc, 2 * deploy_timeout)
                if line is None:
                    errors.seek(0)
                    raise AssertionError("the harness did not start a cluster of 2 workers:\n"
                                         + errors.read()[-3000:])
                report = json.loads(line)
                if report["pid"] in report["workers"]:
                    pytest.skip("the workers run inside their client's process (an in-process "
                                "backend): they cannot outlive it")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)  # no close(), no atexit: a crash
                proc.wait()
        spec, _ = build_spec(deploy_cluster.backend, options)
        info = deploy_cluster.info
        # What the killed client left: the backend must find it from here, whatever its own
        # safety nets (an agent that exits with its client) already removed.
        running = [pid for pid in report["workers"] if _runs(pid)]
        handles = discover(info, spec)
        if handles is None:
            pytest.skip("the backend does not implement deploy_discover")
        assert handles or not running, (
            f"deploy_discover from another process finds nothing of cluster {spec.name}, whose "
            f"client was killed, while its worker processes {running} still run (does discovery "
            "ask the system, or the memory of the process that started them?)")
        own = {f.name for f in dataclasses.fields(info.options)} if info.options else set()
        lines: list[str] = []
        asyncio_run(collect_garbage(
            [deploy_cluster.backend], options={deploy_cluster.backend: {
                k: v for k, v in options.items() if k in own}},
            clusters=[spec.name], grace=0, echo=lines.append))
        leaks = deploy_cluster.leaks(spec.name, spec)
        assert not leaks, ("still running after `dask-deploy gc` for the cluster of a killed "
                           "client:\n  " + "\n  ".join(leaks) + "\ngc said:\n  " + "\n  ".join(lines))


def _runs(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def asyncio_run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)
