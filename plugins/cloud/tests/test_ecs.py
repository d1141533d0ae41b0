"""``fargate`` and ``ecs`` against moto, with every task run as a local process.

What each test checks is read back from the emulator's API (tags, task definitions,
overrides, security group rules, log streams), never from the backend's own records.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections import Counter
from collections.abc import Callable
from typing import Any

import dask
import pytest
from dask_deploy import BackendError, Cluster, CrashLoopError, Phase, SpecError
from dask_deploy_cloud._entry import METADATA_KEY
from dask_deploy_testing.cloud import TaskRunner, run_hook
from distributed import Client
from distributed.diagnostics.plugin import Environ

pytestmark = pytest.mark.timeout(300)

CLUSTER = "dask-deploy:cluster"


def tags(item: dict[str, Any]) -> dict[str, str]:
    pairs = item.get("tags", item.get("Tags", []))
    return {t.get("key", t.get("Key")): t.get("value", t.get("Value")) for t in pairs}


def tasks_of(boto: Callable[[str], Any], name: str) -> list[dict[str, Any]]:
    """Every task (any state) tagged with cluster ``name``, in any ECS cluster."""
    ecs = boto("ecs")
    out = []
    for cluster in ecs.list_clusters()["clusterArns"]:
        arns = ecs.list_tasks(cluster=cluster)["taskArns"]  # moto lists all states
        for i in range(0, len(arns), 100):
            for t in ecs.describe_tasks(cluster=cluster, tasks=arns[i:i + 100], include=["TAGS"])["tasks"]:
                if tags(t).get(CLUSTER) == name:
                    out.append(t)
    return out


def test_fargate_lifecycle(options: dict[str, Any], runner: TaskRunner, boto: Any,
                           discover: Any, name: str, wait_until: Any,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    # nanny=True here (the other tests run the default, no nanny): each worker task runs a
    # distributed.Nanny over TLS, so nanny plugins reach the workers.
    with Cluster.from_name("fargate", n_workers=2, nanny=True, **options) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        workers = client.scheduler_info()["workers"]
        assert {w["name"] for w in workers.values()} == {f"{name}-0", f"{name}-1"}
        assert all(w["nanny"].startswith("tls://127.0.0.1:") for w in workers.values())
        client.register_plugin(Environ({"DASK_DEPLOY_T15": "fargate"}))
        # A lambda travels by value: the task processes need not import this module.
        wait_until(lambda: set(client.run(lambda: __import__("os").environ.get("DASK_DEPLOY_T15"))
                               .values()) == {"fargate"}, 120, "the nanny plugin to reach the workers")
        # Only loopback is ever dialled, and the cluster speaks TLS.
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        assert all(a.startswith("tls://127.0.0.1:") for a in workers)

        tasks = tasks_of(boto, name)
        assert sorted(tags(t)["dask-deploy:kind"] for t in tasks) == ["scheduler", "worker", "worker"]
        assert all(t["launchType"] == "FARGATE" and t["lastStatus"] == "RUNNING" for t in tasks)
        # Workers of one start share one run_task call (count=2), the scheduler has its own.
        assert cluster.backend.aws.calls["ecs.run_task"] == 2
        found = Counter(h.data["kind"] for h in discover("fargate", name))
        assert found == {"task": 3, "task-definition": 2, "ecs-cluster": 1, "security-group": 1,
                         "secret": 1, "role": 2}
        assert "Scheduler at" in cluster.get_logs()["Scheduler"]  # read from CloudWatch
        # status(): one row per unit, running and connected once a poll has seen them.
        wait_until(lambda: all(r.phase == "running" and r.connected for r in cluster.status().rows),
                   60, "every unit to show running and connected in status()")
        assert [r.unit for r in cluster.status().rows] == [f"{name}-0", f"{name}-1"]
        # The notebook widget renders the same table (its status tab).
        shown = cluster._widget().children[0].value
        assert "Backend: <b>fargate</b>" in shown and "2/2 workers connected" in shown
        # dashboard_link honours distributed.dashboard.link (JupyterHub's template).
        port = urllib.parse.urlsplit(cluster.dashboard_link).port
        monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/me/")
        with dask.config.set({"distributed.dashboard.link":
                              "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"}):
            assert cluster.dashboard_link == f"/user/me/proxy/{port}/status"
    ids = {t["taskArn"].rsplit("/", 1)[-1] for t in tasks}
    assert not ids & set(runner.running()), "close returned before the task processes ended"
    assert all(t["lastStatus"] == "STOPPED" for t in tasks_of(boto, name))
    assert discover("fargate", name) == []


def test_ecs_scale_and_logs_after_stop(wait_until: Any, options: dict[str, Any], ecs_cluster: str, boto: Any,
                                       discover: Any, name: str) -> None:
    with Cluster.from_name("ecs", cluster_arn=ecs_cluster, n_workers=1, **options) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(1, timeout=120)
        cluster.scale(3)
        client.wait_for_workers(3, timeout=120)
        assert client.submit(lambda: 40 + 2).result() == 42
        tasks = tasks_of(boto, name)
        assert all(t["launchType"] == "EC2" and t.get("containerInstanceArn") for t in tasks)
        assert len(tasks) == 4
        cluster.scale(1)
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, what="scale down to 1")
        wait_until(lambda: sum(t["lastStatus"] == "STOPPED" for t in tasks_of(boto, name)) == 2,
                   what="two worker tasks stopped")
        logs = cluster.get_logs()
        # Logs of units that were stopped, read from their CloudWatch streams.
        for unit in (f"{name}-1", f"{name}-2"):
            assert f"unit {unit} starts workers" in logs[unit]
            assert "Registered to" in logs[unit]
        stopped = [t for t in tasks_of(boto, name) if t["lastStatus"] == "STOPPED"]
        assert all(t.get("stopCode") == "UserInitiated" for t in stopped)
    assert discover("ecs", name, cluster_arn=ecs_cluster) == []


def test_failed_worker_reports_reason_and_log(options: dict[str, Any], name: str, discover: Any) -> None:
    with Cluster.from_name("fargate", n_workers=1, max_failures=2,
                           worker_options={"no_such_option": 1}, **options) as cluster:
        with pytest.raises(CrashLoopError):
            cluster.wait_for_workers(1, timeout=120)
        logs = cluster.get_logs()
        assert "EssentialContainerExited" in logs["Cluster"]
        assert "exit code 1" in logs["Cluster"]
        # The dead task's own log (CloudWatch) says why.
        assert "no_such_option" in logs[f"{name}-0"]
    assert discover("fargate", name) == []


def test_failed_scheduler_start_cleans_up(options: dict[str, Any], name: str, discover: Any) -> None:
    with pytest.raises(BackendError) as err:
        Cluster.from_name("fargate", scheduler_options={"no_such_option": 1}, **options)
    assert "EssentialContainerExited" in str(err.value)
    assert "no_such_option" in str(err.value)  # its log is in the error
    assert discover("fargate", name) == []


def test_secure_defaults(options: dict[str, Any], boto: Any, runner: TaskRunner, name: str) -> None:
    with Cluster.from_name("fargate", n_workers=1, **options) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=120)
        tls = cluster.spec.tls
        assert tls is not None
        # The security group admits the client's address and its own members, nothing else.
        (gid,) = cluster.backend.infra.security_groups
        group = boto("ec2").describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
        for perm in group["IpPermissions"]:
            sources = [r["CidrIp"] for r in perm["IpRanges"]]
            sources += [p["GroupId"] for p in perm["UserIdGroupPairs"]]
            assert sources in (["127.0.0.1/32"], [gid]), perm
            assert not perm["Ipv6Ranges"]
        # The TLS identity lives in Secrets Manager, readable only through the task role.
        secret = boto("secretsmanager").get_secret_value(SecretId=f"dask-deploy/{name}/tls")
        assert json.loads(secret["SecretString"])["key"] == tls.key
        policy = boto("iam").get_role_policy(RoleName=f"{name}-task", PolicyName="dask-deploy")
        (statement,) = policy["PolicyDocument"]["Statement"]
        assert statement["Resource"] == secret["ARN"]
        assert statement["Action"] == ["secretsmanager:GetSecretValue"]
        # ... and nowhere else: task definitions, overrides, environment, commands, logs.
        ecs, logs = boto("ecs"), boto("logs")
        seen = []
        for task in tasks_of(boto, name):
            seen.append(json.dumps(task))
            seen.append(json.dumps(ecs.describe_task_definition(
                taskDefinition=task["taskDefinitionArn"])["taskDefinition"]))
            seen.append(json.dumps(runner.commands[task["taskArn"].rsplit("/", 1)[-1]]))
        for stream in logs.describe_log_streams(logGroupName="/dask-deploy",
                                                logStreamNamePrefix=name)["logStreams"]:
            seen.append(json.dumps(logs.get_log_events(logGroupName="/dask-deploy",
                                                       logStreamName=stream["logStreamName"])))
        assert len(seen) >= 7
        text = "\n".join(seen)
        for pem in (tls.key, tls.cert):
            body = "".join(pem.strip().splitlines()[1:-1])
            for chunk in (body[:40], body[-40:], base64.b64encode(pem.encode()).decode()[:40]):
                assert chunk not in text
        assert "PRIVATE KEY" not in text


def test_a_name_reused_gets_fresh_key_material(options: dict[str, Any], boto: Any, discover: Any,
                                                name: str) -> None:
    """A secret left by an earlier start of the same name (its teardown never ran) is
    overwritten by the next start, never re-used; gc finds it by its kind and deletes it."""
    sm = boto("secretsmanager")
    secret_id = f"dask-deploy/{name}/tls"
    with Cluster.from_name("fargate", n_workers=0, **options) as first:
        assert first.spec.tls is not None
        old = sm.get_secret_value(SecretId=secret_id)["SecretString"]
        assert json.loads(old)["cert"] == first.spec.tls.cert
        old_tags = sm.describe_secret(SecretId=secret_id)["Tags"]
    # What a start whose teardown never ran leaves behind: the secret, as it was.
    sm.create_secret(Name=secret_id, SecretString=old, Tags=old_tags)
    (left,) = discover("fargate", name)
    assert left.data["kind"] == "secret" and left.name == secret_id
    with Cluster.from_name("fargate", n_workers=0, **options) as second:
        assert second.spec.tls is not None and second.spec.tls.cert != first.spec.tls.cert
        new = json.loads(sm.get_secret_value(SecretId=secret_id)["SecretString"])
        assert new == {"cert": second.spec.tls.cert, "key": second.spec.tls.key}
        assert json.dumps(new) != old
    assert discover("fargate", name) == []  # the second's teardown deleted it
    # gc's stop path deletes a leftover secret by the handle discover gives.
    sm.create_secret(Name=secret_id, SecretString=old, Tags=old_tags)
    run_hook("fargate", "deploy_stop_workers", handles=discover("fargate", name))
    assert discover("fargate", name) == []
    assert not sm.list_secrets(Filters=[{"Key": "name", "Values": [secret_id]}])["SecretList"]


def test_local_scheduler_plain_tcp(options: dict[str, Any], boto: Any, discover: Any, name: str) -> None:
    with Cluster.from_name("fargate", scheduler="local", security=False, n_workers=1,
                           **{**options, "dashboard_address": "127.0.0.1:0"}) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(1, timeout=120)
        assert cluster.scheduler is not None  # in this process
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert client.submit(lambda: 1).result() == 1
        kinds = Counter(h.data["kind"] for h in discover("fargate", name))
        assert "secret" not in kinds and kinds["task"] == 1  # no TLS, no scheduler task
        (gid,) = cluster.backend.infra.security_groups
        group = boto("ec2").describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
        # The scheduler here dials the workers: the client's address may reach every port.
        client_rule = next(p for p in group["IpPermissions"] if p["IpRanges"])
        assert (client_rule["FromPort"], client_rule["ToPort"]) == (0, 65535)
    assert discover("fargate", name) == []


def test_batched_start_and_stop(wait_until: Any, options: dict[str, Any], runner: TaskRunner, discover: Any,
                                name: str) -> None:
    """12 units: two run_task calls (10 + 2); names reach the tasks through the scheduler."""
    with runner.holding():  # tasks stay PROVISIONING: this is about the API calls
        cluster = Cluster.from_name("fargate", scheduler="local", n_workers=12,
                                    **{**options, "dashboard_address": None})
        try:
            wait_until(lambda: len(cluster.handles) == 12, what="12 units started")
            calls = cluster.backend.aws.calls
            assert calls["ecs.run_task"] == 2
            published = cluster.scheduler.get_metadata([METADATA_KEY])
            assert sorted(len(batch) for batch in published.values()) == [2, 10]
            names = {unit for batch in published.values() for unit in batch.values()}
            assert names == set(cluster.units)
            tasks = {h.backend_id for h in cluster.handles.values()}
            assert tasks == {arn for batch in published.values() for arn in batch}
            statuses = cluster.sync(cluster.backend.deploy_poll, cluster=cluster.spec,
                                    handles=list(cluster.handles.values()))
            assert {s.phase for s in statuses} == {Phase.PENDING}
            describes = calls["ecs.describe_tasks"]
        finally:
            cluster.close()
        assert calls["ecs.stop_task"] == 12  # ECS has no batch stop: one call each ...
        assert calls["ecs.describe_tasks"] - describes <= 10  # ... then all 12 polled together
    assert discover("fargate", name) == []


def test_detach_attach_and_gc(options: dict[str, Any], runner: TaskRunner, discover: Any,
                              name: str) -> None:
    cluster = Cluster.from_name("fargate", n_workers=1, shutdown_on_close=False, **options)
    with Client(cluster) as client:
        client.wait_for_workers(1, timeout=120)
    cluster.close()  # detached: everything keeps running
    assert Counter(h.data["kind"] for h in discover("fargate", name))["task"] == 2

    again = Cluster.from_name("fargate", name=name)  # re-attach from the record
    with Client(again) as client:
        again.scale(2)  # the new task must learn the scheduler's private address again
        client.wait_for_workers(2, timeout=120)
        assert client.submit(lambda: 2).result() == 2
    again.close()

    # gc: a backend built from default options finds all of it by tag and deletes it.
    leftovers = [h for h in discover("fargate", None) if h.cluster == name]
    assert Counter(h.data["kind"] for h in leftovers)["task"] == 3
    run_hook("fargate", "deploy_stop_workers", handles=leftovers)
    assert discover("fargate", name) == []
    assert not {h.backend_id.rsplit("/", 1)[-1] for h in leftovers} & set(runner.running())


def test_gpus_become_resource_requirements(options: dict[str, Any], ecs_cluster: str, boto: Any,
                                           runner: TaskRunner, discover: Any, name: str) -> None:
    with pytest.raises(SpecError, match="gpus"):  # Fargate has none: refused, naming the option
        Cluster.from_name("fargate", gpus=1, **{**options, "name": f"{name}-f"})
    # About the task definition only: nothing needs to run.
    with runner.holding(), Cluster.from_name("ecs", cluster_arn=ecs_cluster, scheduler="local", gpus=2,
                                             **{**options, "dashboard_address": None}) as cluster:
        arn = cluster.backend.task_definitions["worker"]
        (container,) = boto("ecs").describe_task_definition(taskDefinition=arn)[
            "taskDefinition"]["containerDefinitions"]
        assert container["resourceRequirements"] == [{"type": "GPU", "value": "2"}]
    assert discover("ecs", name, cluster_arn=ecs_cluster) == []
    assert discover("fargate", f"{name}-f") == []


def test_sigkilled_clients_cluster_ends_after_its_idle_timeout(options: dict[str, Any], runner: TaskRunner,
                                                              discover: Any, wait_until: Any,
                                                              name: str) -> None:
    """Nobody closes it: the remote scheduler closes itself after ``idle_timeout``."""
    import os
    import signal
    import subprocess
    import sys
    import time

    opts = {**options, "idle_timeout": 5, "n_workers": 0}
    script = ("import json, sys, time\nfrom dask_deploy import Cluster\n"
              "cluster = Cluster.from_name('fargate', **json.loads(sys.argv[1]))\n"
              "print('ready', flush=True)\ntime.sleep(600)\n")
    client = subprocess.Popen([sys.executable, "-c", script, json.dumps(opts)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "ready"
        (sched,) = [h for h in discover("fargate", name) if h.data.get("role") == "scheduler"]
        # owner tags on what it created, and what gc judges liveness by
        assert sched.data["owner"] and sched.data["created"] <= time.time()
        assert sched.data["owner_pid"] == client.pid and sched.data["detached"] is False
        os.kill(client.pid, signal.SIGKILL)
        client.wait(30)
    finally:
        client.kill()
    task_id = sched.backend_id.rsplit("/", 1)[-1]
    wait_until(lambda: task_id not in runner.running(), 90, "the idle scheduler task to end by itself")
    (status,) = run_hook("fargate", "deploy_poll", handles=[sched])
    assert status.phase is Phase.GONE, status  # it exited cleanly: idle, not crashed

    # What is left (security group, roles, task definitions) is garbage gc finds and removes.
    leftovers = discover("fargate", name)
    assert all(h.data.get("scheduler_running") is False for h in leftovers)
    run_hook("fargate", "deploy_stop_workers", handles=leftovers)
    assert discover("fargate", name) == []


def test_pools_get_task_definitions_of_their_own(options: dict[str, Any], boto: Any, discover: Any,
                                                 name: str, wait_until: Any) -> None:
    """Each pool's workers run its own task definition (cpu, memory, image) and capacity
    (Fargate Spot for one); scaling one pool leaves the other's tasks alone; close
    deregisters every revision."""
    pools = {"cpu": {"n_workers": 1},
             "big": {"n_workers": 1, "worker_cpu": 512, "worker_mem": 1024, "fargate_spot": True,
                     "image": "dask-deploy:big", "resources": {"BIG": 1}}}
    ecs = boto("ecs")

    def running() -> dict[str, tuple[str, str, str, str]]:
        """Task ARN -> (cpu, memory, image) of its task definition and its capacity, as ECS
        reports them."""
        out = {}
        for t in tasks_of(boto, name):
            if t["lastStatus"] != "STOPPED":
                td = ecs.describe_task_definition(taskDefinition=t["taskDefinitionArn"])["taskDefinition"]
                out[t["taskArn"]] = (td["cpu"], td["memory"], td["containerDefinitions"][0]["image"],
                                     t.get("capacityProviderName") or t["launchType"])
        return out

    with Cluster.from_name("fargate", scheduler="local", pools=pools,
                           **{**options, "dashboard_address": None}) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        assert client.submit(lambda: 1, resources={"BIG": 1}).result() == 1
        tasks = running()
        by_unit = {n: h.backend_id for n, h in cluster.handles.items()}
        assert tasks[by_unit[f"{name}-cpu-0"]] == ("256", "512", "dask-deploy:test", "FARGATE")
        assert tasks[by_unit[f"{name}-big-1"]] == ("512", "1024", "dask-deploy:big", "FARGATE_SPOT")
        family = f"dask-deploy-fargate-{name}-worker"
        (ecs_cluster,) = ecs.describe_clusters(clusters=[cluster.backend.cluster_arn])["clusters"]
        assert set(ecs_cluster["capacityProviders"]) == {"FARGATE", "FARGATE_SPOT"}
        assert len(ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]) == 2

        cluster.scale(2, pool="big")
        wait_until(lambda: len(running()) == 3, what="a second task of pool big")
        assert sorted(running().values()) == [("256", "512", "dask-deploy:test", "FARGATE"),
                                              *[("512", "1024", "dask-deploy:big", "FARGATE_SPOT")] * 2]
        cluster.scale(0, pool="big")
        wait_until(lambda: list(running()) == [by_unit[f"{name}-cpu-0"]],
                   what="pool big's tasks stopped, pool cpu's untouched")
        assert len(client.scheduler_info()["workers"]) == 1
    assert ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"] == []
    assert discover("fargate", name) == []
