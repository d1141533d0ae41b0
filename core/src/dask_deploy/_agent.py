"""A small supervisor that forks Dask workers (and schedulers) from a pre-imported template.

One agent runs per host (the local machine, or each SSH host). It imports ``distributed``
once, then forks a child per worker: a forked child is ready in tens of milliseconds instead
of the ~0.7 s a fresh interpreter needs, and shares the imported modules' memory. The agent
also takes the nanny's jobs: it reaps children, reports how they ended, and kills one that
goes over its memory limit. Children die with the agent (``PR_SET_PDEATHSIG``) and the agent
kills them all when its parent goes away (end of input), so nothing outlives the cluster.

Each child leads its own session and process group (``setsid`` right after the fork), and
every signal the agent sends a child goes to that whole group: stopping a worker also stops
the processes its tasks started (``subprocess.Popen`` in a task), and when a child ends on
its own, what is left of its group is killed before the child is reaped (so the group's id
cannot have been reused). A process that leaves the group itself (its own ``setsid``) is
beyond this; so is anything left when the agent is SIGKILLed (the children then die by
``PR_SET_PDEATHSIG``, their groups' other members do not).

A detached agent (``--listen``) started with ``--start-timeout`` exits, stopping what it
forked, when no scheduler child is up that many seconds after it became ready or after the
latest scheduler start request: a client that died while starting a cluster leaves nothing.

The protocol is JSON lines: requests on the agent's stdin, events on its stdout.

Requests: ``start`` {name, role: worker|nanny|scheduler, kwargs, env, log, tls}; ``stop`` {names, grace};
``ps``; ``shutdown``. Events: ``ready`` {pid}; ``started`` {name, pid}; ``exit`` {name, pid, code, reason};
``scheduler`` {name, address, dashboard}; ``ps`` {children: {name: pid}}; ``error`` {message}.

Run as ``python -m dask_deploy._agent --cluster NAME``; the cluster name in the command line
is how ``deploy_discover`` finds agents (and their forked children) after a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["AgentClient", "agent_command"]

_PR_SET_PDEATHSIG = 1
#: Scheduler metadata key under which a scheduler started by an agent names its cluster.
METADATA_KEY = "dask-deploy"


def agent_command(python: str, cluster: str, grace: float = 0.0, listen: str | None = None,
                  owner: str | None = None, created: float | None = None,
                  owner_pid: int | None = None, start_timeout: float | None = None) -> list[str]:
    """The command line that starts an agent for ``cluster`` with interpreter ``python``.

    With ``listen`` (a unix socket path) the agent is detached: it outlives its stdin,
    serves that socket to any later client, and stops when its scheduler child exits.
    With ``start_timeout`` as well, a detached agent also stops when no scheduler child is
    up ``start_timeout`` seconds after it is ready or after the latest scheduler start
    request (its client died before its cluster was up).
    The command line also carries the ownership tags (:mod:`dask_deploy._owner`): who
    started it (default: this process's ``user@host`` and pid) and when.
    """
    from ._owner import tags_to_argv

    cmd = [python, "-m", "dask_deploy._agent", "--cluster", cluster, "--grace", str(grace),
           *tags_to_argv(owner, created, owner_pid or os.getpid())]
    if start_timeout is not None:
        cmd += ["--start-timeout", repr(float(start_timeout))]
    return [*cmd, "--listen", listen] if listen else cmd


#: The agent's cluster and ownership tags; its forked schedulers publish them (see _serve).
_TAGS: dict[str, Any] = {}


# --------------------------------------------------------------------------------------
# The agent process
# --------------------------------------------------------------------------------------


class _Child:
    def __init__(self, name: str, pid: int, role: str, memory_limit: int | None,
                 scheduler_file: str | None) -> None:
        self.name, self.pid, self.role = name, pid, role
        self.memory_limit, self.scheduler_file = memory_limit, scheduler_file
        self.kill_at: float | None = None
        self.reason = ""


#: Signals whose agent handlers a newly forked child must never run.
_FORK_BLOCKED = {signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP}


def _signal_group(pid: int, sig: int, leader: bool = True) -> None:
    """Send ``sig`` to the process group that child ``pid`` leads (see :func:`_run_child`).

    Only for a child not yet reaped: while it is unreaped its pid, and so its group's id,
    cannot be reused. A child that has not yet called ``setsid`` (just forked) has no group
    yet: with ``leader`` it then gets the signal itself.
    """
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        if leader:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    except PermissionError:  # none of the group is ours to signal (it changed user)
        pass


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def _serve(role: str, kwargs: dict[str, Any], tls: dict[str, str] | None) -> None:
    from distributed import Nanny, Scheduler, Worker

    if tls:  # PEM text came over our stdin: it never touches a file or a command line
        from ._specs import TLS

        kwargs["security"] = TLS(tls["cert"], tls["key"]).security()
        if role == "scheduler":
            kwargs["protocol"] = "tls"
    loop = asyncio.get_running_loop()
    server: Scheduler | Worker | Nanny
    if role == "scheduler":
        server = Scheduler(**kwargs)
    elif role == "nanny":  # WorkerSpec.nanny: the nanny spawns and watches the worker
        server = Nanny(**kwargs)
    else:
        server = Worker(**kwargs)
    async with server:
        if isinstance(server, Scheduler) and _TAGS:  # so that anyone can ask it which cluster it is
            server.set_metadata(keys=[METADATA_KEY], value=dict(_TAGS))
        # SIGTERM means "leave cleanly": close (a worker first tells the scheduler).
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(server.close()))
        await server.finished()


def _run_child(role: str, kwargs: dict[str, Any], env: dict[str, str], log: str,
               tls: dict[str, str] | None) -> None:
    """In the forked child: detach from the agent's pipes, become a worker, never return."""
    code = 1
    try:
        # First, a session and process group of our own: everything this child starts (a
        # task's subprocesses) is in it, and the agent signals the whole group. Until this
        # runs the agent signals the child alone (its group does not exist yet).
        with contextlib.suppress(OSError):
            os.setsid()
        # The agent's handlers write to its wake-up pipe: a SIGTERM for this new worker must
        # not reach them (the agent would take it as its own and shut down). The signals
        # were blocked across the fork; they are delivered, if pending, once ours are set.
        for sig in _FORK_BLOCKED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_BLOCKED)
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the client's to handle
        from ._private import open_private

        fd = open_private(log)  # never through a planted symlink, never into another's file
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.environ.update(env)
        asyncio.run(_serve(role, kwargs, tls))
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class _Agent:
    def __init__(self, out: Callable[[dict[str, Any]], None], grace: float,
                 start_timeout: float | None = None) -> None:
        self.children: dict[int, _Child] = {}
        self.out = out
        self.grace = grace
        # What a client that connects later needs to rebuild its view (detached clusters).
        self.history: dict[str, dict[str, Any]] = {}
        self.scheduler_gone = False
        #: Seconds a scheduler may take to be up (None: no deadline), and when it is due:
        #: that long after :meth:`ready`, or after the latest scheduler start request.
        self.start_timeout = start_timeout
        self.scheduler_due: float | None = None

    def ready(self) -> None:
        """Start counting: a scheduler is due ``start_timeout`` seconds from now."""
        if self.start_timeout is not None:
            self.scheduler_due = time.monotonic() + self.start_timeout

    def overdue(self) -> bool:
        """True when no scheduler came up in time (see ``start_timeout``)."""
        return self.scheduler_due is not None and time.monotonic() > self.scheduler_due

    def handle(self, line: bytes) -> bool:
        """Carry out one request; False when it asks the agent to shut down."""
        try:
            msg = json.loads(line)
            op = msg["op"]
            if op == "start":
                self.start(msg)
            elif op == "stop":
                self.stop(msg["names"], float(msg.get("grace", 3.0)))
            elif op == "ps":
                self.out({"op": "ps", "children": {c.name: c.pid for c in self.children.values()}})
            elif op == "shutdown":
                return False
            else:
                self.out({"op": "error", "message": f"unknown op {op!r}"})
        except Exception as e:
            self.out({"op": "error", "message": f"{type(e).__name__}: {e}"})
        return True

    def replay(self) -> list[dict[str, Any]]:
        """Events that bring a newly connected client up to date."""
        events = [m for m in self.history.values() if m["op"] in ("exit", "scheduler")]
        events += [{"op": "started", "name": c.name, "pid": c.pid} for c in self.children.values()]
        return events

    def start(self, msg: dict[str, Any]) -> None:
        name, role, kwargs = msg["name"], msg.get("role", "worker"), dict(msg.get("kwargs", {}))
        if role == "scheduler":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(msg["log"] + ".json")
            kwargs["scheduler_file"] = msg["log"] + ".json"
        if role == "scheduler" and self.scheduler_due is not None and self.start_timeout is not None:
            self.scheduler_due = max(self.scheduler_due, time.monotonic() + self.start_timeout)
        limit = kwargs.get("memory_limit")
        signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)  # see _run_child
        try:
            pid = os.fork()
            if pid == 0:
                _run_child(role, kwargs, msg.get("env", {}), msg["log"], msg.get("tls"))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_BLOCKED)
        child = _Child(name, pid, role, limit if isinstance(limit, int) else None,
                       kwargs.get("scheduler_file"))
        self.children[pid] = child
        self.out({"op": "started", "name": name, "pid": pid})

    def stop(self, names: list[str], grace: float) -> None:
        deadline = time.monotonic() + grace
        for child in self.children.values():
            if child.name in names and child.kill_at is None:
                _signal_group(child.pid, signal.SIGTERM)
                child.kill_at = deadline

    def reap(self) -> None:
        while self.children:
            try:  # which child ended, leaving it unreaped (WNOWAIT)
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            if info.si_pid in self.children:
                # What its group still holds (a task's subprocesses) ends with it; unreaped,
                # its pid still names its group and no other.
                _signal_group(info.si_pid, signal.SIGKILL, leader=False)
            pid, status = os.waitpid(info.si_pid, 0)
            child = self.children.pop(pid, None)
            if child is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            reason = child.reason or (f"killed by signal {-code}" if code < 0 else
                                      f"exit code {code}" if code else "")
            msg = {"op": "exit", "name": child.name, "pid": pid, "code": code,
                   "reason": reason, "stopped": child.kill_at is not None}
            self.history[child.name] = msg
            if child.role == "scheduler":
                self.scheduler_gone = True
            self.out(msg)

    def tick(self) -> None:
        """Escalate overdue stops, enforce memory limits, announce schedulers."""
        now = time.monotonic()
        terminate = _terminate_fraction()
        for child in list(self.children.values()):
            if child.kill_at is not None and now >= child.kill_at:
                _signal_group(child.pid, signal.SIGKILL)
            elif child.memory_limit and terminate:
                rss = _rss(child.pid)
                if rss > terminate * child.memory_limit:
                    child.reason = (f"memory limit exceeded: {rss} bytes > {terminate:g} x "
                                    f"{child.memory_limit} (memory_limit)")
                    _signal_group(child.pid, signal.SIGKILL)
            if child.scheduler_file and os.path.exists(child.scheduler_file):
                with contextlib.suppress(ValueError, OSError):
                    with open(child.scheduler_file) as f:
                        ident = json.load(f)
                    dash = ident.get("services", {}).get("dashboard")
                    msg = {"op": "scheduler", "name": child.name, "address": ident["address"],
                           "dashboard": dash}
                    self.history[child.name + "/scheduler"] = msg
                    self.out(msg)
                    child.scheduler_file = None
                    self.scheduler_due = None  # a scheduler is up: no more deadline

    def shutdown(self) -> None:
        self.stop([c.name for c in self.children.values()], self.grace)
        deadline = time.monotonic() + self.grace + 5
        while self.children and time.monotonic() < deadline:
            self.tick()
            self.reap()
            time.sleep(0.02)
        for child in self.children.values():  # still there: not even SIGKILL ended them yet
            _signal_group(child.pid, signal.SIGKILL)


def _terminate_fraction() -> float:
    import dask.config

    value = dask.config.get("distributed.worker.memory.terminate", 0.95)
    return float(value) if value else 0.0


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


#: Bytes a socket client may leave unread before the agent drops it (one stalled client
#: must not stall the agent: reaping, the other clients).
_MAX_PENDING = 1 << 20


class _Overflow(OSError):
    """A socket client left more than :data:`_MAX_PENDING` bytes unread."""


class _Conn:
    """One controlling stream: the agent's stdin/stdout, or a client of its unix socket.

    The owner's stdout is written as it is (the agent lives for that client). A socket
    client's fd is non-blocking: what it does not take at once waits in ``pending`` (sent
    when the fd is writable), and more than :data:`_MAX_PENDING` of it raises
    :class:`_Overflow`, an ``OSError``, so the writer drops that client as a hung-up one.
    """

    def __init__(self, fd: int, write: Callable[[bytes], object] | None, owner: bool) -> None:
        self.fd, self._write, self.owner, self.buf = fd, write, owner, b""
        self.pending = bytearray()
        if write is None:
            os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self._write is not None:
            self._write(data)
            return
        if not self.pending:
            data = data[self._send(data):]
        self.pending += data
        if len(self.pending) > _MAX_PENDING:
            raise _Overflow(f"client left more than {_MAX_PENDING} bytes unread")

    def flush(self) -> None:
        """Send what the client can take now (when its fd is writable)."""
        del self.pending[:self._send(self.pending)]

    def _send(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self.fd, data) if data else 0
        except (BlockingIOError, InterruptedError):
            return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dask_deploy._agent")
    parser.add_argument("--cluster", required=True, help="cluster id (tags this process)")
    parser.add_argument("--grace", type=float, default=0.0,
                        help="seconds workers get to leave cleanly when the client goes away")
    parser.add_argument("--listen", metavar="PATH",
                        help="detached: also serve this unix socket, outlive stdin, and stop "
                             "everything when the scheduler child exits")
    parser.add_argument("--owner", help="user@host of the client that started it (a tag)")
    parser.add_argument("--created", type=float, help="when it was started, epoch seconds (a tag)")
    parser.add_argument("--owner-pid", type=int, help="pid of the client that started it (a tag)")
    parser.add_argument("--start-timeout", type=float, metavar="SECONDS",
                        help="detached: stop everything and exit when no scheduler child is up "
                             "this many seconds after the agent is ready or after the latest "
                             "scheduler start request")
    args = parser.parse_args(argv)
    _TAGS.update({"cluster": args.cluster, "owner": args.owner, "created": args.created})

    # A backend that only has a shell on the host (ssh) names the log folder here: make it
    # private (0700, ours, no planted symlink) before anything is written there.
    log_dir = os.environ.get("DASK_DEPLOY_LOG_DIR")
    if log_dir:
        from ._errors import SpecError
        from ._private import private_dir

        try:
            private_dir(log_dir)
        except SpecError as e:
            sys.exit(f"dask-deploy agent: {e}")

    # The template: everything a worker needs is imported once, before any fork.
    import distributed
    import distributed.comm.tcp
    import distributed.http.health
    import distributed.http.statics
    import distributed.http.worker.prometheus
    import distributed.scheduler
    import distributed.versions
    import distributed.worker
    import tornado.platform.asyncio  # noqa: F401

    # A worker sends the scheduler its package versions, read from package metadata once
    # per process (about half of a forked worker's start): read them here, for all.
    distributed.versions.get_versions()

    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    conns: dict[int, _Conn] = {0: _Conn(0, stdout.write, owner=args.listen is None)}

    def out(msg: dict[str, Any]) -> None:
        line = (json.dumps(msg) + "\n").encode()
        for conn in list(conns.values()):
            try:
                conn.write(line)
            except OSError:
                drop(conn)

    def drop(conn: _Conn) -> None:
        conns.pop(conn.fd, None)
        with contextlib.suppress(Exception):
            sel.unregister(conn.fd)
        if conn.fd != 0:
            os.close(conn.fd)

    agent = _Agent(out, args.grace, args.start_timeout if args.listen else None)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: os.write(wake_w, b"x"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os.write(wake_w, b"t"))
    signal.signal(signal.SIGHUP, lambda *_: os.write(wake_w, b"t"))  # a closed terminal: stop
    sel = selectors.DefaultSelector()
    try:
        sel.register(0, selectors.EVENT_READ, "conn")
    except PermissionError:  # stdin is /dev/null (a detached agent): the socket is the way in
        conns.pop(0)
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    server = None
    if args.listen:
        import socket

        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.listen)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # only this user may drive the agent
        server.bind(args.listen)
        os.umask(old)
        server.listen(8)
        sel.register(server.fileno(), selectors.EVENT_READ, "accept")
    out({"op": "ready", "pid": os.getpid()})
    agent.ready()
    try:
        _loop(args, agent, sel, conns, server, wake_r, drop)
    finally:  # however the loop ends, nothing the agent forked outlives it
        agent.shutdown()
        if args.listen:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.listen)


def _loop(args: argparse.Namespace, agent: _Agent, sel: selectors.BaseSelector,
          conns: dict[int, _Conn], server: Any, wake_r: int, drop: Callable[[_Conn], None]) -> None:
    """Serve requests until the owner hangs up, a shutdown, a SIGTERM or the scheduler's end."""
    owned = any(c.owner for c in conns.values())
    running = True
    while running:
        for conn in list(conns.values()):  # a socket client with unsent data: when writable
            if conn.fd != 0 and sel.get_key(conn.fd).events != (
                    want := selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending else 0)):
                sel.modify(conn.fd, want, "conn")
        for key, events in sel.select(timeout=0.1):
            if key.data == "conn" and key.fd not in conns:
                continue  # dropped earlier in this round (an event it could not take)
            if key.data == "conn" and events & selectors.EVENT_WRITE:
                conn = conns[key.fd]
                try:
                    conn.flush()
                except OSError:  # it hung up: only that client goes
                    drop(conn)
                    continue
                if not events & selectors.EVENT_READ:
                    continue
            if key.data == "wake":
                if b"t" in os.read(wake_r, 4096):
                    running = False
                continue
            if key.data == "accept" and server is not None:
                fd = server.accept()[0].detach()
                conn = _Conn(fd, None, owner=False)
                try:
                    for line in [{"op": "ready", "pid": os.getpid()}, *agent.replay()]:
                        conn.write((json.dumps(line) + "\n").encode())
                except OSError:  # the client already hung up: it must not take the agent along
                    os.close(fd)
                    continue
                conns[fd] = conn
                sel.register(fd, selectors.EVENT_READ, "conn")
                continue
            conn = conns[key.fd]
            try:
                data = os.read(key.fd, 65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:  # a socket client hung up with data unread
                data = b""
            if not data:
                drop(conn)
                if conn.owner:
                    running = False
                continue
            conn.buf += data
            while b"\n" in conn.buf and conns.get(key.fd) is conn:  # until it is dropped
                request, conn.buf = conn.buf.split(b"\n", 1)
                running = agent.handle(request) and running
        agent.reap()
        agent.tick()
        if owned and not any(c.owner for c in conns.values()):
            # The owner is gone, whichever way it was dropped: an event that could not be
            # written to it (its end of our stdout closed) drops it before its EOF is read.
            running = False
        if args.listen and agent.scheduler_gone:
            running = False
        if agent.overdue():
            print(f"dask-deploy agent: no scheduler was up within {args.start_timeout:g} s "
                  "(--start-timeout); stopping", file=sys.stderr, flush=True)
            running = False


# --------------------------------------------------------------------------------------
# The client side: talks to one agent over any pair of async streams (pipe, SSH channel)
# --------------------------------------------------------------------------------------


class AgentClient:
    """Drives one agent. ``send`` writes a line; :meth:`feed` is given each line it prints.

    Keeps the state the backend polls: which children run and how each one ended.
    """

    def __init__(self, send: Callable[[str], None]) -> None:
        self._send = send
        self.pid: int | None = None
        self.ready = asyncio.Event()
        self.alive = True
        self.why_lost = ""
        self.running: dict[str, int] = {}
        self.exited: dict[str, dict[str, Any]] = {}
        self.schedulers: dict[str, dict[str, Any]] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self.errors: list[str] = []

    def feed(self, line: str) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return  # not ours (a banner, a warning): ignore
        op = msg.get("op")
        if op == "ready":
            self.pid = msg["pid"]
            self.ready.set()
        elif op == "started":
            self.running[msg["name"]] = msg["pid"]
            self.exited.pop(msg["name"], None)
        elif op == "exit":
            if self.running.get(msg["name"], msg["pid"]) == msg["pid"]:
                self.running.pop(msg["name"], None)
                self.exited[msg["name"]] = msg
        elif op == "scheduler":
            self.schedulers[msg["name"]] = msg
        elif op == "error":
            self.errors.append(msg["message"])
        self._wake()

    def lost(self, why: str = "") -> None:
        """The agent is gone (``why``: what is known of its end): so is everything it ran."""
        self.alive = False
        self.why_lost = why
        for name, pid in list(self.running.items()):
            self.exited[name] = {"name": name, "pid": pid, "code": -9, "stopped": False,
                                 "reason": "its agent went away" + (f" ({why})" if why else "")}
        self.running.clear()
        self.ready.set()
        self._wake()

    def _wake(self) -> None:
        for cond, fut in list(self._waiters):
            if not fut.done() and (cond() or not self.alive):
                fut.set_result(None)
        self._waiters = [(c, f) for c, f in self._waiters if not f.done()]

    async def wait_for(self, cond: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``cond()`` holds (True) or the timeout or agent's end (False)."""
        if cond():
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((cond, fut))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fut, timeout)
        return cond()

    def request(self, op: str, **fields: Any) -> None:
        if not self.alive:
            from ._errors import BackendError

            raise BackendError(f"the worker agent is gone ({self.why_lost or 'connection lost'})")
        self._send(json.dumps({"op": op, **fields}) + "\n")

    def start(self, name: str, role: str, kwargs: dict[str, Any], env: dict[str, str],
              log: str, tls: Any = None) -> None:
        """Start a child; ``tls`` is the cluster's :class:`~dask_deploy.TLS` (or None)."""
        self.exited.pop(name, None)
        pem = {"cert": tls.cert, "key": tls.key} if tls is not None else None
        self.request("start", name=name, role=role, kwargs=kwargs, env=env, log=log, tls=pem)

    async def stop(self, names: list[str], grace: float, timeout: float) -> bool:
        """Stop children by name; True once none of them runs."""
        if self.alive:
            self.request("stop", names=names, grace=grace)
        return await self.wait_for(lambda: not set(names) & set(self.running), timeout)


if __name__ == "__main__":
    main()
