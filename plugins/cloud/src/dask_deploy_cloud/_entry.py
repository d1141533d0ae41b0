"""What a task or instance runs: ``python -m dask_deploy_cloud._entry scheduler|worker ...``.

The image needs ``dask-deploy[cloud]`` installed. The TLS identity is read here, at start,
from Secrets Manager with the task's (or instance's) own role, and kept in memory: it never
appears in the task definition, the overrides, the environment, user data or the log.

Workers of one unit are forked by the core's agent (``dask_deploy._agent``), which gets the
PEMs over its stdin. A unit started in a batch (``run_task`` count, ``run_instances``
MaxCount) learns its name from the scheduler: the backend publishes ``{task or instance id:
unit name}`` as scheduler metadata right after the batch was accepted, and each task looks
itself up by its id (ECS task metadata endpoint, or ``DASK_DEPLOY_INSTANCE_ID`` on EC2).

The scheduler announces its ports on one log line (``DASK_DEPLOY_SCHEDULER {json}``), which
the backend reads back from CloudWatch Logs: that works with port 0 and needs no extra API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from typing import Any

__all__ = ["MARKER", "main"]

MARKER = "DASK_DEPLOY_SCHEDULER "
#: Scheduler metadata key under which the backend publishes batch names.
METADATA_KEY = "dask-deploy-units"


def _print(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def read_tls(secret: str | None, region: str | None) -> Any:
    """The cluster's TLS identity from Secrets Manager (None without a secret)."""
    if not secret:
        return None
    import botocore.session
    from dask_deploy import TLS

    client = botocore.session.get_session().create_client("secretsmanager", region_name=region)
    value = json.loads(client.get_secret_value(SecretId=secret)["SecretString"])
    return TLS(value["cert"], value["key"])


def _bind(host: str) -> str | None:
    # In a container (own network namespace) listen everywhere and advertise the ENI address.
    return None if host in ("", "0.0.0.0") else host


async def run_scheduler(args: argparse.Namespace, tls: Any) -> int:
    from distributed import Scheduler

    host = _bind(args.host)
    kwargs: dict[str, Any] = {"host": host, "port": args.port, **json.loads(args.options)}
    if args.dashboard_port >= 0:
        kwargs.update(dashboard=True, dashboard_address=f"{host or ''}:{args.dashboard_port}")
    else:
        kwargs["dashboard"] = False
    if tls is not None:
        kwargs.update(security=tls.security(), protocol="tls")
    async with Scheduler(**kwargs) as scheduler:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(scheduler.close()))
        dash = scheduler.services.get("dashboard")
        print(MARKER + json.dumps({"port": int(scheduler.address.rsplit(":", 1)[1]),
                                   "dashboard": dash.port if dash else None}), flush=True)
        await scheduler.finished()
    return 0


def _own_id(source: str) -> str:
    """This task's or instance's id, as AWS knows it."""
    if source == "ecs":
        base = os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
        if not base:
            raise RuntimeError("ECS_CONTAINER_METADATA_URI_V4 is not set: not running as an ECS task?")
        with urllib.request.urlopen(base.rstrip("/") + "/task", timeout=10) as r:
            return str(json.load(r)["TaskARN"])
    value = os.environ.get("DASK_DEPLOY_INSTANCE_ID")
    if not value:
        raise RuntimeError("DASK_DEPLOY_INSTANCE_ID is not set (the user data script sets it)")
    return value


async def _claim_name(args: argparse.Namespace, tls: Any) -> str:
    """The unit name the backend gave this task of a batch (polls the scheduler)."""
    from distributed.core import rpc

    me = _own_id(args.identity)
    conn = tls.security().get_connection_args("client") if tls is not None else {}
    deadline = time.monotonic() + args.claim_timeout
    async with rpc(args.scheduler, connection_args=conn) as scheduler:
        while True:
            with contextlib.suppress(OSError):
                name = await scheduler.get_metadata(keys=[METADATA_KEY, args.batch, me], default=None)
                if name:
                    return str(name)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler at {args.scheduler} gave {me} no name within "
                                   f"{args.claim_timeout} s (batch {args.batch})")
            await asyncio.sleep(0.2)


def _copy_new(folder: str, offsets: dict[str, int]) -> None:
    """Copy what the files in ``folder`` gained since ``offsets`` to our stderr."""
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        with contextlib.suppress(OSError), open(path, "rb") as f:
            f.seek(offsets.get(entry, 0))
            chunk = f.read()
            offsets[entry] = f.tell()
        if chunk:
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()


async def _copy_logs(folder: str, offsets: dict[str, int]) -> None:
    while True:
        _copy_new(folder, offsets)
        await asyncio.sleep(0.2)


async def run_workers(args: argparse.Namespace, tls: Any) -> int:
    from dask_deploy.toolkit import AgentClient, agent_command

    unit = args.name or await _claim_name(args, tls)
    workers = json.loads(args.workers)
    proc = await asyncio.create_subprocess_exec(
        *agent_command(sys.executable, args.cluster, args.grace),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    agent = AgentClient(lambda line: stdin.write(line.encode()))

    async def read() -> None:
        while line := await stdout.readline():
            agent.feed(line.decode(errors="replace"))
        agent.lost()

    reader = asyncio.ensure_future(read())
    names = [unit + w["suffix"] for w in workers]
    _print(f"dask-deploy: unit {unit} starts workers {names} for {args.scheduler}")
    # Worker output goes where ours goes, the container's log (CloudWatch): the agent writes
    # only to private regular files, which we copy to our stderr as they grow.
    logs = tempfile.mkdtemp(prefix="dask-deploy-")
    for name, w in zip(names, workers, strict=True):
        kwargs = {"scheduler_ip": args.scheduler, "name": name, "nthreads": w["nthreads"],
                  "memory_limit": w["memory_limit"], "host": _bind(args.host),
                  **({"resources": w["resources"]} if w["resources"] else {}), **w["options"]}
        # The client chose the role (toolkit.worker_role); an older client sends none.
        role = w.get("role", "worker")
        if role not in ("worker", "nanny"):
            raise SystemExit(f"dask-deploy: unknown worker role {role!r}")
        agent.start(name, role, kwargs, w["env"], os.path.join(logs, f"{name}.log"), tls)
    offsets: dict[str, int] = {}
    copier = asyncio.ensure_future(_copy_logs(logs, offsets))
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    done = asyncio.ensure_future(agent.wait_for(
        lambda: all(n in agent.exited for n in names), None))
    await asyncio.wait({done, asyncio.ensure_future(stopping.wait())},
                       return_when=asyncio.FIRST_COMPLETED)
    if stopping.is_set():
        await agent.stop(names, args.grace, args.grace + 5)
    stdin.close()
    await proc.wait()
    reader.cancel()
    copier.cancel()
    _copy_new(logs, offsets)  # what the workers wrote last
    shutil.rmtree(logs, ignore_errors=True)
    failed = [e for n in names if (e := agent.exited.get(n)) and e["code"] != 0 and not e["stopped"]]
    for e in failed:
        _print(f"dask-deploy: worker {e['name']} ended: {e['reason']}")
    return 1 if failed and not stopping.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dask_deploy_cloud._entry")
    parser.add_argument("role", choices=["scheduler", "worker"])
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--region", default=None)
    parser.add_argument("--tls-secret", default=None, help="Secrets Manager ARN of the TLS identity")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8786)
    parser.add_argument("--dashboard-port", type=int, default=8787, help="-1: no dashboard")
    parser.add_argument("--options", default="{}", help="JSON keyword arguments of the scheduler")
    parser.add_argument("--scheduler", help="address the workers join")
    parser.add_argument("--workers", default="[]", help="JSON list of the unit's workers")
    parser.add_argument("--name", default=None, help="the unit's name (one-unit starts)")
    parser.add_argument("--batch", default=None, help="batch id (the name comes from the scheduler)")
    parser.add_argument("--identity", choices=["ecs", "env"], default="ecs")
    parser.add_argument("--claim-timeout", type=float, default=300.0)
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        tls = read_tls(args.tls_secret, args.region)
        run = run_scheduler if args.role == "scheduler" else run_workers
        return asyncio.run(run(args, tls))
    except Exception as e:
        _print(f"dask-deploy: the {args.role} of {args.cluster} failed: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
