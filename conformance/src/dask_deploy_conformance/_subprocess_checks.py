"""Checks that nothing a worker started outlives it: a task's subprocess ends with its worker.

A task that runs ``subprocess.Popen([...])`` starts a process the worker does not track.
When the worker's unit is stopped (``close()``, or a scale-down of that unit) such a
process must end too: a backend that runs workers as processes runs each in its own
process group, session or cgroup and stops all of it (issue 13, item 5).

The checks see the task's process from this test process, so they need the worker to run
on this machine in this PID namespace (local, SSH to loopback or to network namespaces,
SLURM on localhost); elsewhere, and for in-process backends (``fake``: no processes),
they skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._support import ClusterFactory, connected, plan, wait_converged, wait_for

__all__ = ["SigtermChecks", "TaskSubprocessChecks"]

requires = pytest.mark.deploy_requires
unless = pytest.mark.deploy_unless

#: Why a ``managed`` backend skips the task-subprocess checks.
SERVICE_STOPS = ("the service stops the worker processes, not the backend: whether a task's "
                 "subprocess ends with its worker is the service's (dask-gateway's local backend "
                 "signals the worker's process only; containers end all of it)")

#: Seconds a task's subprocess may outlive its stopped worker (a SIGTERM grace, a reap).
GONE_WITHIN = 30.0


def _spawner() -> Callable[[], dict[str, Any]]:
    """The task, defined in a closure so that it travels by value (no import on the worker)."""

    def spawn_sleep() -> dict[str, Any]:
        import os
        import socket
        import subprocess

        child = subprocess.Popen(["sleep", "1000"], start_new_session=False,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)

        def read(path: str) -> str:
            try:
                with open(path) as f:
                    return f.read().strip()
            except OSError:
                return ""

        def start_time(pid: int) -> str:  # field 22 of /proc/PID/stat, after "(comm)"
            fields = read(f"/proc/{pid}/stat").rpartition(")")[2].split()
            return fields[19] if len(fields) > 19 else ""

        try:
            pidns = str(os.stat("/proc/self/ns/pid").st_ino)
        except OSError:
            pidns = ""
        return {"pid": child.pid, "start": start_time(child.pid), "worker_pid": os.getpid(),
                "host": socket.gethostname(), "pidns": pidns,
                "boot_id": read("/proc/sys/kernel/random/boot_id")}

    return spawn_sleep


def _here() -> tuple[str, str]:
    """This machine's boot id and this process's PID namespace (as the task reports its own)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return boot, str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "", ""


def _check_visible(info: dict[str, Any]) -> None:
    """Skip, with the reason, when the task's process cannot be seen from here."""
    if info["worker_pid"] == os.getpid():
        pytest.skip("the worker runs inside the test process (an in-process backend): "
                    "there is no worker process whose subprocesses could outlive it")
    boot, pidns = _here()
    if not boot or info["boot_id"] != boot or info["pidns"] != pidns:
        pytest.skip(f"the worker runs on {info['host']!r}, another machine or PID namespace: "
                    f"its task's process {info['pid']} cannot be seen from this test process")


def _running(info: dict[str, Any]) -> bool:
    """Whether the task's process still runs (a zombie does not; a reused pid is not it)."""
    try:
        with open(f"/proc/{info['pid']}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie would count as running here)
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    fields = stat.rpartition(")")[2].split()
    state, start = fields[0], fields[19] if len(fields) > 19 else ""
    return state not in ("Z", "X") and (not info["start"] or start == info["start"])


def _spawn_on(cluster: Any, addresses: dict[str, str], timeout: float) -> dict[str, dict[str, Any]]:
    """Run the task once on each worker (name -> address); worker name -> what it reported."""
    from distributed import Client

    task = _spawner()
    with Client(cluster, set_as_default=False) as client:
        futures = {name: client.submit(task, workers=[addr], allow_other_workers=False,
                                       pure=False, key=f"spawn-sleep-{name}")
                   for name, addr in addresses.items()}
        return {name: f.result(timeout=timeout) for name, f in futures.items()}


def _wait_gone(infos: dict[str, dict[str, Any]], what: str, cluster: Any = None) -> None:
    pids = ", ".join(f"{name}: pid {info['pid']}" for name, info in infos.items())
    wait_for(lambda: not [n for n, i in infos.items() if _running(i)], GONE_WITHIN,
             f"the task subprocesses ({pids}) are gone {what}", cluster, interval=0.1)


class TaskSubprocessChecks:
    """A process a task started (``subprocess.Popen``) ends with its worker's unit."""

    @unless("managed", reason=SERVICE_STOPS)
    def test_task_subprocess_gone_after_close(self, deploy_cluster: ClusterFactory,
                                              deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=1)
        wait_converged(cluster, 1, deploy_timeout)
        infos = _spawn_on(cluster, connected(cluster), deploy_timeout)
        try:
            for info in infos.values():
                _check_visible(info)
            assert all(_running(i) for i in infos.values()), \
                f"the task's subprocess did not start: {infos}"
            cluster.close()
            _wait_gone(infos, "after close()")
        finally:
            _cleanup(infos)

    @requires("scale")
    @unless("managed", reason=SERVICE_STOPS)
    def test_task_subprocess_gone_after_scale_down(self, deploy_cluster: ClusterFactory,
                                                   deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=2)
        wait_converged(cluster, 2, deploy_timeout)
        before = connected(cluster)
        infos = _spawn_on(cluster, before, deploy_timeout)
        try:
            for info in infos.values():
                _check_visible(info)
            victim = sorted(before)[0]
            unit = next(set(u.worker_names) for u in cluster.units.values()
                        if victim in u.worker_names)
            cluster.sync(cluster.scale_down, [victim])
            left = {n: a for n, a in before.items() if n not in unit}
            wait_for(lambda: connected(cluster) == left and plan(cluster) == set(left),
                     deploy_timeout, f"{victim}'s unit is gone", cluster)
            _wait_gone({n: i for n, i in infos.items() if n in unit},
                       f"after scaling down {victim}'s unit", cluster)
            kept = {n: i for n, i in infos.items() if n not in unit}
            ended = [n for n, i in kept.items() if not _running(i)]
            assert not ended, (f"scaling down {victim}'s unit also ended the task subprocesses "
                               f"of workers {ended}, which run on")
            cluster.close()
            _wait_gone(kept, "after close()")
        finally:
            _cleanup(infos)


def _sigterm_ignorer(test_pid: int) -> Callable[[], dict[str, Any]]:
    """Run in a worker (``client.run``): make its process ignore SIGTERM, as a worker stuck
    in a C extension or a task that installed its own handler would; report the process."""

    def ignore_sigterm() -> dict[str, Any]:
        import os
        import signal
        import socket
        import threading

        def read(path: str) -> str:
            try:
                with open(path) as f:
                    return f.read().strip()
            except OSError:
                return ""

        fields = read(f"/proc/{os.getpid()}/stat").rpartition(")")[2].split()
        try:
            pidns = str(os.stat("/proc/self/ns/pid").st_ino)
        except OSError:
            pidns = ""
        ignored = ""
        if os.getpid() == test_pid:
            ignored = "in-process"  # never in the test process itself
        elif threading.current_thread() is not threading.main_thread():
            ignored = "the worker's event loop is not in its main thread"
        else:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return {"pid": os.getpid(), "start": fields[19] if len(fields) > 19 else "",
                "worker_pid": os.getpid(), "host": socket.gethostname(), "pidns": pidns,
                "boot_id": read("/proc/sys/kernel/random/boot_id"), "not_ignored": ignored}

    return ignore_sigterm


@contextlib.contextmanager
def _stubborn_workers(cluster: Any) -> Iterator[dict[str, dict[str, Any]]]:
    """Make every connected worker ignore SIGTERM and busy with a long task (so that it
    cannot leave when its scheduler closes either); worker name -> its process. Skips if
    that cannot be done or seen from here; kills what is left at the end."""
    import time

    from distributed import Client

    names = {a: n for n, a in connected(cluster).items()}
    infos: dict[str, dict[str, Any]] = {}
    client = Client(cluster, set_as_default=False)
    try:
        answers = client.run(_sigterm_ignorer(os.getpid()), workers=list(names))
        infos = {names[a]: info for a, info in answers.items()}
        for info in infos.values():
            _check_visible(info)
            if info["not_ignored"]:
                pytest.skip(f"could not make the worker ignore SIGTERM: {info['not_ignored']}")
        busy = [client.submit(time.sleep, 600, workers=[a], allow_other_workers=False, pure=False)
                for a in names]
        wait_for(lambda: all(client.processing().get(a) for a in names), GONE_WITHIN,
                 "each worker runs its long task")
        try:
            yield infos
        finally:
            del busy  # referenced until here: the tasks run on until the cluster is gone
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=5)
        _cleanup(infos)


class SigtermChecks:
    """A worker that ignores SIGTERM is still gone after close and after a scale-down: the
    backend's stop waits, then forces (SIGKILL, a forced job cancel, a pod delete)."""

    def test_worker_ignoring_sigterm_gone_after_close(self, deploy_cluster: ClusterFactory,
                                                      deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=1)
        wait_converged(cluster, 1, deploy_timeout)
        with _stubborn_workers(cluster) as infos:
            cluster.close(timeout=deploy_timeout)
            _wait_gone(infos, "after close() (the workers ignore SIGTERM and run a long task: "
                       "does the stop wait, then force?)")

    @requires("scale")
    def test_worker_ignoring_sigterm_gone_after_scale_down(self, deploy_cluster: ClusterFactory,
                                                           deploy_timeout: float) -> None:
        cluster = deploy_cluster(n_workers=2)
        wait_converged(cluster, 2, deploy_timeout)
        before = connected(cluster)
        with _stubborn_workers(cluster) as infos:
            victim = sorted(before)[0]
            unit = next(set(u.worker_names) for u in cluster.units.values()
                        if victim in u.worker_names)
            cluster.sync(cluster.scale_down, [victim])
            _wait_gone({n: i for n, i in infos.items() if n in unit},
                       f"after scaling down {victim}'s unit (its workers ignore SIGTERM and run "
                       "a long task: does the stop wait, then force?)", cluster)
            cluster.close(timeout=deploy_timeout)
            _wait_gone(infos, "after close()")


def _cleanup(infos: dict[str, dict[str, Any]]) -> None:
    """A failed check must not leave its ``sleep 1000`` behind."""
    import signal

    for info in infos.values():
        if info["pid"] != os.getpid() and _running(info):  # never the test process itself
            with contextlib.suppress(OSError):
                os.kill(info["pid"], signal.SIGKILL)
