"""Hostile input: names used as paths, secrets in records, planted log and state folders."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dask_deploy import BackendInfo, Cluster, DeployError, SpecError, attach, register_backend
from dask_deploy._local import LocalBackend, LocalOptions
from dask_deploy._private import open_private, private_dir
from dask_deploy._specs import ClusterSpec

CLI = [sys.executable, "-m", "dask_deploy._cli"]
OTHER_USER = "dask-ssh-test"  # a second, unprivileged account on the test machines


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def _one_line_error(out: subprocess.CompletedProcess[str], option: str) -> str:
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert option in last, out.stderr
    return last


# -- names as paths ---------------------------------------------------------------------


def _plant_record(path: Path, marker: Path) -> None:
    """A record that would run ``python`` (a script touching ``marker``) if it were loaded."""
    script = path.parent / "evil-python"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    spec = {"backend": "local", "name": "x", "worker": {}, "scheduler": {}, "n_workers": 0,
            "tls": None, "shutdown_on_close": False,
            "backend_options": {"python": str(script), "log_directory": None, "stop_grace": 1}}
    path.write_text(json.dumps({"spec": spec, "scheduler_address": "tcp://127.0.0.1:1",
                                "handles": {}, "owner_pid": None}))


@pytest.mark.parametrize("name", ["../x", "../../x", "/tmp/x", "x/../../y", "", ".", "X", "a b",
                                  "x.json", "-x", "x" * 49])
def test_attach_refuses_a_name_that_is_not_a_cluster_name(name: str, state_dir: str,
                                                           tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _plant_record(Path(state_dir) / "x.json", marker)  # one level above clusters/
    with pytest.raises(SpecError) as info:
        attach(name)
    assert info.value.option == "name" and "\n" not in str(info.value)
    assert not marker.exists()


def test_cli_refuses_traversal_in_every_command_that_takes_a_name(state_dir: str,
                                                                   tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _plant_record(Path(state_dir) / "x.json", marker)
    for args in (["logs", "../x"], ["scale", "../x", "1"], ["down", "../x"],
                 ["dashboard", "../x"], ["adapt", "../x"]):
        assert "invalid name='../x'" in _one_line_error(_cli(*args), "name")
    assert not marker.exists()


def test_from_name_refuses_a_traversing_name_before_reading_anything(state_dir: str,
                                                                      tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _plant_record(Path(state_dir) / "x.json", marker)
    with pytest.raises(SpecError, match="invalid name"):
        Cluster.from_name("local", name="../x")
    assert not marker.exists()


def test_a_record_that_is_a_symlink_or_misnamed_is_never_loaded(state_dir: str,
                                                                tmp_path: Path) -> None:
    from dask_deploy._state import list_clusters, load
    from dask_deploy._state import state_dir as make_state_dir

    make_state_dir()
    marker = tmp_path / "ran"
    outside = tmp_path / "elsewhere.json"
    _plant_record(outside, marker)
    (Path(state_dir) / "clusters" / "evil.json").symlink_to(outside)
    with pytest.raises(DeployError, match="is a symlink"):
        load("evil")
    # A record under another cluster's file name (spec name "x", file "other"): ignored.
    _plant_record(Path(state_dir) / "clusters" / "other.json", marker)
    assert load("other") is None
    assert list_clusters() == []
    assert not marker.exists()


# -- secrets in records -----------------------------------------------------------------


@dataclass(frozen=True)
class _SecretLocalOptions(LocalOptions):
    token: str = field(default="", metadata={"secret": True})
    credentials: str = field(default="", metadata={"persist": lambda v: "<vault:creds>"})


def test_secret_options_never_reach_the_record_and_it_is_private(state_dir: str) -> None:
    register_backend(BackendInfo("t-secret", "local with a secret option", factory=LocalBackend,
                                 options=_SecretLocalOptions,
                                 capabilities=frozenset({"scale", "remote_scheduler"})))
    with Cluster.from_name("t-secret", n_workers=1, name="t-secret", token="hunter2",
                           credentials="s3cr3t-key") as cluster:
        assert cluster.spec.backend_options.token == "hunter2"  # used while it runs
        path = Path(state_dir) / "clusters" / "t-secret.json"
        text = path.read_text()
        assert "hunter2" not in text and "s3cr3t-key" not in text and "<vault:creds>" in text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for folder in (Path(state_dir), Path(state_dir) / "clusters"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        logs = Path(cluster.backend.logs)
        assert stat.S_IMODE(logs.stat().st_mode) == 0o700 and not str(logs).startswith("/tmp/dask-deploy-")
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in logs.glob("*.log"))
        from dask_deploy._state import load

        record = load("t-secret")
        assert record is not None and record.spec.backend_options.token == ""  # back at its default


# -- planted folders --------------------------------------------------------------------


def test_private_dir_refuses_a_symlink_and_an_open_folder(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(SpecError, match="symlink") as info:
        private_dir(str(tmp_path / "link"))
    assert info.value.option == "log_directory"
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(SpecError, match="writable by other users"):
        private_dir(str(tmp_path / "open"))
    (tmp_path / "readable").mkdir()
    (tmp_path / "readable").chmod(0o755)
    assert stat.S_IMODE(os.stat(private_dir(str(tmp_path / "readable"))).st_mode) == 0o700
    (tmp_path / "file").write_text("")
    with pytest.raises(SpecError, match="not a directory"):
        private_dir(str(tmp_path / "file"))


def test_open_private_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "worker.log").symlink_to(victim)
    with pytest.raises(SpecError, match="symlink"):
        open_private(str(tmp_path / "worker.log"))
    os.link(victim, tmp_path / "hard.log")
    with pytest.raises(SpecError, match="hard links"):
        open_private(str(tmp_path / "hard.log"))
    assert victim.read_text() == "precious\n"
    fd = open_private(str(tmp_path / "fine.log"))
    try:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600 and not os.get_inheritable(fd)
    finally:
        os.close(fd)


def _as_other_user(*argv: str) -> None:
    subprocess.run(["runuser", "-u", OTHER_USER, "--", *argv], check=True, timeout=30)


@pytest.fixture
def other_user() -> str:
    """Planting needs a second account, and root to act as it."""
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        reason = f"no user {OTHER_USER!r} to plant folders as"
    else:
        reason = "" if os.getuid() == 0 else "only root can act as a second user"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI must run the planting test)")
        pytest.skip(reason)
    return OTHER_USER


def test_folders_planted_by_another_user_are_refused_and_the_victim_is_untouched(
        other_user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    uid = os.getuid()
    # A shared folder the user points log_directory at (sticky, like /tmp: anyone may add
    # entries), and the old predictable default /tmp/dask-deploy-<uid> when it is free.
    shared = Path(tempfile.mkdtemp(dir="/tmp", prefix="dds-shared-"))
    shared.chmod(0o1777)
    old_default = Path(f"/tmp/dask-deploy-{uid}")
    planted = [shared]
    if not old_default.exists():
        _as_other_user("mkdir", "-m", "777", str(old_default))
        planted.append(old_default)
    for base in planted:
        # The attacker's folder for the cluster, with a log symlinked to the victim file,
        # and a cluster name that is just a symlink to the victim's folder.
        _as_other_user("mkdir", "-m", "777", str(base / "t-plant"))
        _as_other_user("ln", "-s", str(victim), str(base / "t-plant" / "agent.log"))
        _as_other_user("ln", "-s", str(victim), str(base / "t-plant" / "t-plant-scheduler.log"))
        _as_other_user("ln", "-s", str(tmp_path), str(base / "t-link"))
    try:
        # The default no longer uses the shared /tmp name: the cluster runs, in a private folder.
        monkeypatch.setenv("TMPDIR", "/tmp")
        with Cluster.from_name("local", n_workers=1, name="t-plant") as cluster:
            cluster.wait_for_workers(1, timeout=60)
            logs = Path(cluster.backend.logs)
            assert not str(logs).startswith("/tmp/dask-deploy-")
            st = os.lstat(logs)
            assert st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700
        # Pointed at the planted folders, it refuses before starting anything.
        cases = [(shared, "t-plant", "belongs to uid"), (shared, "t-link", "symlink")]
        if old_default in planted:
            cases += [(old_default, "t-plant", "belongs to uid"),
                      (old_default, "t-fresh", "parent folder")]
        for base, name, why in cases:
            with pytest.raises(SpecError, match=why) as info:
                Cluster.from_name("local", n_workers=1, name=name, log_directory=str(base))
            assert info.value.option == "log_directory" and "\n" not in str(info.value)
        # A planted $XDG_RUNTIME_DIR is not the user's: the state folder is used instead.
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared / "t-plant"))
        spec = ClusterSpec(backend="local", name="t-xdg")
        assert LocalBackend(spec).logs.startswith(os.environ["DASK_DEPLOY_STATE_DIR"])
    finally:
        subprocess.run(["rm", "-rf", *map(str, planted)], check=False)
    assert victim.read_text() == "precious\n"
