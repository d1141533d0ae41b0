"""The emulator's node: a "process kubelet" that runs containers as local processes, and kube-proxy.

There is no container runtime here, so the image is not run: each container's ``command``
(+ ``args``, with ``$(VAR)`` expanded as the real kubelet does) runs as a subprocess in its
own session, with the pod's env (``value``, ``fieldRef``, ``secretKeyRef``,
``configMapKeyRef``, ``envFrom``). Each pod gets its own loopback address ``127.N.x.y`` as
``status.podIP`` (the processes share this machine's network, so they must bind to it).

Deviations, on purpose and documented: there are no mount namespaces, so a volume
(``secret``, ``configMap``, ``emptyDir``) is written to the pod's directory and every
``command``/``args``/env value that starts with a ``mountPath`` is rewritten to point there.
An image whose registry host ends in ``.invalid`` cannot be pulled (``ErrImagePull`` then
``ImagePullBackOff``); every other image "pulls" at once. A pod is scheduled only if the
node's ``capacity`` covers the requests of all its bound pods (else ``Unschedulable``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import os
import random
import re
import shutil
import signal
import tempfile
from collections.abc import Mapping
from typing import Any

from ._apiserver import endpoint
from ._store import ApiError, Event, Obj, Store, now_iso

__all__ = ["LogSource", "Network", "ProcessKubelet", "ServiceProxy", "quantity"]

GPU = "nvidia.com/gpu"
_UNITS = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value: object) -> float:
    """A Kubernetes quantity (``"500m"``, ``"2Gi"``, ``4``) as a number."""
    m = re.match(r"^\s*([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$", str(value))
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"not a quantity: {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


class Network:
    """Loopback addresses: pods from ``127.N.0.2`` up, services from ``127.N.255.1`` up."""

    def __init__(self, net: int | None = None) -> None:
        self.net = net if net is not None else random.randrange(16, 250)
        self._pods = 2
        self._services = 1

    def pod_ip(self) -> str:
        while self._pods % 256 in (0, 255):
            self._pods += 1
        n, self._pods = self._pods, self._pods + 1
        if n >= 255 * 256:
            raise RuntimeError("the emulated network ran out of pod addresses")
        return f"127.{self.net}.{n // 256}.{n % 256}"

    def service_ip(self) -> str:
        n, self._services = self._services, self._services + 1
        if n > 254:
            raise RuntimeError("the emulated network ran out of service addresses")
        return f"127.{self.net}.255.{n}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


class ServiceProxy:
    """kube-proxy: each Service's ``clusterIP:port`` forwards TCP to a ready pod behind it.

    A Service listens only while it has a ready endpoint, so that a connection to one
    without any is refused, as with the real kube-proxy's REJECT rule.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.servers: dict[str, list[asyncio.Server]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = False
        store.listeners.append(self._on_event)

    def _on_event(self, ev: Event) -> None:
        if ev.resource in ("pods", "services") and not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._sync)

    def _sync(self) -> None:
        self._pending = False
        current = {}
        for svc in self.store.items("services"):
            ports = svc["spec"].get("ports") or []
            if svc["spec"].get("clusterIP") not in (None, "None") and any(
                    endpoint(self.store, svc, p) for p in ports):
                current[svc["metadata"]["uid"]] = svc
        for uid in list(self.servers):
            if uid not in current:
                for server in self.servers.pop(uid):
                    server.close()
        for uid, svc in current.items():
            if uid not in self.servers:
                self.servers[uid] = []
                task = asyncio.ensure_future(self._listen(svc, self.servers[uid]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _listen(self, svc: Obj, servers: list[asyncio.Server]) -> None:
        uid, ns, name = svc["metadata"]["uid"], svc["metadata"]["namespace"], svc["metadata"]["name"]
        for port in svc["spec"].get("ports") or []:
            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                             number: int = port["port"]) -> None:
                await self._forward(r, w, ns, name, uid, number)

            server = await asyncio.start_server(handle, svc["spec"]["clusterIP"], port["port"])
            if self.servers.get(uid) is not servers:  # closed meanwhile
                server.close()
                return
            servers.append(server)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       ns: str, name: str, uid: str, number: int) -> None:
        svc = self.store.find("services", ns, name)
        target = None
        if svc is not None and svc["metadata"]["uid"] == uid:
            port = next(p for p in svc["spec"]["ports"] if p["port"] == number)
            target = endpoint(self.store, svc, port)
        try:
            if target is None:
                raise ConnectionRefusedError("no endpoints")
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def close(self) -> None:
        for servers in self.servers.values():
            for server in servers:
                server.close()
        self.servers.clear()
        for task in self._tasks:
            task.cancel()


class LogSource:
    """The output of one run of one container; ``changed`` is notified on every append."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = False
        self.changed = asyncio.Condition()

    async def append(self, chunk: bytes, done: bool = False) -> None:
        async with self.changed:
            self.data += chunk
            self.done = self.done or done
            self.changed.notify_all()


class _Container:
    def __init__(self, spec: Obj) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.proc: asyncio.subprocess.Process | None = None
        self.runs: list[LogSource] = []
        self.restarts = 0
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.exit_code: int | None = None

    def status(self) -> Obj:
        image = self.spec["image"]
        out: Obj = {"name": self.name, "image": image, "imageID": "", "ready": "running" in self.state,
                    "restartCount": self.restarts, "started": "running" in self.state,
                    "state": self.state, "lastState": self.last_state}
        if self.runs:
            out["imageID"] = f"emulated://{image}"
        if self.proc is not None:
            out["containerID"] = f"process://{self.proc.pid}"
        return out


class _Pod:
    def __init__(self, obj: Obj, ip: str, root: str) -> None:
        meta = obj["metadata"]
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.ip = ip
        self.dir = os.path.join(root, f"{self.ns}_{self.name}_{self.uid[:8]}")
        self.containers = {c["name"]: _Container(c) for c in obj["spec"]["containers"]}
        self.restart_policy = obj["spec"].get("restartPolicy", "Always")
        self.deleting = asyncio.Event()
        self.grace = 30.0
        self.task: asyncio.Task[None] | None = None
        self.started = now_iso()
        self.mounts: dict[str, str] = {}
        self.devices: dict[str, str] = {}  # container -> GPU ids
        self.envs: dict[str, dict[str, str]] = {}


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion; ``$$`` escapes a dollar; unknown names stay."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


class ProcessKubelet:
    """One node, ``node_name``, that runs every pod the store gets as local processes."""

    def __init__(self, store: Store, network: Network, *, node_name: str = "emulated-node",
                 capacity: Mapping[str, object] | None = None, workdir: str | None = None,
                 backoff: tuple[float, float] = (1.0, 10.0)) -> None:
        self.store, self.network, self.node_name = store, network, node_name
        self.capacity = {"cpu": 64.0, "memory": float(256 * 2**30), "pods": 110.0}
        self.capacity.update({k: quantity(v) for k, v in (capacity or {}).items()})
        self.root = workdir or tempfile.mkdtemp(prefix="k8s-emulator-")
        self.backoff = backoff
        self.pods: dict[str, _Pod] = {}
        self.unscheduled: dict[str, tuple[str, str]] = {}
        #: The device plugin: which pod (uid) holds each of the node's GPUs (None: free).
        self.gpus: dict[str, str | None] = {str(i): None for i in range(int(self.capacity.get(GPU, 0)))}
        self._schedule_pending = False
        store.listeners.append(self._on_event)

    # -- events and scheduling ------------------------------------------------------------

    def _on_event(self, ev: Event) -> None:
        if ev.resource != "pods":
            return
        meta = ev.obj["metadata"]
        uid = meta["uid"]
        if ev.type == "ADDED" and not ev.obj["spec"].get("nodeName"):
            self.unscheduled[uid] = (meta["namespace"], meta["name"])
            self._schedule_soon()
        elif ev.type == "DELETED":
            self.unscheduled.pop(uid, None)
            pod = self.pods.get(uid)
            if pod is not None:
                pod.grace = 0
                pod.deleting.set()
            self._schedule_soon()
        elif ev.type == "MODIFIED" and meta.get("deletionTimestamp") and uid in self.pods:
            pod = self.pods[uid]
            pod.grace = min(pod.grace, float(meta.get("deletionGracePeriodSeconds", 30)))
            pod.deleting.set()
        elif ev.type == "MODIFIED" and ev.obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            self._schedule_soon()

    def _schedule_soon(self) -> None:
        if not self._schedule_pending:
            self._schedule_pending = True
            asyncio.get_running_loop().call_soon(self._schedule)

    @staticmethod
    def _requests(pod: Obj) -> dict[str, float]:
        out: dict[str, float] = {"pods": 1.0}
        for c in pod["spec"]["containers"]:
            res = c.get("resources") or {}
            requests, limits = res.get("requests") or {}, res.get("limits") or {}
            for key in {*requests, *limits}:
                out[key] = out.get(key, 0.0) + quantity(requests.get(key, limits.get(key)))
        return out

    def _schedule(self) -> None:
        self._schedule_pending = False
        used: dict[str, float] = {}
        for pod in self.pods.values():
            obj = self.store.find("pods", pod.ns, pod.name)
            if obj is not None and obj["status"].get("phase") not in ("Succeeded", "Failed"):
                for key, value in self._requests(obj).items():
                    used[key] = used.get(key, 0.0) + value
        for uid, (ns, name) in list(self.unscheduled.items()):
            obj = self.store.find("pods", ns, name)
            if obj is None or obj["metadata"]["uid"] != uid:
                del self.unscheduled[uid]
                continue
            want = self._requests(obj)
            short = sorted(k for k, v in want.items()
                           if v > 0 and used.get(k, 0.0) + v > self.capacity.get(k, 0.0))
            if short:
                message = "0/1 nodes are available: " + ", ".join(f"1 Insufficient {k}" for k in short) + "."
                self.store.set_status("pods", ns, name, {**obj["status"], "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": message, "lastTransitionTime": now_iso()}]})
                continue
            del self.unscheduled[uid]
            for key, value in want.items():
                used[key] = used.get(key, 0.0) + value
            pod = _Pod(obj, self.network.pod_ip(), self.root)
            self._allocate_gpus(pod)
            self.pods[uid] = pod
            self._publish(pod, bind=True)
            pod.task = asyncio.ensure_future(self._run(pod))

    # -- status ---------------------------------------------------------------------------

    def _publish(self, pod: _Pod, bind: bool = False) -> None:
        obj = self.store.find("pods", pod.ns, pod.name)
        if obj is None or obj["metadata"]["uid"] != pod.uid:
            return
        statuses = [c.status() for c in pod.containers.values()]
        states = [c.state for c in pod.containers.values()]
        if all("terminated" in s for s in states):
            failed = any(s["terminated"]["exitCode"] != 0 for s in states)
            phase = "Failed" if failed else "Succeeded"
        elif any(c.runs for c in pod.containers.values()):
            phase = "Running"
        else:
            phase = "Pending"
        ready = all(s["ready"] for s in statuses) and phase == "Running"
        t = now_iso()
        status: Obj = {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": pod.ip, "podIPs": [{"ip": pod.ip}],
            "startTime": pod.started, "qosClass": obj["status"].get("qosClass", "BestEffort"),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": pod.started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": pod.started},
                {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": t},
                {"type": "Ready", "status": str(ready), "lastTransitionTime": t},
            ],
            "containerStatuses": statuses,
        }
        old = obj.get("status", {})
        for cond in status["conditions"]:  # transition times change only with the status
            prev = next((c for c in old.get("conditions", []) if c["type"] == cond["type"]), None)
            if prev is not None and prev["status"] == cond["status"] and "lastTransitionTime" in prev:
                cond["lastTransitionTime"] = prev["lastTransitionTime"]
        self.store.set_status("pods", pod.ns, pod.name, status,
                              {"nodeName": self.node_name} if bind else None)

    def _wait_state(self, pod: _Pod, reason: str, message: str, names: list[str] | None = None) -> None:
        for c in pod.containers.values():
            if names is None or c.name in names:
                c.state = {"waiting": {"reason": reason, "message": message}}
        self._publish(pod)

    # -- running a pod --------------------------------------------------------------------

    async def _sleep_unless_deleted(self, pod: _Pod, seconds: float) -> bool:
        """Sleep; True if the pod is being deleted."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pod.deleting.wait(), seconds)
        return pod.deleting.is_set()

    async def _run(self, pod: _Pod) -> None:
        try:
            obj = self.store.find("pods", pod.ns, pod.name)
            supervisor = None
            if obj is not None and await self._prepare(pod, obj):
                supervisor = asyncio.ensure_future(self._supervise(pod, obj))
            await pod.deleting.wait()
            await self._stop(pod)
            if supervisor is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(supervisor, 15)
                pod.grace = 0
                await self._stop(pod)  # a process that started while we were stopping
        finally:
            self.pods.pop(pod.uid, None)
            for device, holder in self.gpus.items():
                if holder == pod.uid:
                    self.gpus[device] = None
            with contextlib.suppress(ApiError):
                current = self.store.find("pods", pod.ns, pod.name)
                if current is not None and current["metadata"]["uid"] == pod.uid:
                    self.store.remove("pods", pod.ns, pod.name)
            shutil.rmtree(pod.dir, ignore_errors=True)

    async def _prepare(self, pod: _Pod, obj: Obj) -> bool:
        """Pull images and mount volumes; False if the pod was deleted first."""
        bad = [c for c in pod.containers.values()
               if c.spec["image"].split("/")[0].split(":")[0].endswith(".invalid")]
        if bad:
            for reason in ("ErrImagePull", "ImagePullBackOff"):
                for c in bad:
                    image = c.spec["image"]
                    message = (f'failed to pull and unpack image "{image}": failed to resolve '
                               f'reference "{image}": no such host' if reason == "ErrImagePull"
                               else f'Back-off pulling image "{image}"')
                    self._wait_state(pod, reason, message, [c.name])
                if await self._sleep_unless_deleted(pod, self.backoff[0]):
                    return False
            await pod.deleting.wait()
            return False
        while True:
            try:
                pod.mounts = self._volumes(pod, obj)
                pod.envs = {c.name: self._env(pod, obj, c.spec) for c in pod.containers.values()}
                return True
            except _NotReady as e:
                self._wait_state(pod, e.reason, str(e))
            if await self._sleep_unless_deleted(pod, 0.5):
                return False

    def _lookup(self, resource: str, ns: str, name: str, key: str | None, optional: bool) -> Any:
        obj = self.store.find(resource, ns, name)
        if obj is None:
            if optional:
                return None
            raise _NotReady("CreateContainerConfigError", f'{resource[:-1]} "{name}" not found')
        data = obj.get("data") or {}
        if resource == "secrets":
            data = {k: base64.b64decode(v) for k, v in data.items()}
        else:
            data = {k: v.encode() for k, v in data.items()}
        if key is None:
            return data
        if key not in data:
            if optional:
                return None
            raise _NotReady("CreateContainerConfigError",
                            f"couldn't find key {key} in {resource[:-1]} {ns}/{name}")
        return data[key]

    def _volumes(self, pod: _Pod, obj: Obj) -> dict[str, str]:
        out = {}
        for vol in obj["spec"].get("volumes") or []:
            path = os.path.join(pod.dir, "volumes", vol["name"])
            os.makedirs(path, mode=0o755, exist_ok=True)
            if "emptyDir" in vol:
                pass
            elif "secret" in vol or "configMap" in vol:
                src = vol.get("secret") or vol["configMap"]
                resource = "secrets" if "secret" in vol else "configmaps"
                name = src.get("secretName") or src.get("name")
                data = self._lookup(resource, pod.ns, name, None, src.get("optional", False)) or {}
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] not in data:
                        raise _NotReady("ContainerCreating", f"key {item['key']} not in {name}")
                    target = os.path.join(path, item["path"])
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with open(target, "wb") as f:
                        f.write(data[item["key"]])
                    os.chmod(target, item.get("mode", src.get("defaultMode", 0o644)))
            else:
                raise _NotReady("CreateContainerConfigError",
                                f"volume {vol['name']}: the emulator supports secret, configMap "
                                "and emptyDir volumes only")
            out[vol["name"]] = path
        return out

    def _env(self, pod: _Pod, obj: Obj, spec: Obj) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in spec.get("envFrom") or []:
            ref = src.get("secretRef") or src.get("configMapRef") or {}
            resource = "secrets" if "secretRef" in src else "configmaps"
            data = self._lookup(resource, pod.ns, ref["name"], None, ref.get("optional", False)) or {}
            env.update({src.get("prefix", "") + k: v.decode() for k, v in data.items()})
        fields = {"metadata.name": pod.name, "metadata.namespace": pod.ns, "metadata.uid": pod.uid,
                  "status.podIP": pod.ip, "status.hostIP": "127.0.0.1", "spec.nodeName": self.node_name,
                  "spec.serviceAccountName": obj["spec"].get("serviceAccountName", "default")}
        for var in spec.get("env") or []:
            if "valueFrom" not in var:
                env[var["name"]] = _expand(str(var.get("value", "")), env)
                continue
            src = var["valueFrom"]
            if "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
                if m:
                    env[var["name"]] = (obj["metadata"].get(m.group(1)) or {}).get(m.group(2), "")
                elif path in fields:
                    env[var["name"]] = fields[path]
                else:
                    raise _NotReady("CreateContainerConfigError", f"unsupported fieldPath {path}")
            elif "secretKeyRef" in src or "configMapKeyRef" in src:
                ref = src.get("secretKeyRef") or src["configMapKeyRef"]
                resource = "secrets" if "secretKeyRef" in src else "configmaps"
                value = self._lookup(resource, pod.ns, ref["name"], ref["key"], ref.get("optional", False))
                if value is not None:
                    env[var["name"]] = value.decode()
            else:
                raise _NotReady("CreateContainerConfigError", f"unsupported valueFrom in {var['name']}")
        return env

    def _command(self, pod: _Pod, spec: Obj, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        mounts = {}
        for m in spec.get("volumeMounts") or []:
            path = pod.mounts.get(m["name"])
            if path is None:
                raise _NotReady("CreateContainerConfigError", f"volume {m['name']} not found")
            mounts[m["mountPath"].rstrip("/")] = os.path.join(path, m.get("subPath", ""))

        def remap(text: str) -> str:
            for mount, real in mounts.items():
                if text == mount or text.startswith(mount + "/"):
                    return real + text[len(mount):]
            return text

        argv = [remap(_expand(a, env)) for a in [*(spec.get("command") or []), *(spec.get("args") or [])]]
        if not argv:
            raise _NotReady("CreateContainerError",
                            "the emulated kubelet cannot run an image's entrypoint: set command")
        tmp = os.path.join(pod.dir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        base = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": pod.dir,
                "HOSTNAME": pod.name, "TMPDIR": tmp, "LANG": "C.UTF-8"}
        devices = pod.devices.get(spec["name"])
        plugin = {"NVIDIA_VISIBLE_DEVICES": devices, "CUDA_VISIBLE_DEVICES": devices} if devices else {}
        return argv, {**base, **{k: remap(v) for k, v in env.items()}, **plugin}

    def _allocate_gpus(self, pod: _Pod) -> None:
        """The NVIDIA device plugin's part: give each container the GPUs its limits ask for.

        A real container sees only its devices; processes here see the whole machine, so
        the plugin's ``NVIDIA_VISIBLE_DEVICES`` is mirrored into ``CUDA_VISIBLE_DEVICES``.
        The scheduler already checked that enough are free.
        """
        for c in pod.containers.values():
            limits = (c.spec.get("resources") or {}).get("limits") or {}
            want = int(quantity(limits.get(GPU, 0)))
            free = [d for d, holder in self.gpus.items() if holder is None][:want]
            for d in free:
                self.gpus[d] = pod.uid
            if free:
                pod.devices[c.name] = ",".join(free)

    async def _start(self, pod: _Pod, c: _Container) -> None:
        run = LogSource()
        c.runs.append(run)
        c.exit_code = None
        try:
            argv, env = self._command(pod, c.spec, pod.envs[c.name])
            cwd = c.spec.get("workingDir") or pod.dir
            c.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd if os.path.isdir(cwd) else pod.dir,
                start_new_session=True, preexec_fn=_die_with_parent)
        except (OSError, _NotReady) as e:
            c.proc = None
            c.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": (
                f"failed to start container {c.name}: {e}"), "startedAt": now_iso(),
                "finishedAt": now_iso()}}
            await run.append(b"", done=True)
            return
        c.state = {"running": {"startedAt": now_iso()}}

    async def _wait(self, c: _Container) -> int:
        run, proc = c.runs[-1], c.proc
        if proc is None:
            return 128
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            await run.append(chunk)
        code = await proc.wait()
        await run.append(b"", done=True)
        code = 128 - code if code < 0 else code
        c.exit_code = code
        c.state = {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.state.get("running", {}).get("startedAt", now_iso()),
            "finishedAt": now_iso(), "containerID": f"process://{proc.pid}"}}
        return code

    async def _supervise(self, pod: _Pod, obj: Obj) -> None:
        async def one(c: _Container) -> None:
            while not pod.deleting.is_set():
                await self._start(pod, c)
                self._publish(pod)
                code = await self._wait(c) if c.proc is not None else 128
                if pod.deleting.is_set() or pod.restart_policy == "Never" or \
                        (pod.restart_policy == "OnFailure" and code == 0):
                    break
                delay = min(self.backoff[0] * 2 ** c.restarts, self.backoff[1])
                c.last_state, c.restarts = c.state, c.restarts + 1
                c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                    f"back-off {delay:g}s restarting failed container={c.name} pod={pod.name}")}}
                self._publish(pod)
                if await self._sleep_unless_deleted(pod, delay):
                    break
            self._publish(pod)

        await asyncio.gather(*(one(c) for c in pod.containers.values()))

    async def _stop(self, pod: _Pod) -> None:
        """SIGTERM each container's process group, SIGKILL after the grace period."""
        procs = [c.proc for c in pod.containers.values() if c.proc and c.proc.returncode is None]
        for sig, wait in ((signal.SIGTERM, pod.grace), (signal.SIGKILL, 10.0)):
            alive = [p for p in procs if p.returncode is None]
            if not alive:
                break
            for p in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in alive)), wait)
        for p in procs:  # the group may hold more than the leader
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)

    # -- logs and shutdown ----------------------------------------------------------------

    def log_source(self, obj: Obj, container: str, previous: bool = False) -> LogSource:
        pod = self.pods.get(obj["metadata"]["uid"])
        name = obj["metadata"]["name"]
        c = pod.containers.get(container) if pod else None
        if c is None or not c.runs:
            state = (c.state if c else {}).get("waiting", {}).get("reason", "ContainerCreating")
            raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: {state}')
        if previous:
            if len(c.runs) < 2:
                raise ApiError(400, f'previous terminated container "{container}" in pod "{name}" not found')
            return c.runs[-2]
        return c.runs[-1]

    async def close(self) -> None:
        """Kill every pod's processes (the emulator is going away)."""
        for pod in list(self.pods.values()):
            pod.grace = 0
            pod.deleting.set()
        tasks = [p.task for p in self.pods.values() if p.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)


class _NotReady(Exception):
    """A pod cannot start yet (missing secret or key): retried, shown as a waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
