"""The emulator put together: store + HTTP + kubelet + kube-proxy, in-process or as a subprocess."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from ._apiserver import ApiHandler
from ._kubelet import Network, ProcessKubelet, ServiceProxy
from ._store import Store

__all__ = ["ApiServer", "Emulator", "kubeconfig"]

T = TypeVar("T")


def kubeconfig(url: str, namespace: str = "default", token: str | None = None,
               ca: str | None = None) -> dict[str, Any]:
    """A kubeconfig (as a dict; JSON is YAML) with one context pointing at ``url``.

    ``ca`` is the server's certificate (PEM) for an ``https://`` URL.
    """
    cluster: dict[str, Any] = {"server": url}
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator", "preferences": {},
        "clusters": [{"name": "emulator", "cluster": cluster}],
        "users": [{"name": "emulator", "user": {"token": token} if token else {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator",
                                                      "namespace": namespace}}],
    }


def self_signed(host: str) -> tuple[str, str]:
    """A certificate (and key) for ``host``, PEM, that clients trust as their CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-emulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, True, False, False, False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


class ApiServer:
    """An emulated Kubernetes API server with one process-kubelet node, on this event loop.

    ``async with ApiServer() as api: api.url``. ``kubelet=False`` gives an API server whose
    pods are never scheduled (for pure API tests); ``capacity`` sets the node's allocatable
    resources (e.g. ``{"nvidia.com/gpu": 2}``); ``history`` bounds the events a watch can
    resume from; ``token`` requires ``Authorization: Bearer <token>``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None,
                 history: int = 1000, kubelet: bool = True, capacity: Mapping[str, object] | None = None,
                 network: Network | None = None, workdir: str | None = None, tls: bool = True,
                 namespaces: tuple[str, ...] = ("default", "kube-system", "kube-public"),
                 audit_log: str | None = None) -> None:
        self.host, self.port, self.token = host, port, token
        self.ca: str | None = None
        self._key: str | None = None
        if tls:
            self.ca, self._key = self_signed(host)
        self.network = network or Network()
        self.store = Store(history, service_ip=self.network.service_ip)
        self.kubelet = ProcessKubelet(self.store, self.network, capacity=capacity,
                                      workdir=workdir) if kubelet else None
        self.proxy: ServiceProxy | None = None
        self._audit_file = open(audit_log, "a", buffering=1) if audit_log else None  # noqa: SIM115
        self.handler = ApiHandler(self.store, self.kubelet, token, lambda: f"{self.host}:{self.port}",
                                  self._audit if audit_log else None)
        self._namespaces = namespaces
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}:{self.port}"

    def _ssl(self) -> ssl.SSLContext | None:
        if self.ca is None or self._key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "server.pem")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write(self.ca + self._key)
            ctx.load_cert_chain(path)
        return ctx

    async def start(self) -> ApiServer:
        self.proxy = ServiceProxy(self.store)
        for ns in self._namespaces:
            self.store.create("namespaces", "", {"metadata": {"name": ns}})
        self._runner = web.AppRunner(self.handler.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl())
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    def _audit(self, attributes: dict[str, str]) -> None:
        assert self._audit_file is not None
        self._audit_file.write(json.dumps(attributes) + "\n")

    async def close(self) -> None:
        if self._audit_file is not None:
            self._audit_file.close()
        if self.kubelet is not None:
            await self.kubelet.close()
        if self.proxy is not None:
            self.proxy.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ApiServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m dask_deploy_testing.k8s``: serve until stdin closes or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m dask_deploy_testing.k8s",
                                     description="An emulated Kubernetes API server with a process kubelet")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument("--history", type=int, default=1000, help="events a watch can resume from")
    parser.add_argument("--capacity", action="append", default=[], metavar="RESOURCE=QUANTITY")
    parser.add_argument("--no-kubelet", action="store_true", help="never schedule pods")
    parser.add_argument("--audit-log", default=None,
                        help="append each request's RBAC attributes to this file (JSON lines)")
    args = parser.parse_args(argv)
    capacity = dict(c.split("=", 1) for c in args.capacity)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_reader(sys.stdin.fileno(), lambda: None if os.read(sys.stdin.fileno(), 4096) else stop.set())
        api = ApiServer(args.host, args.port, token=args.token, history=args.history,
                        kubelet=not args.no_kubelet, capacity=capacity, audit_log=args.audit_log)
        await api.start()
        print(json.dumps({"url": api.url, "pid": os.getpid(), "ca": api.ca}), flush=True)
        try:
            await stop.wait()
        finally:
            await api.close()

    asyncio.run(serve())


class Emulator:
    """Runs the emulator as a subprocess (its own interpreter) and writes a kubeconfig for it.

    The subprocess exits when our end of its stdin closes, so it cannot outlive the tests.
    """

    def __init__(self, workdir: str, *, token: str | None = "emulator-token", namespace: str = "default",
                 capacity: Mapping[str, object] | None = None, history: int | None = None,
                 python: str = sys.executable) -> None:
        self.workdir, self.token, self.namespace = workdir, token, namespace
        self.capacity, self.history, self.python = dict(capacity or {}), history, python
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.kubeconfig = os.path.join(workdir, "kubeconfig")
        self.log = os.path.join(workdir, "emulator.log")
        #: The RBAC attributes of every request, one JSON object a line (see :meth:`requests`).
        self.audit_log = os.path.join(workdir, "audit.jsonl")

    def start(self, timeout: float = 60) -> Emulator:
        cmd = [self.python, "-m", "dask_deploy_testing.k8s", "--audit-log", self.audit_log]
        if self.token:
            cmd += ["--token", self.token]
        if self.history:
            cmd += ["--history", str(self.history)]
        for key, value in self.capacity.items():
            cmd += ["--capacity", f"{key}={value}"]
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                with open(self.log, errors="replace") as f:
                    raise RuntimeError(f"the API server emulator did not start; its log:\n{f.read()}")
            if select.select([self.proc.stdout], [], [], min(left, 0.5))[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                line += chunk
                if not chunk:
                    continue
        hello = json.loads(line)
        self.url = hello["url"]
        with open(self.kubeconfig, "w") as f:
            json.dump(kubeconfig(self.url, self.namespace, self.token, hello["ca"]), f)
        return self

    def backend_options(self, **extra: Any) -> dict[str, Any]:
        """Options for ``Cluster.from_name("k8s", ...)`` against this emulator.

        ``python`` is this interpreter (the kubelet ignores images), and a scheduler pod listens
        on its pod's address (``$(POD_IP)``), its dashboard too: pods share this machine's
        network here, so binding 0.0.0.0 (or the pod's 127.0.0.1) as in a real pod would clash
        and would leave loopback.
        """
        return {"kubeconfig": self.kubeconfig, "python": sys.executable, "listen_address": "$(POD_IP)",
                "dashboard_listen_address": "$(POD_IP)", **extra}

    def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``await fn(CoreV1Api)`` against this emulator (for sync tests, in a new loop)."""
        async def go() -> T:
            from kubernetes_asyncio import client, config

            cfg = type.__call__(client.Configuration)
            await config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg,
                                          persist_config=False)
            async with client.ApiClient(cfg) as api:
                return await fn(client.CoreV1Api(api))

        return asyncio.run(go())

    def requests(self) -> list[dict[str, str]]:
        """Every request so far as RBAC sees it: ``{"verb", "resource", "subresource", "namespace"}``."""
        try:
            with open(self.audit_log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self.proc = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
