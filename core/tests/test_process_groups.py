"""Nothing a worker started outlives it; a detached agent whose cluster never came up exits.

Issue 13, items 4 and 5, on the local backend (the SSH backend runs the same agent).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from dask_deploy import Cluster
from distributed import Client

#: The whole of a "sleep 1000" started by a task, as it is left when its worker goes.
ORPHAN = ("import subprocess as s; "
          "print(s.Popen(['sleep', '1000'], stdout=s.DEVNULL, stderr=s.DEVNULL).pid)")


def spawn_sleep() -> tuple[int, int]:
    """In a task: start a subprocess the worker does not know about; (its pid, worker pid)."""
    return subprocess.Popen(["sleep", "1000"]).pid, os.getpid()


def spawn_orphan() -> tuple[int, int]:
    """In a task: a subprocess whose parent exits at once (reparented away from the worker)."""
    out = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True, check=True)
    return int(out.stdout), os.getpid()


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture
def sleepers() -> Any:
    """pids this test's tasks started: killed at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_task_subprocess_gone_after_close(sleepers: list[int], wait_until: Any) -> None:
    with Cluster.from_name("local", n_workers=1, name="t-pg-close", stop_grace=1.0) as cluster, \
            Client(cluster) as client:
        cluster.wait_for_workers(1, timeout=60)
        for task in (spawn_sleep, spawn_orphan):
            pid, worker = client.submit(task, pure=False).result(timeout=60)
            sleepers.append(pid)
            assert worker != os.getpid() and running(pid)
    wait_until(lambda: not any(running(p) for p in sleepers), 15, "the tasks' sleeps to end")


def test_task_subprocess_gone_after_scale_down(sleepers: list[int], wait_until: Any) -> None:
    with Cluster.from_name("local", n_workers=2, name="t-pg-scale", stop_grace=1.0) as cluster, \
            Client(cluster) as client:
        cluster.wait_for_workers(2, timeout=60)
        workers = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
        pids = {name: client.submit(spawn_sleep, workers=[addr], pure=False).result(timeout=60)[0]
                for name, addr in workers.items()}
        sleepers.extend(pids.values())
        cluster.sync(cluster.scale_down, ["t-pg-scale-1"])
        wait_until(lambda: not running(pids["t-pg-scale-1"]), 15, "the stopped worker's sleep to end")
        assert running(pids["t-pg-scale-0"]), "the other worker's task subprocess was stopped too"
    wait_until(lambda: not running(pids["t-pg-scale-0"]), 15, "the last sleep to end at close")


def test_task_subprocess_gone_when_its_worker_dies(sleepers: list[int], wait_until: Any) -> None:
    """A worker that ends on its own (here: killed) takes its group's leftovers along."""
    with Cluster.from_name("local", n_workers=1, name="t-pg-die", stop_grace=1.0) as cluster, \
            Client(cluster) as client:
        cluster.wait_for_workers(1, timeout=60)
        pid, worker = client.submit(spawn_sleep, pure=False).result(timeout=60)
        sleepers.append(pid)
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not running(pid), 15, "the dead worker's sleep to end")


def test_gc_kill_ends_the_workers_process_groups(sleepers: list[int], wait_until: Any) -> None:
    """gc's by-pid kill reaches a task's subprocess that is no longer the worker's child."""
    from dask_deploy._local import _kill, discover_agents

    with Cluster.from_name("local", n_workers=1, name="t-pg-gc", stop_grace=1.0) as cluster, \
            Client(cluster) as client:
        cluster.wait_for_workers(1, timeout=60)
        pid, _ = client.submit(spawn_orphan, pure=False).result(timeout=60)
        sleepers.append(pid)
        [handle] = discover_agents("local", "t-pg-gc")
        assert pid not in handle.data["pids"]  # out of reach of a kill by pid
        asyncio.run(_kill(handle.data["pids"], 1.0))
        wait_until(lambda: not running(pid), 15, "the orphaned sleep to end")


def _detached_agent(state_dir: str, name: str, start_timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    """Start a detached agent as ``LocalBackend._detached_agent`` does."""
    from dask_deploy._agent import agent_command

    path = os.path.join(state_dir, f"{name}.sock")
    proc = subprocess.Popen(agent_command(sys.executable, name, listen=path, start_timeout=start_timeout),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    return proc, path


def _request(path: str, *msgs: dict[str, Any], until: str) -> list[dict[str, Any]]:
    """Send requests on the agent's socket; read events until one with op ``until``; hang up."""
    events: list[dict[str, Any]] = []
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(path)
        s.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in msgs))
        buf = b""
        while not any(e.get("op") == until for e in events):
            chunk = s.recv(65536)
            assert chunk, f"the agent hung up before an {until!r} event: {events}"
            buf += chunk
            *lines, buf = buf.split(b"\n")
            events += [json.loads(line) for line in lines if line.strip()]
    return events


def test_detached_agent_without_a_scheduler_exits_after_start_timeout(
        state_dir: str, tmp_path: Any, wait_until: Any) -> None:
    """Its client died before starting a scheduler: the agent, and what it forked, go."""
    proc, path = _detached_agent(state_dir, "t-deadline", 3.0)
    try:
        wait_until(lambda: os.path.exists(path) or proc.poll() is not None, 60, "the agent's socket")
        ready = time.monotonic()
        # A worker (of a scheduler that never comes) is forked, then the client vanishes.
        start = {"op": "start", "name": "t-deadline-0", "role": "worker", "env": {},
                 "kwargs": {"scheduler_ip": "tcp://127.0.0.1:9"}, "log": str(tmp_path / "w.log")}
        events = _request(path, start, until="started")
        worker = next(e["pid"] for e in events if e.get("op") == "started")
        code = proc.wait(timeout=3.0 + 15)
        assert time.monotonic() - ready > 2.0, "the agent did not wait for its start_timeout"
        assert code == 0
        assert not os.path.exists(path), "the agent left its socket behind"
        wait_until(lambda: not running(worker), 15, "the agent's worker to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_detached_agent_with_a_scheduler_outlives_its_start_timeout(
        state_dir: str, tmp_path: Any, wait_until: Any) -> None:
    """The deadline is for a scheduler to come up; once one is up the agent stays."""
    proc, path = _detached_agent(state_dir, "t-nodeadline", 2.0)
    try:
        wait_until(lambda: os.path.exists(path) or proc.poll() is not None, 60, "the agent's socket")
        start = {"op": "start", "name": "t-nodeadline-scheduler", "role": "scheduler", "env": {},
                 "kwargs": {"host": "127.0.0.1", "port": 0, "dashboard": False},
                 "log": str(tmp_path / "s")}
        _request(path, start, until="scheduler")
        time.sleep(4.0)  # twice its start_timeout
        assert proc.poll() is None, "the agent exited although its scheduler is up"
        # Stopping the scheduler still ends a detached agent.
        _request(path, {"op": "stop", "names": ["t-nodeadline-scheduler"], "grace": 1.0}, until="exit")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_agent_command_carries_start_timeout() -> None:
    from dask_deploy._agent import agent_command

    cmd = agent_command("python", "c", listen="/x.sock", start_timeout=7)
    assert cmd[cmd.index("--start-timeout") + 1] == "7.0" and cmd[-2:] == ["--listen", "/x.sock"]
    assert "--start-timeout" not in agent_command("python", "c")


def test_agent_exits_when_its_owner_can_no_longer_be_written_to(tmp_path: Any) -> None:
    """A dead client's end of the agent's stdout fails a write before its stdin's EOF is
    read: that also ends the agent, with what it forked (it once served no one forever)."""
    agent = subprocess.Popen([sys.executable, "-m", "dask_deploy._agent", "--cluster", "t-epipe"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert agent.stdin is not None and agent.stdout is not None
    try:
        assert b'"ready"' in agent.stdout.readline()
        start = {"op": "start", "name": "t-epipe-0", "role": "worker", "env": {},
                 "kwargs": {"scheduler_ip": "tcp://127.0.0.1:9"}, "log": str(tmp_path / "w.log")}
        agent.stdin.write(json.dumps(start).encode() + b"\n")
        agent.stdin.flush()
        worker = json.loads(agent.stdout.readline())["pid"]
        agent.stdout.close()  # the client's read end goes; its write end (our stdin) stays
        agent.stdin.write(b'{"op": "ps"}\n')  # its answer cannot be written
        agent.stdin.flush()
        assert agent.wait(timeout=30) == 0
        assert not running(worker)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
