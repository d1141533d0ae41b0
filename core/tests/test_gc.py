"""``dask-deploy gc`` judges liveness from the backend side, asks first, and keeps to its owner.

Scenarios run the CLI as a subprocess against real local agents, and every ``gc`` here is
narrowed with ``--cluster`` to the clusters the test started: other test runs share the
machine, and their clusters are none of our business.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dask_deploy import Handle
from dask_deploy._agent import agent_command
from dask_deploy._gc import _verdicts, judge
from dask_deploy._owner import owner_tag, tags_from_argv, tags_to_argv

CLI = [sys.executable, "-m", "dask_deploy._cli"]


def new_name() -> str:
    return f"gc13-{uuid.uuid4().hex[:8]}"


def gc(name: str, *args: str, env: dict[str, str] | None = None,
       cmd: list[str] | None = None) -> str:
    out = subprocess.run([*(cmd or CLI), "gc", "-b", "local", "--cluster", name, *args],
                         capture_output=True, text=True, timeout=180,
                         env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"gc failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def dead_pid() -> int:
    """A pid that ran and is gone: the owner of a cluster whose client died."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def orphan_agent(name: str, state: str, created: float | None = None) -> subprocess.Popen[bytes]:
    """A detached agent whose client died before it started a scheduler."""
    cmd = agent_command(sys.executable, name, listen=os.path.join(state, f"{name}.sock"),
                        created=created, owner_pid=dead_pid())
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


# -- units ------------------------------------------------------------------------------


def test_tags_round_trip_through_a_command_line() -> None:
    argv = ["python", "-m", "x", *tags_to_argv("ann@h1", 1700000000.7, 42)]
    assert tags_from_argv(argv) == {"owner": "ann@h1", "created": 1700000000.0, "owner_pid": 42}
    assert tags_from_argv(["--owner"]) == {}
    assert owner_tag().endswith("@" + os.uname().nodename)


def h(**data: Any) -> Handle:
    return Handle("local", "c", "c-agent", "1", data)


@pytest.mark.parametrize(("data", "alive", "why"), [
    ({"created": -5}, True, "grace"),  # created 5 s before the test runs (see below)
    ({"created": 0, "owner_alive": True}, True, "still runs"),
    ({"created": 0, "owner_alive": False, "detached": False, "scheduler_running": True},
     False, "not detached"),
    ({"created": 0, "detached": True, "scheduler_running": True}, True, "answers as c"),
    ({"created": 0, "detached": True, "scheduler_running": False}, False, "no scheduler"),
    ({"created": 0}, True, "cannot tell"),
    ({"created": 0, "owner": f"me@{os.uname().nodename}", "owner_pid": dead_pid(),
      "detached": True, "scheduler_running": False}, False, "is gone"),
])
def test_judge(data: dict[str, Any], alive: bool, why: str) -> None:
    if data["created"] < 0:  # relative to now, not to when the tests were collected
        data = {**data, "created": time.time() + data["created"]}
    got = judge(h(**data), grace=60)
    assert got[0] is alive and why in got[1], got


def test_judge_asks_the_scheduler_for_its_cluster_name() -> None:
    handle = h(created=0, detached=True, scheduler="tcp://127.0.0.1:1")
    assert judge(handle, 60, scheduler_name="c")[0] is True
    assert judge(handle, 60, scheduler_name="other")[0] is False  # the port was reused
    assert judge(handle, 60, scheduler_name=None)[0] is False  # nothing answers
    assert judge(handle, 60, scheduler_name="")[1].startswith("left alone")  # cannot ask


async def test_other_users_and_untagged_resources_are_left_alone_by_default() -> None:
    # What a shared namespace or account shows: a dead cluster of another user.
    theirs = Handle("k8s", "theirs", "theirs-0", "1", {"owner": "colleague@elsewhere", "created": 0,
                                                       "detached": True, "scheduler_running": False})
    untagged = Handle("k8s", "old", "old-0", "2", {"created": 0, "scheduler_running": False})
    mine = Handle("k8s", "mine", "mine-0", "3", {"owner": owner_tag(), "created": 0,
                                                 "detached": True, "scheduler_running": False})
    verdicts = {v.cluster: v for v in await _verdicts("k8s", [theirs, untagged, mine], 60, False)}
    assert verdicts["theirs"].alive and "another user" in verdicts["theirs"].why
    assert verdicts["old"].alive and "owner unknown" in verdicts["old"].why
    assert not verdicts["mine"].alive
    wide = {v.cluster: v for v in await _verdicts("k8s", [theirs, untagged, mine], 60, True)}
    assert not wide["theirs"].alive and not wide["old"].alive


# -- scenarios on real local agents ------------------------------------------------------


def test_a_cluster_still_starting_is_left_alone_and_nothing_happens_without_yes(
        state_dir: str, agents_of: Any, wait_until: Any) -> None:
    name = new_name()
    agent = orphan_agent(name, state_dir)
    try:
        wait_until(lambda: os.path.exists(os.path.join(state_dir, f"{name}.sock")), 60,
                   "the agent to listen")
        # Within the grace period (the default, 60 s): it may still be starting.
        out = gc(name, "--yes")
        assert f"keeping local {name} agent" in out and "grace period" in out, out
        assert agent.poll() is None

        # Past the grace period it is dead (no client, no scheduler) - but without --yes
        # gc only says so.
        out = gc(name, env={"DASK_DEPLOY__GC_GRACE": "0"})
        assert f"would remove local {name} agent" in out and "no scheduler" in out, out
        assert "nothing removed" in out and "--yes" in out
        time.sleep(0.5)
        assert agent.poll() is None and agents_of(name)

        # A detached agent whose client died before it started a scheduler: removed.
        out = gc(name, "--yes", env={"DASK_DEPLOY__GC_GRACE": "0"})
        assert f"removed local {name}" in out, out
        assert agent.wait(30) is not None
        wait_until(lambda: not agents_of(name), 30, "the agent to be gone")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_a_live_cluster_recorded_in_another_state_directory_is_left_alone(
        tmp_path: Path, agents_of: Any, wait_until: Any) -> None:
    name = new_name()
    theirs = tempfile.mkdtemp(prefix="dds-", dir="/tmp")  # short: its agent's socket is there
    ours = tempfile.mkdtemp(prefix="dds-", dir="/tmp")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(f"backend: local\nworkers: 1\ndetach: true\noptions:\n  name: {name}\n"
                    "  threads_per_worker: 1\n")
    try:
        up = subprocess.run([*CLI, "up", "-f", str(spec)], capture_output=True, text=True,
                            timeout=180, env={**os.environ, "DASK_DEPLOY_STATE_DIR": theirs})
        assert up.returncode == 0, up.stderr
        out = gc(name, "--yes", "--grace", "0", env={"DASK_DEPLOY_STATE_DIR": ours})
        assert f"keeping local {name} agent" in out and f"answers as {name}" in out, out
        assert "removed" not in out.replace("0 removed", "")
        assert len(agents_of(name)) == 1
        down = subprocess.run([*CLI, "down", name], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "DASK_DEPLOY_STATE_DIR": theirs})
        assert down.returncode == 0, down.stderr
        wait_until(lambda: not agents_of(name), 30, "the cluster to stop")
    finally:
        for p in agents_of(name):  # only if the test failed
            p.kill()
        shutil.rmtree(theirs, ignore_errors=True)
        shutil.rmtree(ours, ignore_errors=True)


def test_a_sigkilled_clients_remote_scheduler_cluster_is_removed(agents_of: Any,
                                                                  wait_until: Any) -> None:
    name = new_name()
    script = textwrap.dedent(f"""
        import time
        from dask_deploy import Cluster
        cluster = Cluster.from_name("local", name={name!r}, scheduler="remote", n_workers=1,
                                    threads_per_worker=1)
        cluster.wait_for_workers(1, timeout=120)
        print("ready", flush=True)
        time.sleep(600)
    """)
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        lines = []
        for line in client.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        assert lines and lines[-1].strip() == "ready", "".join(lines)
        # While its client runs it is in use, whatever the grace period.
        out = gc(name, "--yes", "--grace", "0")
        assert f"keeping local {name} agent" in out and "still runs" in out, out
        assert len(agents_of(name)) == 1

        client.send_signal(signal.SIGKILL)
        client.wait()
        out = gc(name, "--yes", "--grace", "0")
        # Its agent sees its client go (end of input) and stops by itself; whatever is
        # still there when gc looks is judged dead and removed.
        assert f"keeping local {name}" not in out, out
        wait_until(lambda: not agents_of(name), 30, "the cluster to be gone")
        assert "0 removed" in gc(name, "--yes", "--grace", "0")
    finally:
        if client.poll() is None:
            client.kill()
        for p in agents_of(name):  # only if the test failed
            p.kill()


def test_gc_run_as_another_user_leaves_the_cluster_alone(state_dir: str, agents_of: Any,
                                                         wait_until: Any) -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        why = "needs root and runuser to act as the second user"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    from dask_deploy_testing.sshd import USER, ensure_remote_python

    python = ensure_remote_python()  # that user's interpreter with this core's source
    import pwd

    theirs = tempfile.mkdtemp(prefix="dds-", dir="/tmp")  # that user's own state directory
    os.chown(theirs, pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid)
    name = new_name()
    agent = orphan_agent(name, state_dir, created=time.time() - 3600)  # dead, and ours
    try:
        wait_until(lambda: os.path.exists(os.path.join(state_dir, f"{name}.sock")), 60,
                   "the agent to listen")
        for args in (["--yes"], ["--yes", "--all-users"]):
            out = gc(name, *args, "--grace", "0",
                     cmd=["runuser", "-u", USER, "--", python, "-m", "dask_deploy._cli"],
                     env={"DASK_DEPLOY_STATE_DIR": theirs, "HOME": theirs})
            assert name not in out, out
            assert "0 removed" in out
        time.sleep(0.5)
        assert agent.poll() is None
        # Its owner's gc removes it.
        assert f"removed local {name}" in gc(name, "--yes", "--grace", "0")
        assert agent.wait(30) is not None
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        shutil.rmtree(theirs, ignore_errors=True)


@pytest.mark.parametrize(("owner", "detached", "removed"), [
    ("killed", False, True), ("me", False, False), ("killed", True, False)])
async def test_the_record_of_a_killed_client_whose_backend_runs_nothing_is_removed(
        owner: str, detached: bool, removed: bool) -> None:
    # What the ssh backend's killed client leaves: its agent exits with the client's
    # connection, so the backend finds nothing, and only the record here is left.
    import socket

    from dask_deploy import ClusterSpec, _state
    from dask_deploy._gc import collect_garbage

    name = new_name()
    pid = dead_pid() if owner == "killed" else os.getpid()
    _state.save(_state.ClusterRecord(ClusterSpec(backend="local", name=name,
                                                 shutdown_on_close=not detached),
                                     "tcp://127.0.0.1:1", owner_host=socket.gethostname(),
                                     owner_pid=None if detached else pid, created=0.0))
    said: list[str] = []
    dead = await collect_garbage(["local"], clusters=[name], grace=0, echo=said.append,
                                 dry_run=True)
    assert [v.kind for v in dead] == (["record"] if removed else []), said
    assert _state.load(name) is not None  # a dry run removes nothing
    dead = await collect_garbage(["local"], clusters=[name], grace=0, echo=said.append)
    assert (_state.load(name) is None) is removed, said
    if removed:
        assert "is not detached" in dead[0].why and f"removed local {name}" in said[-1], said
    elif not detached:
        assert any(f"keeping local {name} record" in line and "still runs" in line
                   for line in said), said
