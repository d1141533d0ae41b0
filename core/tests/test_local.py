"""The local backend end to end: real processes, a real scheduler, a real Client."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from dask_deploy import Cluster, CrashLoopError, SpecCluster
from distributed import Client


def worker_pids(client: Client) -> dict[str, int]:
    return client.run(os.getpid)


def test_client_work_names_and_loopback(no_leaked_processes: None) -> None:
    with Cluster.from_name("local", n_workers=2, threads_per_worker=1, name="t-work") as cluster, \
            Client(cluster) as client:
        assert isinstance(cluster, SpecCluster)
        cluster.wait_for_workers(2, timeout=60)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        assert client.gather(client.map(lambda x: x * 2, range(10))) == [x * 2 for x in range(10)]
        info = client.scheduler_info()
        assert sorted(w["name"] for w in info["workers"].values()) == ["t-work-0", "t-work-1"]
        assert all("127.0.0.1" in addr for addr in info["workers"])
        assert "127.0.0.1" in cluster.scheduler_address
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        assert "t-work" in repr(cluster) and "workers=2" in repr(cluster)
        assert cluster._repr_html_()  # the Jupyter widget's HTML renders


def test_scale_up_and_down(no_leaked_processes: None, wait_until: Any, agents_of: Any) -> None:
    with Cluster.from_name("local", n_workers=1, name="t-scale") as cluster, Client(cluster) as client:
        cluster.scale(4)
        cluster.wait_for_workers(4, timeout=60)
        assert len(agents_of("t-scale")[0].children()) == 4
        cluster.scale(1)
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 60, "scale down to 1")
        wait_until(lambda: len(agents_of("t-scale")[0].children()) == 1, 60, "processes to exit")
        assert cluster.plan == cluster.requested == {"t-scale-0"}


def test_scale_by_cores_and_memory(no_leaked_processes: None) -> None:
    with Cluster.from_name("local", n_workers=0, threads_per_worker=2, memory_limit="300MiB",
                           name="t-res") as cluster:
        cluster.scale(cores=5)
        assert len(cluster.units) == 3
        cluster.scale(memory="1GiB")
        assert len(cluster.units) == 4


def test_killed_worker_is_replaced_and_its_log_survives(no_leaked_processes: None, wait_until: Any) -> None:
    with Cluster.from_name("local", n_workers=2, name="t-kill") as cluster, Client(cluster) as client:
        cluster.wait_for_workers(2, timeout=60)
        by_name = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
        victim_addr = by_name["t-kill-1"]
        os.kill(worker_pids(client)[victim_addr], signal.SIGKILL)
        wait_until(lambda: victim_addr not in client.scheduler_info()["workers"], 60, "removal")
        # The reconciler starts a new worker under the same name.
        wait_until(lambda: "t-kill-1" in {w["name"] for w in client.scheduler_info()["workers"].values()},
                   60, "replacement worker")
        logs = cluster.get_logs()
        assert victim_addr in logs["t-kill-1"]  # the dead worker's own log lines
        assert "t-kill-1 failed: t-kill-1: killed by signal 9" in logs["Cluster"]


def test_a_killed_agent_is_replaced_with_its_workers(no_leaked_processes: None, wait_until: Any,
                                                     agents_of: Any) -> None:
    with Cluster.from_name("local", n_workers=2, name="t-agent") as cluster, Client(cluster) as client:
        cluster.wait_for_workers(2, timeout=60)
        (agent,) = agents_of("t-agent")
        old = set(worker_pids(client).values())
        agent.kill()  # its workers die with it (parent-death signal)
        wait_until(lambda: [a for a in agents_of("t-agent") if a.pid != agent.pid], 60, "a new agent")
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 2
                   and old.isdisjoint(worker_pids(client).values()), 60, "two workers of the new agent")
        assert client.submit(sum, [1, 2]).result(timeout=60) == 3
        assert cluster.error is None
        assert "the local agent exited with code -9" in cluster.get_logs(scheduler=False)["Cluster"]


def test_crash_loop_limit_surfaces_a_clear_error(no_leaked_processes: None) -> None:
    with Cluster.from_name("local", n_workers=1, worker_options={"no_such_option": 1},
                           max_failures=3, name="t-crash") as cluster:
        with pytest.raises(CrashLoopError, match="3 consecutive worker failures") as info:
            cluster.wait_for_workers(1, timeout=120)
        assert "cluster.retry()" in str(info.value)
        assert cluster.error is info.value
        logs = cluster.get_logs()
        assert "no_such_option" in logs["t-crash-0"]  # the real cause is in the worker's log
        assert "consecutive worker failures" in logs["Cluster"]
        assert not cluster.handles  # nothing is retried while the limit holds


def test_remote_scheduler_with_tls(no_leaked_processes: None, agents_of: Any) -> None:
    with Cluster.from_name("local", n_workers=1, scheduler="remote", name="t-remote") as cluster, \
            Client(cluster) as client:
        assert cluster.scheduler is None  # not in this process
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        assert client.submit(lambda: 41 + 1).result() == 42
        assert "Scheduler at:" in cluster.get_logs()["Scheduler"]
        assert len(agents_of("t-remote")[0].children()) == 2  # scheduler + worker


def test_worker_over_memory_limit_is_killed_and_replaced(no_leaked_processes: None, wait_until: Any) -> None:
    def hog() -> int:
        block = bytearray(400 * 2**20)  # far above the limit
        import time

        time.sleep(30)
        return len(block)

    with Cluster.from_name("local", n_workers=1, memory_limit="250MiB", name="t-mem") as cluster, \
            Client(cluster) as client:
        cluster.wait_for_workers(1, timeout=60)
        client.submit(hog, pure=False)
        wait_until(lambda: "memory limit exceeded" in cluster.get_logs(scheduler=False,
                                                                        workers=False)["Cluster"],
                   90, "the agent to kill the worker")


def test_failed_start_leaves_nothing(no_leaked_processes: None, wait_until: Any, agents_of: Any) -> None:
    with pytest.raises(TypeError, match="bogus"):
        Cluster.from_name("local", n_workers=1, scheduler_options={"bogus": 1}, name="t-fail")
    wait_until(lambda: not agents_of("t-fail"), 30, "the agent to exit")


def test_async_use(wait_until: Any, agents_of: Any) -> None:
    import asyncio

    async def main() -> int:
        async with Cluster.from_name("local", n_workers=1, asynchronous=True, name="t-async") as c:
            await c.wait_for_workers(1, timeout=60)
            async with Client(c, asynchronous=True) as client:
                return int(await client.submit(lambda: 7))

    assert asyncio.run(main()) == 7
    wait_until(lambda: not agents_of("t-async"), 30, "the agent to exit")


SCRIPT = textwrap.dedent("""
    import sys
    from dask_deploy import Cluster
    cluster = Cluster.from_name("local", n_workers=2, name=sys.argv[1])
    cluster.wait_for_workers(2, timeout=60)
    print("ready", flush=True)
    import time
    time.sleep(120)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_nothing_survives_ctrl_c_or_a_killed_client(sig: int, wait_until: Any, agents_of: Any) -> None:
    name = f"t-sig{int(sig)}"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, name], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        workers = [c.pid for a in agents_of(name) for c in a.children()]
        assert len(workers) == 2
        proc.send_signal(sig)
        proc.wait(60)
        wait_until(lambda: not agents_of(name), 30, "the agent to exit")
        import psutil

        wait_until(lambda: not [p for p in workers if psutil.pid_exists(p)
                                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
                   30, "the workers to exit")
    finally:
        proc.kill()
        proc.wait()


def test_adapt_scales_up_under_load_and_back_down(no_leaked_processes: None, wait_until: Any) -> None:
    import time

    with Cluster.from_name("local", n_workers=0, threads_per_worker=1, name="t-adapt") as cluster, \
            Client(cluster) as client:
        adaptive = cluster.adapt(minimum=1, maximum=3, interval="200ms", wait_count=2)
        assert type(adaptive).__module__ == "dask_deploy._adaptive"
        cluster.wait_for_workers(1, timeout=60)
        futures = client.map(time.sleep, [0.5] * 40, pure=False)
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 3, 120, "scale up to 3")
        client.gather(futures)
        del futures
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 120, "scale down to 1")
        wait_until(lambda: len(cluster.handles) == 1, 60, "stopped units to be forgotten")


def test_detached_agent_outlives_clients_that_hang_up_abruptly(state_dir: str, wait_until: Any) -> None:
    """A client of a detached agent may vanish at any moment (a dropped SSH session)."""
    import socket
    import struct

    sock = os.path.join(state_dir, "agent.sock")
    agent = subprocess.Popen([sys.executable, "-m", "dask_deploy._agent", "--cluster", "hangup",
                              "--listen", sock], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(sock), 60, "the agent's socket")
        for _ in range(3):  # connect and reset at once, before reading the agent's greeting
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        with socket.socket(socket.AF_UNIX) as s:  # and it still answers the next client
            s.connect(sock)
            s.sendall(b'{"op": "ps"}\n')
            got = b""
            while b'"ps"' not in got:
                chunk = s.recv(65536)
                assert chunk, f"the agent hung up (exit code {agent.poll()})"
                got += chunk
        assert agent.poll() is None
    finally:
        agent.kill()
        agent.wait()


def test_a_client_that_never_reads_does_not_stall_a_detached_agent(state_dir: str, wait_until: Any,
                                                                    tmp_path: Any) -> None:
    """Writes to socket clients never block: a stalled client's unread events wait in a
    bounded buffer, and it is dropped when that overflows; the agent still starts, reaps
    and reports workers to another client."""
    import json
    import socket
    import threading

    sock = os.path.join(state_dir, "agent.sock")
    agent = subprocess.Popen([sys.executable, "-m", "dask_deploy._agent", "--cluster", "t-stall",
                              "--listen", sock], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    stalled = socket.socket(socket.AF_UNIX)
    try:
        wait_until(lambda: os.path.exists(sock), 60, "the agent's socket")
        stalled.connect(sock)
        stalled.settimeout(30)

        def flood() -> None:  # ~3 MB of replies it never reads: far over socket buffer + limit
            with contextlib.suppress(OSError):  # dropped: EPIPE / reset
                stalled.sendall(b'{"op": "ps"}\n' * 60000)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        with socket.socket(socket.AF_UNIX) as other:
            other.connect(sock)
            other.settimeout(60)
            for i in range(3):  # workers that start, and exit (stopped) while it stalls
                start = {"op": "start", "name": f"t-stall-{i}", "role": "worker", "env": {},
                         "kwargs": {"scheduler_ip": "tcp://127.0.0.1:9"},
                         "log": str(tmp_path / f"{i}.log")}
                other.sendall(f"{json.dumps(start)}\n".encode())
            got = b""
            while got.count(b'"op": "started"') < 3:
                chunk = other.recv(65536)
                assert chunk, f"the agent hung up (exit code {agent.poll()})"
                got += chunk
            other.sendall(b'{"op": "stop", "names": ["t-stall-0", "t-stall-1", "t-stall-2"], '
                          b'"grace": 0}\n')
            while got.count(b'"op": "exit"') < 3:  # reaped, and told to this client
                chunk = other.recv(65536)
                assert chunk, f"the agent hung up (exit code {agent.poll()})"
                got += chunk
        flooder.join(60)
        assert not flooder.is_alive(), "the agent stopped reading the stalled client"
        # The stalled client was dropped: what it finally reads ends (EOF or a reset).
        total = 0
        try:
            while chunk := stalled.recv(1 << 20):
                total += len(chunk)
        except ConnectionError:
            pass
        except TimeoutError:
            pytest.fail("the stalled client was never dropped")
        assert total < 60000 * len(b'{"op": "ps", "children": {}}\n')  # not all the replies
        assert agent.poll() is None
    finally:
        stalled.close()
        agent.kill()
        agent.wait()


def test_agent_survives_workers_stopped_as_soon_as_they_are_forked(tmp_path: Any) -> None:
    """A SIGTERM that reaches a worker before it has its own handlers is not the agent's."""
    import json

    agent = subprocess.Popen([sys.executable, "-m", "dask_deploy._agent", "--cluster", "t-race"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert agent.stdin is not None and agent.stdout is not None
    try:
        assert b'"ready"' in agent.stdout.readline()
        for i in range(30):  # start and stop in one read: the stop lands right after the fork
            start = {"op": "start", "name": f"t-race-{i}", "role": "worker", "env": {},
                     "kwargs": {"scheduler_ip": "tcp://127.0.0.1:9"}, "log": str(tmp_path / f"{i}.log")}
            stop = {"op": "stop", "names": [f"t-race-{i}"], "grace": 0}
            agent.stdin.write(f"{json.dumps(start)}\n{json.dumps(stop)}\n".encode())
            agent.stdin.flush()
            time.sleep(0.05)  # one pair per read of the agent
        agent.stdin.write(b'{"op": "ps"}\n')
        agent.stdin.flush()
        lines = iter(agent.stdout.readline, b"")
        assert any(b'"op": "ps"' in line for line in lines), f"the agent ended (code {agent.wait()})"
    finally:
        agent.kill()
        agent.wait()


def test_a_stopped_adaptive_no_longer_scales(no_leaked_processes: None) -> None:
    with Cluster.from_name("local", n_workers=0, name="t-adstop") as cluster:
        adaptive = cluster.adapt(minimum=0, maximum=4)
        adaptive.stop()
        cluster.scale(1)
        # An adapt step that was in flight when stop() came finishes now: the user's scale wins.
        cluster.sync(adaptive.scale_up, 3)
        cluster.sync(adaptive.scale_down, ["t-adstop-0"])
        assert cluster.plan == {"t-adstop-0"}


def test_a_scale_down_in_flight_at_stop_keeps_the_users_plan(no_leaked_processes: None) -> None:
    """stop() and scale(n) while Adaptive waits for the scheduler to retire workers: when
    the retirement returns, the units are not dropped (the user's plan wins)."""
    import asyncio

    with Cluster.from_name("local", n_workers=2, name="t-adret") as cluster:
        cluster.wait_for_workers(2, timeout=60)
        adaptive = cluster.adapt(minimum=0, maximum=4)
        retiring = asyncio.Event()
        release = asyncio.Event()

        class SlowScheduler:
            async def retire_workers(self, **kwargs: Any) -> None:
                retiring.set()
                await release.wait()

        async def main() -> None:
            comm = cluster.scheduler_comm
            cluster.scheduler_comm = SlowScheduler()  # what Adaptive retires through, held
            try:
                step = asyncio.ensure_future(adaptive.scale_down(["t-adret-0"]))
                await retiring.wait()
                adaptive.stop()
                cluster.scale(4)
                release.set()
                await step
            finally:
                cluster.scheduler_comm = comm

        cluster.sync(main)
        assert len(cluster.plan) == 4 and "t-adret-0" in cluster.plan
