"""Test harness: an AWS API emulator (moto) whose tasks and instances really run, locally.

moto answers the ECS, EC2, IAM, Secrets Manager and CloudWatch Logs APIs but never runs a
container. :class:`TaskRunner` plays the part of the ECS agent and of the EC2 machines:

* it polls ``describe_tasks`` (and ``describe_instances``) and starts each new task's container
  command (task definition + overrides, with its environment) as a local subprocess; an
  instance's command is read from the ``docker run`` line of its user data;
* it writes the process's output to the task's CloudWatch log stream (``put_log_events``),
  so the backends' log reading is tested against the Logs API;
* it serves the ECS task metadata endpoint (``ECS_CONTAINER_METADATA_URI_V4``);
* it maps every address the emulator handed out (10.x, 172.31.x, public ones) and ``0.0.0.0``
  in a command line to 127.0.0.1: nothing is ever dialled outside loopback;
* it reports a task's lifecycle the way ECS does: ``PROVISIONING`` until the process runs,
  ``STOPPING`` after ``stop_task`` until the process is gone (SIGTERM, SIGKILL after the
  container's ``stopTimeout``), then ``STOPPED`` with the exit code and ``stopCode``.
  Instances whose process ends by itself are terminated as "instance initiated shutdown".

The lifecycle reports write moto's in-process models, so the server must run in this process
(:class:`MotoServer`). Backends under test need ``resolve_address=loopback``.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import itertools
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .net import free_port

__all__ = ["MotoServer", "TaskRunner", "aws_environment", "emulated_aws", "loopback", "run_hook"]

ACCOUNT = "123456789012"
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def loopback(address: str) -> str:
    """``resolve_address`` for tests: every AWS-issued address is this machine's loopback."""
    return "127.0.0.1"


def to_loopback(text: str) -> str:
    """Replace every IPv4 address outside 127/8 (and 0.0.0.0) in ``text`` with 127.0.0.1."""
    return _IPV4.sub(lambda m: m.group(0) if m.group(1) == "127" else "127.0.0.1", text)


def _per_request_transformers() -> None:
    """Make moto's response shaping per request (it is per class, shared by its threads).

    moto decides whether ``describe_tasks`` returns tags by writing into a dict that belongs
    to the response *class*; its threaded server serves requests concurrently, so a request
    without ``include=["TAGS"]`` (the task runner's polling) could strip the tags from a
    concurrent one that asked for them. A task without tags is invisible to discovery and
    to the tests' own checks. Each request now writes into a copy of its own.
    """
    from moto.core.responses import BaseResponse
    from moto.core.serialize import never_return

    def shape(self: Any, path: str, transform: Any) -> None:
        own = self.__dict__.get("RESPONSE_KEY_PATH_TO_TRANSFORMER")
        if own is None:
            own = self.RESPONSE_KEY_PATH_TO_TRANSFORMER = dict(type(self).RESPONSE_KEY_PATH_TO_TRANSFORMER)
        own[path] = transform

    def include(self: Any, path: str) -> None:
        shape(self, path, lambda x: x)

    def exclude(self: Any, path: str) -> None:
        shape(self, path, never_return)

    BaseResponse._include_in_response = include  # type: ignore[method-assign,assignment]
    BaseResponse._exclude_from_response = exclude  # type: ignore[method-assign,assignment]


class MotoServer:
    """moto's threaded server on 127.0.0.1 (a free port), with ECS task states pinned.

    By default moto advances a task towards STOPPED on every ``describe_tasks``; pinned, a
    task changes state only when :class:`TaskRunner` (or the API) says so.
    """

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> MotoServer:
        from moto.moto_api import state_manager
        from moto.server import ThreadedMotoServer

        _per_request_transformers()

        state_manager.set_transition(model_name="ecs::task",
                                     transition={"progression": "manual", "times": 10**9})
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self) -> None:
        """Forget every resource (between tests)."""
        import urllib.request

        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()


def aws_environment(endpoint_url: str, region: str) -> dict[str, str]:
    """The environment that points botocore (clients and containers) at the emulator."""
    return {"AWS_ENDPOINT_URL": endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "2"}


class _Proc:
    """One running container: its process and the thread that ships its output to Logs."""

    def __init__(self, kind: str, ident: str, popen: subprocess.Popen[bytes], shipper: threading.Thread,
                 stop_timeout: float) -> None:
        self.kind, self.ident, self.popen, self.shipper = kind, ident, popen, shipper
        self.stop_timeout = stop_timeout
        self.kill_at: float | None = None


class TaskRunner:
    """Runs the emulator's ECS tasks and EC2 instances as local processes (see module doc).

    ``python`` replaces the ``python`` of container commands (default: this interpreter,
    which has dask-deploy installed: the "image").
    """

    def __init__(self, server: MotoServer, python: str = sys.executable, interval: float = 0.1) -> None:
        self.server, self.python, self.interval = server, python, interval
        self.env = aws_environment(server.endpoint_url, server.region)
        self.procs: dict[str, _Proc] = {}
        #: Every command line this runner started (after address mapping), by task/instance id.
        self.commands: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._held = threading.Event()
        self._thread: threading.Thread | None = None
        self._meta: http.server.ThreadingHTTPServer | None = None
        self._task_arns: dict[str, str] = {}
        self._task_clusters: dict[str, str] = {}  # task id -> the cluster ARN it was listed in
        self._lock = threading.Lock()
        self._unpatch: list[Callable[[], None]] = []
        self._logs: Any = None  # the Logs client of the shippers, made by the loop's thread

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> TaskRunner:
        self._patch_moto()
        self._serve_metadata()
        self._thread = threading.Thread(target=self._loop, name="aws-task-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for proc in list(self.procs.values()):
            self._kill(proc, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.popen.wait(10)
        if self._meta is not None:
            self._meta.shutdown()
            self._meta.server_close()
        for undo in reversed(self._unpatch):
            undo()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Start no new task or instance inside this block (they stay provisioning / pending)."""
        self._held.set()
        try:
            yield
        finally:
            self._held.clear()

    def running(self) -> list[str]:
        """Ids of tasks / instances not yet recorded as ended: alive, or exited but not yet
        marked STOPPED / stopped in moto. (Process liveness alone would race the reaper: a test
        that waits for a task to leave this list then reads its state from moto.)"""
        with self._lock:
            return list(self.procs)

    # -- moto: an ECS agent's view of task states ----------------------------------------

    def _backend(self, service: str) -> Any:
        from moto.backends import get_backend

        return get_backend(service)[ACCOUNT][self.server.region]  # type: ignore[call-overload]

    def _patch_moto(self) -> None:
        from moto.ecs.models import EC2ContainerServiceBackend

        run_task, stop_task = EC2ContainerServiceBackend.run_task, EC2ContainerServiceBackend.stop_task

        def patched_run(backend: Any, *args: Any, **kwargs: Any) -> Any:
            tasks = run_task(backend, *args, **kwargs)
            for task in tasks:  # like ECS: provisioning until the agent started it
                task.status = "PROVISIONING"
            return tasks

        def patched_stop(backend: Any, *args: Any, **kwargs: Any) -> Any:
            task = stop_task(backend, *args, **kwargs)
            if task.id in self.procs:  # like ECS: stopping until the container has exited
                task.status = "STOPPING"
            return task

        EC2ContainerServiceBackend.run_task = patched_run  # type: ignore[method-assign,assignment]
        EC2ContainerServiceBackend.stop_task = patched_stop  # type: ignore[method-assign,assignment]

        def undo() -> None:
            EC2ContainerServiceBackend.run_task = run_task  # type: ignore[method-assign,assignment]
            EC2ContainerServiceBackend.stop_task = stop_task  # type: ignore[method-assign,assignment]

        self._unpatch.append(undo)

    def _task_model(self, arn: str) -> Any:
        for tasks in self._backend("ecs").tasks.values():
            for task in tasks.values():
                if task.task_arn == arn:
                    return task
        return None

    def _serve_metadata(self) -> None:
        runner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")  # v4/<task id>/task
                arn = runner._task_arns.get(parts[1]) if len(parts) == 3 else None
                body = json.dumps({"TaskARN": arn}).encode() if arn else b"{}"
                self.send_response(200 if arn else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._meta = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._meta.serve_forever, daemon=True).start()

    # -- the loop -----------------------------------------------------------------------

    def _loop(self) -> None:
        import boto3

        session = boto3.session.Session()
        kw = {"endpoint_url": self.server.endpoint_url, "region_name": self.server.region,
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        ecs, ec2 = session.client("ecs", **kw), session.client("ec2", **kw)
        # One Logs client for every shipper thread (clients are thread-safe): a session and
        # client per task cost ~0.12 CPU-s each in the test process.
        self._logs = session.client("logs", **kw)
        while not self._stop.is_set():
            try:
                self._tick_ecs(ecs)
                self._tick_ec2(ec2)
                self._reap()
            except Exception as e:  # keep running; the tests see the errors
                self.errors.append(f"{type(e).__name__}: {e}")
            self._stop.wait(self.interval)

    def _tick_ecs(self, ecs: Any) -> None:
        for cluster in ecs.list_clusters()["clusterArns"]:
            # Only the tasks meant to run, as ECS lists by default: moto lists every task it
            # ever had, and describing all of a session's stopped tasks ten times a second
            # (moto's describe_tasks is quadratic) took the CPU of the test process, where
            # the emulator serves, from the clusters under test.
            arns = ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"]
            for i in range(0, len(arns), 100):
                for task in ecs.describe_tasks(cluster=cluster, tasks=arns[i:i + 100])["tasks"]:
                    self._ecs_task(ecs, task)
            # A task of this cluster that runs here but is no longer listed was told to stop.
            listed = {arn.rsplit("/", 1)[-1] for arn in arns}
            for tid, proc in list(self.procs.items()):
                if proc.kind == "task" and self._task_clusters.get(tid) == cluster \
                        and tid not in listed:
                    self._stopping(proc)

    def _ecs_task(self, ecs: Any, task: dict[str, Any]) -> None:
        tid = task["taskArn"].rsplit("/", 1)[-1]
        proc = self.procs.get(tid)
        if proc is None:
            if task["lastStatus"] == "PROVISIONING" and task["desiredStatus"] == "RUNNING" \
                    and not self._held.is_set():
                self._start_task(ecs, task)
            return
        if task["desiredStatus"] == "STOPPED":
            self._stopping(proc)

    def _stopping(self, proc: _Proc) -> None:
        """SIGTERM now, SIGKILL after the container's ``stopTimeout`` (see :meth:`_reap`)."""
        if proc.kill_at is None:
            proc.kill_at = time.monotonic() + proc.stop_timeout
            self._kill(proc, signal.SIGTERM)

    def _start_task(self, ecs: Any, task: dict[str, Any]) -> None:
        arn, tid = task["taskArn"], task["taskArn"].rsplit("/", 1)[-1]
        definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        container = definition["containerDefinitions"][0]
        override: dict[str, Any] = next((o for o in task.get("overrides", {}).get("containerOverrides", [])
                         if o.get("name") == container["name"]), {})
        command = override.get("command") or container.get("command") or []
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        env.update({e["name"]: e["value"] for e in override.get("environment", [])})
        assert self._meta is not None
        env["ECS_CONTAINER_METADATA_URI_V4"] = f"http://127.0.0.1:{self._meta.server_port}/v4/{tid}"
        options = container.get("logConfiguration", {}).get("options", {})
        group = options.get("awslogs-group")
        stream = f"{options.get('awslogs-stream-prefix')}/{container['name']}/{tid}" if group else None
        self._task_arns[tid] = arn
        self._task_clusters[tid] = task["clusterArn"]
        self._launch("task", tid, command, env, group, stream, float(container.get("stopTimeout", 30)))
        model = self._task_model(arn)
        if model is not None:
            model.status = "RUNNING"
            model.containers[0].last_status = "RUNNING"

    def _tick_ec2(self, ec2: Any) -> None:
        pages = ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["dask-deploy:cluster"]}])
        for inst in (i for r in pages["Reservations"] for i in r["Instances"]):
            iid, state = inst["InstanceId"], inst["State"]["Name"]
            proc = self.procs.get(iid)
            if proc is None and state == "running" and iid not in self.commands \
                    and not self._held.is_set():
                data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
                script = base64.b64decode(data.get("UserData", {}).get("Value", "")).decode()
                self._start_instance(iid, script)
            elif proc is not None and state in ("shutting-down", "terminated", "stopping", "stopped") \
                    and proc.kill_at is None:
                proc.kill_at = time.monotonic() + 10
                self._kill(proc, signal.SIGTERM)

    def _start_instance(self, iid: str, script: str) -> None:
        line = next((ln for ln in script.splitlines() if ln.startswith("docker run")), None)
        if line is None:
            self.commands[iid] = []
            return
        words = shlex.split(line.replace("$DASK_DEPLOY_INSTANCE_ID", iid))
        start = next(i for i, w in enumerate(words) if w == "python" and words[i + 1] == "-m")
        env = {"DASK_DEPLOY_INSTANCE_ID": iid}
        group = stream = None
        for flag, value in itertools.pairwise(words[:start]):
            if flag == "-e" and "=" in value:
                k, _, v = value.partition("=")
                env[k] = v
            elif flag == "--log-opt" and value.startswith("awslogs-group="):
                group = value.partition("=")[2]
            elif flag == "--log-opt" and value.startswith("awslogs-stream="):
                stream = value.partition("=")[2]
        self._launch("instance", iid, words[start:], env, group, stream, 10.0)

    # -- processes ----------------------------------------------------------------------

    def _launch(self, kind: str, ident: str, command: list[str], env: Mapping[str, str],
                group: str | None, stream: str | None, stop_timeout: float) -> None:
        argv = [to_loopback(a) for a in command]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = self.python
        self.commands[ident] = argv
        full_env = {**os.environ, **{k: to_loopback(v) for k, v in env.items()}, **self.env}
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
        shipper = threading.Thread(target=self._ship, args=(popen, group, stream), daemon=True)
        shipper.start()
        with self._lock:
            self.procs[ident] = _Proc(kind, ident, popen, shipper, stop_timeout)

    def _ship(self, popen: subprocess.Popen[bytes], group: str | None, stream: str | None) -> None:
        """Copy the process's output to its CloudWatch log stream, line by line."""
        logs = self._logs
        if group and stream:
            with contextlib.suppress(Exception):
                logs.create_log_group(logGroupName=group)
            with contextlib.suppress(Exception):
                logs.create_log_stream(logGroupName=group, logStreamName=stream)
        assert popen.stdout is not None
        for raw in popen.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if group and stream and line:
                try:
                    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
                        {"timestamp": int(time.time() * 1000), "message": line}])
                except Exception as e:
                    self.errors.append(f"put_log_events: {e}")

    @staticmethod
    def _kill(proc: _Proc, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, sig)

    def _reap(self) -> None:
        now = time.monotonic()
        for ident, proc in list(self.procs.items()):
            code = proc.popen.poll()
            if code is None:
                if proc.kill_at is not None and now >= proc.kill_at:
                    self._kill(proc, signal.SIGKILL)
                continue
            self._kill(proc, signal.SIGKILL)  # whatever it left behind in its group
            proc.shipper.join(10)  # the whole log is written before the task reads as STOPPED
            if proc.kind == "task":
                self._task_exited(ident, code, stopped=proc.kill_at is not None)
            else:
                self._instance_exited(ident, stopped=proc.kill_at is not None)
            with self._lock:
                del self.procs[ident]

    def _task_exited(self, tid: str, code: int, stopped: bool) -> None:
        model = self._task_model(self._task_arns.get(tid, ""))
        if model is None:
            return
        container = model.containers[0]
        container.exitCode = code if code >= 0 else 128 - code
        container.last_status = "STOPPED"
        if stopped:
            model.stop_code = "UserInitiated"
        else:
            model.stop_code = "EssentialContainerExited"
            model.stopped_reason = "Essential container in task exited"
            model.desired_status = "STOPPED"
        model.status = "STOPPED"

    def _instance_exited(self, iid: str, stopped: bool) -> None:
        if stopped:
            return
        from moto.ec2.models.instances import StateReason

        instance = self._backend("ec2").get_instance(iid)
        instance.terminate()  # "shutdown -h now" with shutdown behaviour "terminate"
        instance.state_reason = StateReason("Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                                            "Client.InstanceInitiatedShutdown")


@contextlib.contextmanager
def emulated_aws(region: str = "us-east-1") -> Iterator[tuple[MotoServer, TaskRunner]]:
    """A moto server plus a :class:`TaskRunner`, with the AWS environment pointed at them."""
    server = MotoServer(region).start()
    runner = TaskRunner(server).start()
    saved = {k: os.environ.get(k) for k in runner.env}
    os.environ.update(runner.env)
    try:
        yield server, runner
    finally:
        runner.stop()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_hook(backend: str, hook: str, options: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """Call one hook of ``backend`` on a plugin built from default options only.

    That is how ``dask-deploy gc`` sees AWS: no record of what any cluster started, e.g.
    ``run_hook("fargate", "deploy_discover", cluster_id=None)``.
    """
    import asyncio

    from dask_deploy import ClusterSpec
    from dask_deploy._plugins import backend_info

    async def call() -> Any:
        info = backend_info(backend)
        spec = ClusterSpec(backend=backend, name="dask-deploy-gc",
                           backend_options=info.options(**(options or {})) if info.options else None)
        plugin = info.factory(spec)
        try:
            return await getattr(plugin, hook)(cluster=spec, **kwargs)
        finally:
            await plugin.aws.close()  # type: ignore[attr-defined]

    return asyncio.run(call())
