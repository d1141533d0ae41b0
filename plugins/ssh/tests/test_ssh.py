"""The ssh backend against a real OpenSSH server, logged in as a non-root user.

The "remote host" is this machine reached over SSH, so the tests can look at the test
user's processes directly (``ps -u``) to check what runs there, independently of the code
under test.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from dask_deploy import BackendError, Cluster, ClusterSpec, SpecError
from dask_deploy_conformance import wait_for as wait_until
from dask_deploy_ssh import SSHOptions
from distributed import Client

pytestmark = pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning")

TIMEOUT = 120  # generous: other test runs share these 2 cores


def new_name() -> str:
    return f"t-{os.urandom(4).hex()}"


def procs(harness: Any, name: str) -> list[tuple[int, int, str]]:
    """The test user's live processes of cluster ``name`` (agent and its forked children)."""
    return harness.user_processes(needle=f"--cluster {name} ")


def n_workers(cluster: Any) -> int:
    return len(cluster.scheduler_info["workers"])


# -- options -----------------------------------------------------------------------------


def test_options_are_validated_and_secrets_hidden() -> None:
    with pytest.raises(SpecError, match="hosts"):
        SSHOptions(hosts="node1")  # a string is not a list of hosts
    with pytest.raises(SpecError, match="hosts"):
        SSHOptions(hosts=[])
    with pytest.raises(SpecError, match="one per entry of hosts"):
        SSHOptions(hosts=["a", "b"], connect_options=[{}])
    with pytest.raises(SpecError, match="remote_python") as err:
        SSHOptions(hosts=["a"], remote_python=3)
    opts = SSHOptions(hosts=["a", "b"], connect_options={"password": "hunter2", "port": 2222},
                      remote_python=["/p1", "/p2"])
    assert opts.connect_options[1]["port"] == 2222
    assert opts.remote_python == ("/p1", "/p2")
    assert "hunter2" not in repr(opts) and "2222" in repr(opts)
    with pytest.raises(SpecError) as err:
        SSHOptions(hosts=["a", "b"], connect_options=[{"password": "hunter2"}])
    assert "hunter2" not in str(err.value)
    spec = ClusterSpec(backend="ssh", name="x", backend_options=opts)
    assert "hunter2" not in repr(spec)  # what ends up in logs and tracebacks
    with pytest.raises(SpecError, match="not an option of backend 'ssh'"):
        Cluster.from_name("ssh", hosts=["a"], no_such_option=1)


def test_hosts_have_sshclusters_meaning() -> None:
    from dask_deploy_ssh._options import default_n_workers

    three = SSHOptions(hosts=["a", "b", "c"])
    assert three.remote_python == (sys.executable,) * 3  # SSHCluster's default
    assert three.worker_hosts(remote_scheduler=True) == (1, 2)  # the first runs the scheduler
    assert three.worker_hosts(remote_scheduler=False) == (0, 1, 2)
    assert SSHOptions(hosts=["a"]).worker_hosts(remote_scheduler=True) == (0,)
    assert default_n_workers({"hosts": ["a", "b", "c"], "scheduler": "remote"}) == 2
    assert default_n_workers({"hosts": ["a", "b", "c"]}) == 3
    assert default_n_workers({"hosts": ["a"], "scheduler": "remote"}) == 1


# -- the lifecycle on a real server ---------------------------------------------------------


def test_scale_up_and_down_after_start_with_client_work(ssh_options: dict[str, Any],
                                                        ssh_harness: Any) -> None:
    name = new_name()
    with Cluster.from_name("ssh", name=name, n_workers=1, **ssh_options) as cluster:
        assert cluster.scheduler_address.startswith("tls://")  # TLS by default
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        with Client(cluster) as client:
            assert client.submit(lambda x: x + 1, 41).result(timeout=TIMEOUT) == 42
            # The work really ran on the SSH host, as the user we logged in as.
            users = set(client.run(getpass.getuser).values())
            assert users == {ssh_harness.USER} != {getpass.getuser()}

            cluster.scale(3)
            cluster.wait_for_workers(3, timeout=TIMEOUT)
            assert client.submit(sum, range(10)).result(timeout=TIMEOUT) == 45
            # One agent on the host, every worker forked from it.
            running = wait_until(lambda: len(procs(ssh_harness, name)) == 4 and procs(ssh_harness, name),
                                 what="an agent and 3 workers on the host")
            agents = [p for p in running if p[1] not in {q[0] for q in running}]
            assert len(agents) == 1
            assert all(p[1] == agents[0][0] for p in running if p is not agents[0])

            cluster.scale(1)
            wait_until(lambda: n_workers(cluster) == 1, what="scale down to 1 worker")
            wait_until(lambda: len(procs(ssh_harness, name)) == 2, what="2 workers gone from the host")
    wait_until(lambda: not procs(ssh_harness, name), what="nothing left on the host after close")


def test_remote_scheduler_tls_and_dashboard_through_forward(ssh_options: dict[str, Any], sshd: Any,
                                                            ssh_harness: Any) -> None:
    name = new_name()
    with Cluster.from_name("ssh", name=name, scheduler="remote", n_workers=1,
                           **ssh_options) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        info = cluster.scheduler_handle
        assert info is not None and info.handle.data["host"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
        # The scheduler is a child of the host's agent, run by the test user.
        assert len(procs(ssh_harness, name)) == 3  # agent, scheduler, worker
        route = cluster.sync(cluster._call, "deploy_dashboard_route", scheduler=info)
        remote_port = int(info.handle.data["dashboard"].rpartition(":")[2])
        local_port = int(route.rpartition(":")[2])
        assert route.startswith("http://127.0.0.1:") and local_port != remote_port
        with urllib.request.urlopen(f"{route}/health", timeout=30) as r:
            assert r.read() == b"ok"
        with urllib.request.urlopen(f"{route}/info/main/workers.html", timeout=30) as r:
            assert cluster.name.encode() in r.read()  # served by *this* cluster's scheduler
        # The core's dashboard proxy forwards to that route.
        proxy = cluster.dashboard_link.partition("/status")[0]
        with urllib.request.urlopen(f"{proxy}/health", timeout=30) as r:
            assert r.read() == b"ok"
        with Client(cluster) as client:
            assert client.submit(lambda: 7).result(timeout=TIMEOUT) == 7
        logs = cluster.get_logs(cluster=False, workers=False)
        assert "Scheduler at:" in logs["Scheduler"]
    wait_until(lambda: not procs(ssh_harness, name), what="nothing left on the host after close")
    with pytest.raises(OSError):  # the forward was closed with the cluster
        urllib.request.urlopen(f"{route}/health", timeout=10)


def test_killed_remote_scheduler_is_lost_within_two_polls(ssh_options: dict[str, Any]) -> None:
    import time

    from dask_deploy import SchedulerLost

    name = new_name()
    poll = 0.5
    with Cluster.from_name("ssh", name=name, scheduler="remote", n_workers=0, poll_interval=poll,
                           **ssh_options) as cluster:
        placed = cluster.backend._agents[f"{name}-scheduler"]
        pid = placed.agent.running[f"{name}-scheduler"]
        ended = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # the test user's process; we run as root
        wait_until(lambda: isinstance(cluster.error, SchedulerLost), 2 * poll + 3,
                   "cluster.error to say the scheduler is lost")
        assert time.monotonic() - ended <= 2 * poll + 3
        assert f"{name}-scheduler" in str(cluster.error), cluster.error


def test_security_false_gives_plain_tcp(ssh_options: dict[str, Any]) -> None:
    with Cluster.from_name("ssh", name=new_name(), n_workers=1, security=False,
                           **ssh_options) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        cluster.wait_for_workers(1, timeout=TIMEOUT)


# -- host keys and start failures -----------------------------------------------------------


@pytest.mark.parametrize("known", ["empty", "other-key"])
def test_unknown_host_key_is_refused_with_a_fix(ssh_options: dict[str, Any], sshd: Any,
                                                tmp_path: Path, known: str, ssh_harness: Any) -> None:
    known_hosts = tmp_path / "known_hosts"
    if known == "empty":
        known_hosts.write_text("")
    else:  # a different key recorded for this host: someone may be in the middle
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                       check=True)
        kind, key = (tmp_path / "k.pub").read_text().split()[:2]
        known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {kind} {key}\n")
    opts = {**ssh_options, "connect_options": {**ssh_options["connect_options"],
                                               "known_hosts": str(known_hosts)}}
    name = new_name()
    with pytest.raises(BackendError) as err:
        Cluster.from_name("ssh", name=name, n_workers=1, **opts)
    message = str(err.value)
    assert f"ssh-keyscan -p {sshd.port} {sshd.host} >> ~/.ssh/known_hosts" in message
    assert "known_hosts" in message and "not trusted" in message
    assert not procs(ssh_harness, name)


def test_bad_remote_python_says_which(ssh_options: dict[str, Any]) -> None:
    opts = {**ssh_options, "remote_python": "/nonexistent/python3"}
    with pytest.raises(BackendError, match="remote_python='/nonexistent/python3'") as err:
        Cluster.from_name("ssh", name=new_name(), n_workers=1, start_timeout=60, **opts)
    assert "No such file" in str(err.value)


# -- nothing left behind ----------------------------------------------------------------------

_CLIENT = """
import json, sys, time
from dask_deploy import Cluster
cluster = Cluster.from_name("ssh", **json.loads(sys.argv[1]))
cluster.wait_for_workers(2, timeout=120)
print("ready", flush=True)
time.sleep(600)
"""


def test_workers_die_when_the_client_dies(ssh_options: dict[str, Any], ssh_harness: Any) -> None:
    name = new_name()
    options = {**ssh_options, "name": name, "n_workers": 2, "scheduler": "remote", "quiet": True}
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, json.dumps(options)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        assert len(procs(ssh_harness, name)) == 4  # agent, scheduler, 2 workers
        client.send_signal(signal.SIGKILL)  # no atexit, no close: only the TCP connection ends
        client.wait()
        wait_until(lambda: not procs(ssh_harness, name),
                   what="the host's agent to stop its workers after losing the client")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


_DETACH = """
import json, sys
from dask_deploy import Cluster
cluster = Cluster.from_name("ssh", **json.loads(sys.argv[1]))
cluster.wait_for_workers(1, timeout=120)
print(cluster.scheduler_address, flush=True)
cluster.close()  # detached: everything stays
"""

_ATTACH = """
import sys
import dask_deploy
from distributed import Client
cluster = dask_deploy.attach(sys.argv[1])
print(cluster.scheduler_address, flush=True)
cluster.wait_for_workers(1, timeout=120)
with Client(cluster) as client:
    assert client.submit(lambda x: x + 1, 41).result(timeout=120) == 42
cluster.scale(2)
cluster.wait_for_workers(2, timeout=120)
print(sorted(w["name"] for w in cluster.scheduler_info["workers"].values()), flush=True)
cluster.shutdown()
print("done", flush=True)
"""


def test_detach_then_attach_from_another_process(ssh_options: dict[str, Any], ssh_harness: Any,
                                                  tmp_path: Path) -> None:
    """shutdown_on_close=False: the agents listen on a socket and outlive the client; a
    second process re-attaches through an SSH tunnel to the scheduler (deploy_reattach),
    computes, scales, and shuts the cluster down for good."""
    name = new_name()
    env = {**os.environ, "DASK_DEPLOY_STATE_DIR": str(tmp_path / "state")}
    options = {**ssh_options, "name": name, "n_workers": 1, "scheduler": "remote",
               "shutdown_on_close": False, "quiet": True}
    try:
        first = subprocess.run([sys.executable, "-c", _DETACH, json.dumps(options)], env=env,
                               capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
        address = first.stdout.split()[0]
        assert address.startswith("tls://")
        assert len(procs(ssh_harness, name)) == 3  # agent, scheduler, worker: still there
        second = subprocess.run([sys.executable, "-c", _ATTACH, name], env=env,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        tunnel, workers, done = second.stdout.splitlines()[:3]
        assert tunnel.startswith("tls://127.0.0.1:") and tunnel != address  # the forward
        assert workers == str([f"{name}-0", f"{name}-1"]) and done == "done"
        wait_until(lambda: not procs(ssh_harness, name), what="nothing left after shutdown()")
    finally:
        for pid, _, _ in procs(ssh_harness, name):  # only if the test failed
            os.kill(pid, signal.SIGKILL)


def test_logs_of_a_killed_worker(ssh_options: dict[str, Any], ssh_harness: Any) -> None:
    name = new_name()
    with Cluster.from_name("ssh", name=name, n_workers=1, **ssh_options) as cluster:
        cluster.wait_for_workers(1, timeout=TIMEOUT)
        unit = next(iter(cluster.units))

        def worker_pids() -> list[int]:
            running = procs(ssh_harness, name)
            return [p[0] for p in running if p[1] in {q[0] for q in running}]

        (killed,) = worker_pids()
        os.kill(killed, signal.SIGKILL)
        # The reconciler sees the failure and starts the unit again (same name, new process).
        wait_until(lambda: n_workers(cluster) == 1 and len(worker_pids()) == 1
                   and killed not in worker_pids(), what="the killed worker to be replaced")
        assert "killed by signal 9" in cluster.get_logs(scheduler=False, workers=False)["Cluster"]
        # Its log (a file on the host) still holds the dead process's lines.
        text = cluster.sync(cluster.logs_of, unit)
        assert text.count("Start worker at:") == 2 and unit in text
        # And after scale-down, the stopped unit's log is still there to read.
        cluster.scale(0)
        wait_until(lambda: n_workers(cluster) == 0 and not worker_pids(), what="scale down to 0")
        text = cluster.get_logs(scheduler=False)[unit]
        assert text.count("Start worker at:") == 2


async def test_discover_and_remove_orphans(ssh_options: dict[str, Any], sshd: Any,
                                           ssh_harness: Any) -> None:
    """An agent with a worker, left behind on the host by a client that died, is found,
    judged dead and removed by gc.

    gc judges from the agent's own tags (``_gc.judge``): it is this user's (``--owner``),
    older than the grace period (``--created``), its client is gone (``--owner-pid`` of a
    process that ended, on this host) and it is not detached (no ``--listen``). A detached
    agent would be left alone: its client may come back. The agent is kept alive past the
    SSH hang-up by a stdin that stays open (a feeder that sends the start, then sleeps).
    """
    import asyncssh
    from dask_deploy import owner_tag
    from dask_deploy._plugins import backend_info

    orphan = new_name()
    gone = subprocess.Popen(["true"])  # the client that died
    gone.wait()
    start = json.dumps({"op": "start", "name": f"{orphan}-0", "role": "worker",
                        "kwargs": {"scheduler_ip": "tcp://127.0.0.1:9", "name": f"{orphan}-0"},
                        "env": {}, "log": f"/tmp/dask-deploy-orphan-{orphan}.log"})
    feeder = (f"{sshd.python} -c 'import sys, time; print(sys.argv[1], flush=True); "
              f"time.sleep(600)' {shlex.quote(start)} dask-deploy-feeder-{orphan}")
    agent = (f"exec {sshd.python} -m dask_deploy._agent --cluster {orphan} --grace 0 "
             f"--owner {owner_tag()} --created 1000000000 --owner-pid {gone.pid}")
    try:
        async with asyncssh.connect(sshd.host, **sshd.connect_options) as conn:
            await conn.run(f"setsid sh -c {shlex.quote(feeder + ' | ' + agent)} "
                           "</dev/null >/dev/null 2>&1 &", check=True)
        wait_until(lambda: len(procs(ssh_harness, orphan)) == 2, what="the orphan agent and its worker")

        # `dask-deploy gc --dry-run` lists it as dead, and why.
        from dask_deploy._gc import collect_garbage

        said: list[str] = []
        listed = await collect_garbage(["ssh"], {"ssh": ssh_options}, dry_run=True, echo=said.append,
                                       clusters=[orphan])
        assert [h.cluster for h in listed] == [orphan], said
        assert "not detached" in listed[0].why, said
        assert len(procs(ssh_harness, orphan)) == 2  # a dry run changes nothing

        # What `dask-deploy gc` has: a spec made of connection options only, and a fresh backend.
        options = SSHOptions(hosts=ssh_options["hosts"],
                             connect_options=ssh_options["connect_options"],
                             remote_python=ssh_options["remote_python"])
        spec = ClusterSpec(backend="ssh", name="gc", backend_options=options)
        backend: Any = backend_info("ssh").factory(spec)
        try:
            found = await backend.deploy_discover(cluster=spec, cluster_id=orphan)
            assert [h.cluster for h in found] == [orphan]
            assert sorted(found[0].data["pids"]) == sorted(p[0] for p in procs(ssh_harness, orphan))
            assert found[0].data["detached"] is False and found[0].data["owner_pid"] == gone.pid
            everything = await backend.deploy_discover(cluster=spec, cluster_id=None)
            assert orphan in {h.cluster for h in everything}
        finally:
            await backend.deploy_teardown(cluster=spec)
        # `dask-deploy gc --yes`
        dead = await collect_garbage(["ssh"], {"ssh": ssh_options}, echo=said.append,
                                     clusters=[orphan], confirm=lambda _: True)
        assert [v.cluster for v in dead] == [orphan], said
        assert any(line.startswith(f"removed ssh {orphan}") for line in said), said
        assert not procs(ssh_harness, orphan)
    finally:
        for pid, _, _ in procs(ssh_harness, orphan):  # only if the test failed
            os.kill(pid, signal.SIGKILL)
        for pid, _, _ in ssh_harness.user_processes(needle=f"dask-deploy-feeder-{orphan}"):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/tmp/dask-deploy-orphan-{orphan}.log")


def test_discover_sees_a_live_cluster_and_nothing_after_close(ssh_options: dict[str, Any]) -> None:
    name = new_name()
    cluster = Cluster.from_name("ssh", name=name, n_workers=2, **ssh_options)
    try:
        cluster.wait_for_workers(2, timeout=TIMEOUT)
        found = cluster.sync(cluster._call, "deploy_discover", cluster_id=name)
        assert len(found) == 1 and len(found[0].data["pids"]) == 3  # agent + 2 workers
    finally:
        cluster.close()
    options = SSHOptions(hosts=ssh_options["hosts"], connect_options=ssh_options["connect_options"],
                         remote_python=ssh_options["remote_python"])
    spec = ClusterSpec(backend="ssh", name="probe", backend_options=options)
    import asyncio

    from dask_deploy_ssh._backend import SSHBackend

    async def discover() -> list[Any]:
        backend = SSHBackend(spec)
        try:
            return list(await backend.deploy_discover(cluster=spec, cluster_id=name))
        finally:
            await backend.deploy_teardown(cluster=spec)

    assert asyncio.run(discover()) == []


def test_gpus_become_one_worker_per_gpu_on_the_host(ssh_options: dict[str, Any],
                                                    ssh_harness: Any) -> None:
    """``gpus=`` is expanded by the gpu extension; each worker gets its own device first."""
    pytest.importorskip("dask_deploy_gpu")
    name = new_name()
    with Cluster.from_name("ssh", name=name, n_workers=2, gpus=2, **ssh_options) as cluster:
        cluster.wait_for_workers(2, timeout=TIMEOUT)
        assert list(cluster.units) == [f"{name}-0"]  # one unit (one start) of two workers
        with Client(cluster) as client:
            seen = client.run(lambda dask_worker: (dask_worker.name,
                                                   os.environ.get("CUDA_VISIBLE_DEVICES")))
        by_name = dict(seen.values())
        assert sorted(by_name) == [f"{name}-0-0", f"{name}-0-1"]
        assert sorted(by_name.values()) == ["0,1", "1,0"]
        logs = cluster.get_logs(scheduler=False, cluster=False)[f"{name}-0"]
        assert f"==> {name}-0-0 <==" in logs and f"==> {name}-0-1 <==" in logs
