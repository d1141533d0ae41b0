"""The emulated API server's HTTP side (aiohttp): core/v1 REST, watch, logs and port-forward.

It answers what ``kubernetes-asyncio`` and ``kubectl --server`` send: discovery
(``/api``, ``/api/v1``, ``/apis``, ``/version``), list/watch/create/get/replace/patch/delete
and ``deletecollection`` for the kinds in :data:`~._store.KINDS`, the ``status``
subresource, ``pods/log`` (also ``follow=true``), ``pods/portforward`` (the websocket
``v4.channel.k8s.io`` protocol) and ``services/proxy``, with errors as ``Status`` objects.
JSON only; strategic merge patches are applied as JSON merge patches (lists are replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import ClientSession, WSMsgType, web

from ._store import KINDS, ApiError, Event, Kind, Obj, Store

__all__ = ["ApiHandler", "field_selector", "label_selector"]

# -- selectors -------------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(\s*([^)]*)\)\s*$")
_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")

Match = Callable[[Obj], bool]


def _split(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def _requirement(get: Callable[[Obj], str | None], values: set[str] | None, negate: bool) -> Match:
    """``get(obj)`` is in ``values`` (None: is present), negated if ``negate``."""
    def match(obj: Obj) -> bool:
        value = get(obj)
        return (value is not None if values is None else value in values) != negate

    return match


def _all(reqs: list[Match]) -> Match:
    return lambda obj: all(r(obj) for r in reqs)


def label_selector(text: str | None) -> Match:
    """``a=b,c!=d,e in (f,g),h notin (i),j,!k`` as a predicate on objects."""
    reqs: list[Match] = []
    for req in _split(text or ""):
        if m := _SET.match(req):
            values = {v.strip() for v in m.group(4).split(",") if v.strip()}
            reqs.append(_requirement(_label(m.group(1)), values, m.group(3) == "notin"))
        elif m := _EQ.match(req):
            reqs.append(_requirement(_label(m.group(1)), {m.group(4)}, m.group(3) == "!="))
        elif m := _EXISTS.match(req):
            reqs.append(_requirement(_label(m.group(2)), None, bool(m.group(1))))
        else:
            raise ApiError(400, f"unable to parse requirement: {req.strip()!r}")
    return _all(reqs)


def _label(key: str) -> Callable[[Obj], str | None]:
    return lambda obj: _labels(obj).get(key)


def _labels(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def _path(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_selector(text: str | None, kind: Kind) -> Match:
    """``metadata.name=x,status.phase!=Running``, only with the fields the real server supports."""
    reqs: list[Match] = []
    for req in _split(text or ""):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", req)
        if not m:
            raise ApiError(400, f"invalid field selector: {req.strip()!r}")
        field, op, value = m.groups()
        if field not in kind.fields:
            raise ApiError(400, f'field label not supported: {field}')
        reqs.append(_requirement(_field(field), {value}, op == "!="))
    return _all(reqs)


def _field(path: str) -> Callable[[Obj], str | None]:
    return lambda obj: _path(obj, path)


# -- patches ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # strategic merge directives: not supported, ignored
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(doc: Obj, ops: list[dict[str, Any]]) -> Obj:
    """RFC 6902 JSON patch (add, remove, replace, test)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        try:
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
            last = parts[-1]
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                elif op["op"] == "remove":
                    parent.pop(index)
                elif op["op"] == "replace":
                    parent[index] = op["value"]
                elif op["op"] == "test" and parent[index] != op["value"]:
                    raise ApiError(422, f"test operation failed at {op['path']}")
            elif op["op"] in ("add", "replace"):
                if op["op"] == "replace" and last not in parent:
                    raise KeyError(last)
                parent[last] = op["value"]
            elif op["op"] == "remove":
                del parent[last]
            elif op["op"] == "test" and parent.get(last) != op["value"]:
                raise ApiError(422, f"test operation failed at {op['path']}")
            elif op["op"] not in ("test",):
                raise ApiError(422, f"unsupported JSON patch operation {op['op']!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(422, f"the JSON patch cannot be applied at {op.get('path')}: {e}") from None
    return doc


# -- the HTTP handler ----------------------------------------------------------------------------

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _strip(obj: Obj) -> Obj:
    """List items carry no kind/apiVersion on the wire."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _flag(request: web.Request, name: str) -> bool:
    # Go clients send "true", kubernetes-asyncio sends "True".
    return request.query.get(name, "").lower() in ("true", "1")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


class ApiHandler:
    """Routes requests to the store; ``kubelet`` serves logs (None: no kubelet runs)."""

    def __init__(self, store: Store, kubelet: Any = None, token: str | None = None,
                 server_address: Callable[[], str] = lambda: "127.0.0.1:0",
                 audit: Callable[[dict[str, str]], None] | None = None) -> None:
        self.store, self.kubelet, self.token = store, kubelet, token
        self._server_address = server_address
        #: Called with the RBAC attributes (verb, resource, subresource, namespace) of each request.
        self.audit = audit

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20, middlewares=[self._errors])
        for path, handler in (("/api", self._api), ("/api/v1", self._resources),
                              ("/apis", self._groups), ("/version", self._version)):
            app.router.add_get(path, handler)
            app.router.add_get(path + "/", handler)
        for probe in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(probe, self._ok)
        app.router.add_route("*", "/api/v1/{path:.*}", self._dispatch)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token and request.path not in ("/healthz", "/readyz", "/livez") and \
                request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(ApiError(401, "Unauthorized", "Unauthorized").status(), 401)
        if self.audit is not None and request.path.startswith("/api/v1/"):
            self.audit(rbac_attributes(request))
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except ApiError as e:
            return _json(e.status(), e.code)
        except web.HTTPNotFound:
            return _json(ApiError(404, "the server could not find the requested resource").status(), 404)
        except web.HTTPException:
            raise
        except (ValueError, KeyError, TypeError) as e:
            return _json(ApiError(400, f"bad request: {type(e).__name__}: {e}").status(), 400)

    # -- discovery ------------------------------------------------------------------------

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _api(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": self._server_address()}]})

    async def _groups(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"major": "1", "minor": "30", "gitVersion": "v1.30.0-dask-deploy-emulator",
                      "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2024-04-17T00:00:00Z",
                      "goVersion": "go1.22.2", "compiler": "gc", "platform": "linux/amd64"})

    async def _resources(self, request: web.Request) -> web.Response:
        out = []
        for kind in KINDS.values():
            out.append({"name": kind.resource, "singularName": kind.kind.lower(),
                        "namespaced": kind.namespaced, "kind": kind.kind, "verbs": _VERBS,
                        "shortNames": list(kind.short_names)})
            for sub in kind.subresources:
                verbs = {"status": ["get", "patch", "update"], "log": ["get"],
                         "portforward": ["create", "get"], "proxy": ["create", "get"]}[sub]
                out.append({"name": f"{kind.resource}/{sub}", "singularName": "",
                            "namespaced": kind.namespaced, "kind": kind.kind, "verbs": verbs})
        return _json({"kind": "APIResourceList", "groupVersion": "v1", "resources": out})

    # -- dispatch -------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["path"].split("/") if p]
        if request.query.get("dryRun"):
            raise ApiError(400, "dryRun is not supported by the emulator")
        ns = ""
        if parts and parts[0] == "namespaces" and len(parts) >= 3 and parts[2] not in ("status",):
            ns, parts = parts[1], parts[2:]
            if ns == "" or not re.match(r"^[a-z0-9-]+$", ns):
                raise ApiError(404, f'namespaces "{ns}" not found')
        if not parts or parts[0] not in KINDS:
            raise ApiError(404, "the server could not find the requested resource")
        kind = KINDS[parts[0]]
        name = parts[1] if len(parts) > 1 else None
        sub = "/".join(parts[2:]) or None
        method = request.method
        if name is None:
            if kind.namespaced and not ns and method != "GET":
                raise ApiError(405, f"{method} is not allowed on all namespaces")
            if method == "GET":
                if _flag(request, "watch"):
                    return await self._watch(request, kind, ns or None)
                return self._list(request, kind, ns or None)
            if method == "POST":
                return _json(self.store.create(kind.resource, ns, await request.json()), 201)
            if method == "DELETE":
                match = self._selectors(request, kind)
                deleted = [self.store.delete(kind.resource, ns, o["metadata"]["name"])
                           for o in list(self.store.items(kind.resource, ns)) if match(o)]
                return _json({"kind": f"{kind.kind}List", "apiVersion": "v1",
                              "metadata": {"resourceVersion": str(self.store.rv)},
                              "items": [_strip(o) for o in deleted]})
            raise ApiError(405, f"{method} is not allowed on a collection")
        if kind.namespaced and not ns:
            raise ApiError(404, "the server could not find the requested resource")
        if sub is None:
            return await self._item(request, kind, ns, name)
        if sub == "status":
            return await self._item(request, kind, ns, name, status_only=True)
        if kind.resource == "pods" and sub == "log":
            return await self._log(request, ns, name)
        if kind.resource == "pods" and sub == "portforward":
            return await self._portforward(request, ns, name)
        if kind.resource == "services" and (sub == "proxy" or sub.startswith("proxy/")):
            return await self._proxy(request, ns, name, sub[len("proxy"):])
        raise ApiError(404, "the server could not find the requested resource")

    def _selectors(self, request: web.Request, kind: Kind) -> Match:
        labels = label_selector(request.query.get("labelSelector"))
        fields = field_selector(request.query.get("fieldSelector"), kind)
        return lambda o: labels(o) and fields(o)

    def _list(self, request: web.Request, kind: Kind, ns: str | None) -> web.Response:
        match = self._selectors(request, kind)
        items = [_strip(o) for o in self.store.items(kind.resource, ns) if match(o)]
        if "as=Table" in request.headers.get("Accept", ""):
            return _json(table(kind, items, self.store.rv))
        return _json({"kind": f"{kind.kind}List", "apiVersion": "v1",
                      "metadata": {"resourceVersion": str(self.store.rv)}, "items": items})

    async def _item(self, request: web.Request, kind: Kind, ns: str, name: str,
                    status_only: bool = False) -> web.Response:
        store, method = self.store, request.method
        if method == "GET":
            if "as=Table" in request.headers.get("Accept", "") and not status_only:
                return _json(table(kind, [store.get(kind.resource, ns, name)], store.rv))
            return _json(store.get(kind.resource, ns, name))
        if method == "PUT":
            return _json(store.replace(kind.resource, ns, name, await request.json(),
                                       status_only=status_only))
        if method == "PATCH":
            ctype = request.content_type
            body = await request.json()
            old = store.get(kind.resource, ns, name)
            if ctype == "application/json-patch+json":
                new = json_patch(old, body)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                new = merge_patch(old, body)
            else:
                raise ApiError(415, f"the body of the request was in an unknown format - accepted "
                                    "media types include: application/json-patch+json, "
                                    "application/merge-patch+json, "
                                    f"application/strategic-merge-patch+json (not {ctype})")
            if (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None:
                check = True
            else:
                check = False
                new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
            return _json(store.replace(kind.resource, ns, name, new, status_only=status_only,
                                       check_rv=check))
        if method == "DELETE" and not status_only:
            opts: dict[str, Any] = {}
            if request.can_read_body:
                with contextlib.suppress(ValueError):
                    opts = await request.json() or {}
            grace = opts.get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
            policy = opts.get("propagationPolicy") or request.query.get("propagationPolicy") \
                or ("Orphan" if opts.get("orphanDependents") is True else "Background")
            uid = (opts.get("preconditions") or {}).get("uid")
            return _json(store.delete(kind.resource, ns, name,
                                      None if grace is None else int(grace), policy, uid))
        raise ApiError(405, f"{method} is not allowed here")

    # -- watch ----------------------------------------------------------------------------

    async def _watch(self, request: web.Request, kind: Kind, ns: str | None) -> web.StreamResponse:
        match = self._selectors(request, kind)
        rv_text = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", 1800))
        store = self.store
        queue: asyncio.Queue[Event] = asyncio.Queue()
        store.watchers.add(queue)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)

            async def send(type_: str, obj: Obj) -> None:
                await resp.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

            pending: list[tuple[str, Obj]] = []
            if rv_text in ("", "0"):
                last = store.rv
                pending = [("ADDED", copy.deepcopy(o)) for o in store.items(kind.resource, ns) if match(o)]
            else:
                last = int(rv_text)
                if last < store.oldest_rv:
                    await send("ERROR", ApiError(410, f"too old resource version: {last} "
                                                      f"({store.oldest_rv})", "Expired").status())
                    return resp
                for ev in list(store.history):
                    if ev.rv > last:
                        pending += self._translate(ev, kind, ns, match)
                        last = ev.rv
            for type_, obj in pending:
                await send(type_, obj)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
                if ev.rv <= last:
                    continue
                last = ev.rv
                for type_, obj in self._translate(ev, kind, ns, match):
                    await send(type_, obj)
            await resp.write_eof()
            return resp
        except ConnectionResetError:  # the client went away
            return resp
        finally:
            store.watchers.discard(queue)

    @staticmethod
    def _translate(ev: Event, kind: Kind, ns: str | None, match: Match) -> list[tuple[str, Obj]]:
        """What one store event looks like through this watch's selectors."""
        if ev.resource != kind.resource or (ns is not None and ev.namespace != ns):
            return []
        now = match(ev.obj)
        if ev.type != "MODIFIED" or ev.old is None:
            return [(ev.type, ev.obj)] if now else []
        before = match(ev.old)
        if now and before:
            return [("MODIFIED", ev.obj)]
        if now:
            return [("ADDED", ev.obj)]
        return [("DELETED", ev.obj)] if before else []

    # -- pods/log, pods/portforward, services/proxy -------------------------------------------

    def _container(self, pod: Obj, wanted: str | None) -> str:
        names = [c["name"] for c in pod["spec"]["containers"]]
        if wanted is None:
            if len(names) != 1:
                raise ApiError(400, f"a container name must be specified for pod "
                                    f"{pod['metadata']['name']}, choose one of: [{' '.join(names)}]")
            return names[0]
        if wanted not in names:
            raise ApiError(400, f"container {wanted} is not valid for pod {pod['metadata']['name']}")
        return wanted

    async def _log(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        if request.method != "GET":
            raise ApiError(405, f"{request.method} is not allowed on pods/log")
        pod = self.store.get("pods", ns, name)
        container = self._container(pod, request.query.get("container"))
        if self.kubelet is None:
            raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: '
                                "ContainerCreating")
        source = self.kubelet.log_source(pod, container,
                                         _flag(request, "previous"))
        tail = request.query.get("tailLines")
        limit = request.query.get("limitBytes")
        data = bytes(source.data)
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail):]) if int(tail) > 0 else b""
        if limit is not None:
            data = data[: int(limit)]
        if not _flag(request, "follow"):
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        offset = len(source.data)
        try:
            await resp.write(data)
            while True:
                async with source.changed:
                    await source.changed.wait_for(
                        lambda seen=offset: len(source.data) > seen or source.done)
                chunk = bytes(source.data[offset:])
                offset += len(chunk)
                if chunk:
                    await resp.write(chunk)
                if source.done and offset >= len(source.data):
                    break
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp

    async def _portforward(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        pod = self.store.get("pods", ns, name)
        ip = pod.get("status", {}).get("podIP")
        if pod.get("status", {}).get("phase") != "Running" or not ip:
            raise ApiError(400, f"unable to upgrade connection: pod {name} is not running")
        ports = [int(p) for value in request.query.getall("ports", []) for p in value.split(",") if p]
        if not ports:
            raise ApiError(400, "query parameter \"ports\" is required")
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io", "channel.k8s.io"))
        await ws.prepare(request)
        writers: dict[int, asyncio.StreamWriter] = {}
        pumps = []

        async def pump(index: int, reader: asyncio.StreamReader) -> None:
            with contextlib.suppress(Exception):
                while chunk := await reader.read(65536):
                    await ws.send_bytes(bytes([2 * index]) + chunk)
            await ws.close()

        for i, port in enumerate(ports):
            head = port.to_bytes(2, "little")
            await ws.send_bytes(bytes([2 * i]) + head)
            await ws.send_bytes(bytes([2 * i + 1]) + head)
            try:
                reader, writer = await asyncio.open_connection(ip, port)
            except OSError as e:
                await ws.send_bytes(bytes([2 * i + 1]) + (
                    f"an error occurred forwarding {port} -> {port}: error forwarding port {port} "
                    f"to pod {name}: failed to connect to localhost:{port} inside namespace: "
                    f"{e.strerror or e}").encode())
                await ws.close()
                return ws
            writers[i] = writer
            pumps.append(asyncio.ensure_future(pump(i, reader)))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                target = writers.get(msg.data[0] // 2)
                if target is not None and msg.data[0] % 2 == 0 and len(msg.data) > 1:
                    target.write(msg.data[1:])
                    await target.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in writers.values():
                writer.close()
            for task in pumps:
                task.cancel()
        return ws

    async def _proxy(self, request: web.Request, ns: str, name: str, path: str) -> web.StreamResponse:
        """``services/NAME[:PORT]/proxy/PATH``: plain HTTP to a ready endpoint of the service."""
        svc_name, _, port_name = name.partition(":")
        svc = self.store.get("services", ns, svc_name)
        ports = svc["spec"].get("ports") or []
        port = next((p for p in ports if not port_name or p.get("name") == port_name
                     or str(p["port"]) == port_name), None)
        if port is None:
            raise ApiError(503, f'no endpoints available for service "{name}"', "ServiceUnavailable")
        target = endpoint(self.store, svc, port)
        if target is None:
            raise ApiError(503, f'no endpoints available for service "{name}"', "ServiceUnavailable")
        url = f"http://{target[0]}:{target[1]}{path or '/'}"
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "authorization", "content-length", "transfer-encoding")}
        async with ClientSession() as session, session.request(
                request.method, url, params=request.query, headers=headers,
                data=await request.read(), allow_redirects=False) as upstream:
            body = await upstream.read()
            keep = {k: v for k, v in upstream.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "content-encoding",
                                         "connection")}
            return web.Response(body=body, status=upstream.status, headers=keep)


def rbac_attributes(request: web.Request) -> dict[str, str]:
    """What RBAC would authorize this request as: verb, resource, subresource, namespace."""
    parts = [p for p in request.path[len("/api/v1/"):].split("/") if p]
    ns = ""
    if parts[:1] == ["namespaces"] and len(parts) >= 3 and parts[2] != "status":
        ns, parts = parts[1], parts[2:]
    resource = parts[0] if parts else ""
    named = len(parts) > 1
    sub = parts[2] if len(parts) > 2 else ""
    if resource == "namespaces" and named:
        ns = parts[1]
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(request.method, "")
    if request.method in ("GET", "HEAD"):
        verb = "watch" if _flag(request, "watch") else "get" if named else "list"
    elif request.method == "DELETE":
        verb = "delete" if named else "deletecollection"
    if sub in ("portforward", "exec", "attach") and request.method == "GET":
        verb = "create"  # a websocket upgrade of these is authorized as create (since 1.30)
    return {"verb": verb, "resource": resource, "subresource": sub, "namespace": ns}


def _age(timestamp: str) -> str:
    import datetime

    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    seconds = int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(kind: Kind, items: list[Obj], rv: int) -> Obj:
    """The ``meta.k8s.io/v1`` Table that ``kubectl get`` asks for (its columns for core kinds)."""
    columns = ["Name"]
    if kind.resource == "pods":
        columns += ["Ready", "Status", "Restarts", "Age", "IP", "Node"]
    elif kind.resource == "services":
        columns += ["Type", "Cluster-IP", "Ports", "Age"]
    elif kind.resource == "namespaces":
        columns += ["Status", "Age"]
    else:
        columns += ["Age"]
    rows = []
    for obj in items:
        meta, status, spec = obj["metadata"], obj.get("status") or {}, obj.get("spec") or {}
        cells: list[Any] = [meta["name"]]
        if kind.resource == "pods":
            cs = status.get("containerStatuses") or []
            shown = status.get("phase", "Pending")
            for c in cs:
                state = c.get("state") or {}
                reason = (state.get("waiting") or state.get("terminated") or {}).get("reason")
                if reason and shown != "Succeeded":
                    shown = reason
            if meta.get("deletionTimestamp"):
                shown = "Terminating"
            cells += [f"{sum(bool(c.get('ready')) for c in cs)}/{len(spec.get('containers', []))}",
                      shown, sum(c.get("restartCount", 0) for c in cs)]
        elif kind.resource == "services":
            ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
            cells += [spec.get("type", "ClusterIP"), spec.get("clusterIP", ""), ports or "<none>"]
        elif kind.resource == "namespaces":
            cells += [status.get("phase", "Active")]
        cells.append(_age(meta["creationTimestamp"]))
        if kind.resource == "pods":
            cells += [status.get("podIP", "<none>"), spec.get("nodeName", "<none>")]
        rows.append({"cells": cells, "object": {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
    wide = {"IP", "Node"}
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": [
                {"name": c, "type": "integer" if c == "Restarts" else "string",
                 "format": "name" if c == "Name" else "", "description": "", "priority": int(c in wide)}
                for c in columns],
            "rows": rows}


def endpoint(store: Store, svc: Obj, port: Obj) -> tuple[str, int] | None:
    """A ready pod behind ``svc`` and the pod port that ``port`` targets (None: no endpoint)."""
    selector = svc["spec"].get("selector") or {}
    if not selector:
        return None
    ns = svc["metadata"]["namespace"]
    target = port.get("targetPort", port["port"])
    for pod in store.items("pods", ns):
        status = pod.get("status", {})
        labels = pod["metadata"].get("labels") or {}
        if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running" \
                or not status.get("podIP") or any(labels.get(k) != v for k, v in selector.items()):
            continue
        if not all(c.get("ready") for c in status.get("containerStatuses") or [{}]):
            continue
        if isinstance(target, int):
            return status["podIP"], target
        for c in pod["spec"]["containers"]:
            for p in c.get("ports") or []:
                if p.get("name") == target:
                    return status["podIP"], int(p["containerPort"])
    return None
