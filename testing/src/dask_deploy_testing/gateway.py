"""A real dask-gateway server on 127.0.0.1 for tests and benchmarks.

``dask-gateway-server`` (its Go proxy ships in the wheel) with ``UnsafeLocalBackend`` (the
scheduler and workers run as this user, as local processes) and ``SimpleAuthenticator``
(HTTP basic auth with one shared password). The scheduler and worker commands are this
interpreter's ``python -m distributed.cli.dask_*``: the server's default ``dask-scheduler`` /
``dask-worker`` commands no longer exist in current distributed.

One cluster option, ``worker_threads`` (1-4), is exposed so that tests can check that
options reach the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from .net import free_port

__all__ = ["GatewayServer"]

PASSWORD = "dask-deploy-test"

CONFIG = """
from dask_gateway_server.options import Options, Integer
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{http}"
c.Proxy.tcp_address = "127.0.0.1:{tcp}"
c.DaskGateway.log_level = "INFO"
c.ClusterConfig.scheduler_cmd = [{python!r}, "-m", "distributed.cli.dask_scheduler"]
# No worker dashboard (the server still passes --dashboard-address; no test reads it): its
# bokeh import doubled each worker's start, 2.5 instead of 1.2 CPU-s (measured here).
c.ClusterConfig.worker_cmd = [{python!r}, "-m", "distributed.cli.dask_worker", "--no-dashboard"]
c.ClusterConfig.worker_threads = 1
c.ClusterConfig.worker_memory = 0.5
c.ClusterConfig.idle_timeout = 600
# Notice dead workers and clusters within seconds, not the defaults' tens of seconds.
c.UnsafeLocalBackend.cluster_heartbeat_period = 2
c.UnsafeLocalBackend.worker_status_period = 1
c.UnsafeLocalBackend.cluster_status_period = 1
c.UnsafeLocalBackend.check_timeouts_period = 1
c.UnsafeLocalBackend.sigint_timeout = 2
c.UnsafeLocalBackend.sigterm_timeout = 2
c.UnsafeLocalBackend.cluster_options = Options(
    Integer("worker_threads", default=1, min=1, max=4, label="Threads per worker"),
    handler=lambda options: {{"worker_threads": options.worker_threads}},
)
"""


class GatewayServer:
    """``with GatewayServer() as gw:`` a running server; ``gw.options()`` for the backend."""

    def __init__(self, directory: str | None = None, user: str = "dask-deploy") -> None:
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="dask-gateway-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.user = user
        self.api, self.http, self.tcp = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / "gateway.log"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def proxy_address(self) -> str:
        return f"gateway://127.0.0.1:{self.tcp}"

    def auth(self) -> Any:
        from dask_gateway.auth import BasicAuth

        return BasicAuth(self.user, PASSWORD)

    def options(self) -> dict[str, Any]:
        """The ``gateway`` backend's options that reach this server."""
        return {"address": self.address, "proxy_address": self.proxy_address, "auth": self.auth()}

    def auth_config(self) -> dict[str, Any]:
        """dask configuration under which ``auth="basic"`` reaches this server."""
        return {"gateway.auth.type": "basic",
                "gateway.auth.kwargs": {"username": self.user, "password": PASSWORD}}

    def auth_env(self) -> dict[str, str]:
        """The same as environment variables, for other interpreters (dask reads them)."""
        return {"DASK_GATEWAY__AUTH__TYPE": "basic",
                "DASK_GATEWAY__AUTH__KWARGS__USERNAME": self.user,
                "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": PASSWORD}

    def gateway_kwargs(self) -> dict[str, Any]:
        """The same, as ``dask_gateway.Gateway`` keyword arguments."""
        return self.options()

    def start(self, timeout: float = 60) -> GatewayServer:
        config = self.directory / "dask_gateway_config.py"
        config.write_text(CONFIG.format(password=PASSWORD, api=self.api, http=self.http,
                                        tcp=self.tcp, python=sys.executable))
        server = Path(sys.executable).with_name("dask-gateway-server")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(server), "-f", str(config)], cwd=self.directory,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=os.environ.copy(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"dask-gateway-server exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dask-gateway-server not healthy after {timeout}s:\n{self.log()}")
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/api/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the server; it stops the clusters it still runs first."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
