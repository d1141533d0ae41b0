"""A small HTTP + websocket reverse proxy for the scheduler's dashboard.

It runs in the client process, bound to 127.0.0.1 by default, and forwards to wherever the
backend's ``deploy_dashboard_route`` says the dashboard is (a direct address, the local end
of an SSH forward, a port-forward). Binding to any other address needs a token: a browser
opens ``/?token=...`` once and gets a cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Any

import aiohttp
from aiohttp import web

from ._errors import SpecError
from .toolkit import is_loopback

__all__ = ["DashboardProxy"]

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}
_COOKIE = "dask_deploy_token"


class DashboardProxy:
    """Forward ``http://host:port/...`` (and websockets) to ``target``."""

    def __init__(self, target: str, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None) -> None:
        if not is_loopback(host) and not token:
            raise SpecError("dashboard_proxy_address", f"{host}:{port}",
                            "binding the dashboard proxy beyond loopback needs a token "
                            "(dashboard_token=..., or DASK_DEPLOY_DASHBOARD_TOKEN / --dashboard-token-file "
                            "on the command line), or bind it to 127.0.0.1")
        self.target = target.rstrip("/")
        self.host, self.port, self.token = host, port, token
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server: Any = site._server  # aiohttp keeps the bound socket here only
        self.port = server.sockets[0].getsockname()[1]
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _authorised(self, request: web.Request) -> bool:
        if not self.token:
            return True
        given = request.query.get("token") or request.cookies.get(_COOKIE, "")
        return hmac.compare_digest(given, self.token)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.Response(status=403, text="dask-deploy dashboard proxy: missing or wrong token")
        url = self.target + request.rel_url.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self._websocket(request, url, headers)
        assert self._session is not None
        async with self._session.request(request.method, url, headers=headers,
                                         data=await request.read(), allow_redirects=False) as up:
            response = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in _HOP - {"content-encoding"}})
            if self.token and "token" in request.query:
                response.set_cookie(_COOKIE, self.token, httponly=True, samesite="Strict")
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _websocket(self, request: web.Request, url: str, headers: dict[str, str]
                         ) -> web.StreamResponse:
        assert self._session is not None
        return await pipe_websocket(self._session, request, url, headers)


async def pipe_websocket(session: aiohttp.ClientSession, request: web.Request, url: str,
                         headers: dict[str, str]) -> web.WebSocketResponse:
    """Answer the websocket ``request`` by relaying it, both ways, to ``url`` (http form)."""
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                 if p.strip()]
    headers = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
    async with session.ws_connect("ws" + url[4:], headers=headers, protocols=protocols,
                                  max_msg_size=0) as upstream:
        down = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                     max_msg_size=0)
        await down.prepare(request)

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                else:
                    break

        tasks = [asyncio.ensure_future(pump(down, upstream)),
                 asyncio.ensure_future(pump(upstream, down))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        await down.close()
        return down
