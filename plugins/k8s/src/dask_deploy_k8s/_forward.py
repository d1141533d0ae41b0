"""``kubectl port-forward`` in-process: a local listener tunnelled to a pod port via the API server.

Each accepted connection opens one websocket to ``pods/NAME/portforward?ports=PORT``
(protocol ``v4.channel.k8s.io``): every frame starts with a channel byte, channel 0 carries
data, channel 1 errors, and the first frame of each carries the port number. It needs only
the ``pods/portforward`` permission, so the client can reach a scheduler behind a ClusterIP
Service without any ingress, node port or load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType

__all__ = ["PortForward"]

logger = logging.getLogger(__name__)


class PortForward:
    """Listens on ``127.0.0.1:<port>`` and forwards each connection to ``pod:remote_port``."""

    def __init__(self, ws_api: Any, namespace: str, pod: str, remote_port: int) -> None:
        self.ws_api, self.namespace, self.pod, self.remote_port = ws_api, namespace, pod, remote_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._tunnel(reader, writer)
        except asyncio.CancelledError:
            pass  # closed by us: the task ends here (a stream callback must not see it)
        except Exception as e:
            logger.debug("port-forward to %s:%s failed: %s", self.pod, self.remote_port, e)
        finally:
            self._conns.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ctx = await self.ws_api.connect_get_namespaced_pod_portforward(
            self.pod, self.namespace, ports=self.remote_port, _preload_content=False)
        async with ctx as ws:
            async def upstream() -> None:
                with contextlib.suppress(Exception):
                    while chunk := await reader.read(65536):
                        await ws.send_bytes(b"\x00" + chunk)
                with contextlib.suppress(Exception):
                    await ws.close()

            up = asyncio.ensure_future(upstream())
            headers = {0, 1}  # the first frame of each channel is the port number
            try:
                async for msg in ws:
                    if msg.type != WSMsgType.BINARY or not msg.data:
                        continue
                    channel, payload = msg.data[0], msg.data[1:]
                    if channel in headers:
                        headers.discard(channel)
                        continue
                    if channel == 0:
                        writer.write(payload)
                        await writer.drain()
                    elif channel == 1 and payload:
                        logger.debug("port-forward %s:%s: %s", self.pod, self.remote_port,
                                     payload.decode(errors="replace"))
                        break
            finally:
                up.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await up

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=5)
