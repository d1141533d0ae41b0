"""A private, real OpenSSH server on a free loopback port, for the tests and the benchmark.

What it sets up (see shared/INFRA.md for why each piece is needed):

* ``sshd`` with its own host key and config, key-only logins, listening on 127.0.0.1 only;
* a **non-root** user to log in as (sshd refuses signals for root sessions, so a root
  login would hide the very leaks we test for);
* that user's Python: a venv made from ``/usr/bin/python3`` (root's pyenv is unreadable to
  other users) with core's locked dependencies, cached under /tmp by a hash of them, plus a
  fresh copy of core's sources (keyed by their hash) put on its path by a ``.pth`` file, so
  edits to core are always what runs remotely;
* a client key and a known_hosts file holding the server's key.

Everything is started by us and stopped by PID. Nothing dials beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .net import free_port

# This module runs from the workspace (the testing member is never published): it reads the
# ssh plugin's ci-setup.sh and core's sources from there.
WORKSPACE = Path(__file__).resolve().parents[3]
PLUGIN = WORKSPACE / "plugins" / "ssh"
CORE = WORKSPACE / "core"
USER = os.environ.get("DASK_DEPLOY_SSH_TEST_USER", "dask-ssh-test")
SYSTEM_PYTHON = "/usr/bin/python3"


class Unavailable(RuntimeError):
    """sshd (or what it needs) cannot be had here; the message says what is missing."""


def _sshd_binary() -> str | None:
    return shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def ensure_system() -> None:
    """Install openssh-server and create the test user if needed (runs ci-setup.sh as root)."""
    have_user = subprocess.run(["id", "-u", USER], capture_output=True).returncode == 0
    if _sshd_binary() and have_user and shutil.which("ssh-keygen"):
        os.makedirs("/run/sshd", exist_ok=True)
        return
    if os.geteuid() != 0:
        raise Unavailable(f"sshd or the user {USER} is missing; run plugins/ssh/ci-setup.sh as root")
    proc = subprocess.run(["bash", str(PLUGIN / "ci-setup.sh")], capture_output=True, text=True)
    if proc.returncode != 0 or not _sshd_binary():
        raise Unavailable(f"plugins/ssh/ci-setup.sh failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        raise Unavailable("uv is needed to build the test user's venv")
    return uv


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def ensure_remote_python() -> str:
    """The test user's interpreter: a cached venv of core's locked deps + core's current source."""
    reqs = subprocess.run(
        [_uv(), "export", "--package", "dask-deploy-core", "--no-hashes", "--no-dev",
         "--no-emit-workspace", "--frozen", "--no-header"],
        cwd=WORKSPACE, capture_output=True, text=True, check=True).stdout
    py_version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version)"],
                                capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256((reqs + py_version).encode()).hexdigest()[:16]
    base = Path(tempfile.gettempdir()) / f"dask-deploy-ssh-venv-{key}"
    venv = base / "venv"
    python = venv / "bin" / "python"
    with open(Path(tempfile.gettempdir()) / "dask-deploy-ssh-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other test runs may build the same venv right now
        if not (base / "ok").exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(mode=0o755)
            (base / "requirements.txt").write_text(reqs)
            subprocess.run([_uv(), "venv", "-q", "--python", SYSTEM_PYTHON, str(venv)],
                           check=True, capture_output=True)
            proc = subprocess.run([_uv(), "pip", "install", "-q", "--python", str(python),
                                   "-r", str(base / "requirements.txt")],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise Unavailable(f"cannot build the test user's venv: {proc.stderr[-3000:]}")
            (base / "ok").write_text("")
        src = base / f"src-{_tree_hash(CORE / 'src')}"
        if not src.exists():
            tmp = base / f".src-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(CORE / "src", tmp, ignore=shutil.ignore_patterns("__pycache__"))
            tmp.rename(src)
        site = next(venv.glob("lib/python*/site-packages"))
        (site / "_dask_deploy_core_src.pth").write_text(f"{src}\n")
        _write_core_metadata(site)
        for path in [base, *base.rglob("*")]:  # readable (not writable) by the test user
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o444))
    return str(python)


def _write_core_metadata(site: Path) -> None:
    """Core's entry points (the ``local`` backend, ...) for the sources on the ``.pth`` path:
    backends are found through entry points only, and a path entry has none."""
    import tomllib

    project = tomllib.loads((CORE / "pyproject.toml").read_text())["project"]
    dist = site / "dask_deploy_core-0.0.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dask-deploy-core\nVersion: 0.0.0\n")
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in entries.items()]
    scripts = project.get("scripts", {})
    if scripts:
        lines.append("[console_scripts]")
        lines += [f"{name} = {value}" for name, value in scripts.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


@dataclass
class SSHServer:
    """A running private sshd and how to log in to it."""

    host: str
    port: int
    user: str
    python: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    connect_options: dict[str, Any] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return (self.workdir / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def user_processes(user: str = USER, needle: str = "dask_deploy._agent") -> list[tuple[int, int, str]]:
    """(pid, ppid, command line) of the user's live processes whose command line has ``needle``."""
    out = subprocess.run(["ps", "-ww", "-u", user, "-o", "pid=,ppid=,stat=,args="], capture_output=True,
                         text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and not parts[2].startswith("Z") and needle in parts[3]:
            found.append((int(parts[0]), int(parts[1]), parts[3]))
    return found


def start_sshd(workdir: Path, host: str = "127.0.0.1", netns: str | None = None,
               python: str | None = None, keys: Path | None = None) -> SSHServer:
    """Start sshd on ``host`` (inside network namespace ``netns`` if given) on a free port.

    ``keys``: a folder holding ``client_key``/``authorized_keys`` to share between servers.
    """
    ensure_system()
    python = python or ensure_remote_python()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # sshd reads authorized_keys as the test user
    keys = keys or workdir
    if not (keys / "client_key").exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dask-deploy-test",
                        "-f", str(keys / "client_key")], check=True)
        shutil.copy(keys / "client_key.pub", keys / "authorized_keys")
        (keys / "authorized_keys").chmod(0o644)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host_key")],
                   check=True)
    wrap = ["ip", "netns", "exec", netns] if netns else []
    port = free_port(host) if not netns else 22
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {host}\nHostKey {workdir / 'host_key'}\n"
        f"PidFile {workdir / 'sshd.pid'}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nMaxStartups 100:30:200\nMaxSessions 100\nPermitRootLogin no\n"
        f"AllowUsers {USER}\nAllowTcpForwarding yes\nLogLevel VERBOSE\n")
    proc = subprocess.Popen([*wrap, _sshd_binary() or "sshd", "-D", "-f", str(config),
                             "-E", str(workdir / "sshd.log")])
    server = SSHServer(host, port, USER, python, workdir, proc)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise Unavailable(f"sshd exited with {proc.returncode}: {server.log[-2000:]}")
        probe = [*wrap, sys.executable, "-c",
                 f"import socket; socket.create_connection(({host!r}, {port}), 1).close()"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            break
        if time.monotonic() > deadline:
            server.stop()
            raise Unavailable(f"sshd did not listen on {host}:{port} within 30 s: {server.log[-2000:]}")
        time.sleep(0.05)
    key_type, key_b64 = (workdir / "host_key.pub").read_text().split()[:2]
    where = f"[{host}]:{port}" if port != 22 else host
    (workdir / "known_hosts").write_text(f"{where} {key_type} {key_b64}\n")
    server.connect_options = {
        "username": USER, "port": port, "client_keys": [str(keys / "client_key")],
        "known_hosts": str(workdir / "known_hosts"), "agent_path": None,
    }
    return server


@contextlib.contextmanager
def sshd(workdir: Path | None = None) -> Any:
    """``with sshd() as server:`` a private sshd for the duration of the block."""
    tmp = Path(tempfile.mkdtemp(prefix="dask-deploy-sshd-")) if workdir is None else workdir
    server = start_sshd(tmp)
    try:
        yield server
    finally:
        server.stop()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Several hosts: network namespaces, each with its own sshd, on a private bridge
# --------------------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class Hosts:
    """Namespaces ``netns[i]`` with sshd ``servers[i]`` at ``addresses[i]``, on one bridge."""

    prefix: str
    bridge_address: str
    addresses: list[str]
    netns: list[str]
    servers: list[SSHServer]

    def link(self, i: int, up: bool) -> None:
        """Plug host ``i``'s cable in or out (its veth end on the bridge)."""
        _ip("link", "set", f"{self.prefix}v{i}", "up" if up else "down")


@contextlib.contextmanager
def namespace_hosts(n: int, workdir: Path, python: str | None = None) -> Any:
    """``n`` hosts as network namespaces on a bridge of our own, torn down afterwards.

    Addresses are 10.231.S.1i (S from our pid); a blackhole route for 10.231.0.0/16 makes
    sure nothing of it can leave the machine. Only names starting with our prefix are
    created or deleted.
    """
    ensure_system()
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise Unavailable("network namespaces need root and iproute2")
    python = python or ensure_remote_python()
    tag = os.getpid() % 100000
    prefix, subnet = f"dds{tag}", f"10.231.{tag % 250 + 1}"
    bridge = f"{prefix}br"
    added_route = _ip("route", "add", "unreachable", "10.231.0.0/16", check=False).returncode == 0
    created: list[str] = []
    servers: list[SSHServer] = []
    keys = workdir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    keys.chmod(0o755)
    try:
        try:
            _ip("link", "add", bridge, "type", "bridge")
            _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
            for i in range(1, n + 1):
                ns, veth, peer = f"{prefix}h{i}", f"{prefix}v{i}", f"{prefix}p{i}"
                addr = f"{subnet}.1{i}"
                _ip("netns", "add", ns)
                created.append(ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
                _ip("link", "set", peer, "netns", ns)
                _ip("link", "set", veth, "master", bridge, "up")
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", peer)
                _ip("-n", ns, "link", "set", peer, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                servers.append(start_sshd(workdir / ns, host=addr, netns=ns, python=python,
                                          keys=keys))
        except subprocess.CalledProcessError as e:
            raise Unavailable(f"cannot build network namespaces: {e.cmd}: {e.stderr}") from None
        yield Hosts(prefix, f"{subnet}.1", [s.host for s in servers], created, servers)
    finally:
        for server in servers:
            server.stop()
        for ns in created:
            _ip("netns", "del", ns, check=False)  # its veth pair goes with it
        _ip("link", "del", bridge, check=False)
        if added_route:
            _ip("route", "del", "unreachable", "10.231.0.0/16", check=False)
