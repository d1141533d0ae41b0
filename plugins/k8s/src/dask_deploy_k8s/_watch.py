"""A watch cache of one cluster's pods: list once, then follow the watch (no polling).

``deploy_poll`` answers from this cache, so a reconcile round costs no API call. The watch
resumes from the last ``resourceVersion`` it saw; if the server answers 410 Gone (that
version is too old) it lists again and diffs, so a pod deleted meanwhile is still noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["PodWatch"]

logger = logging.getLogger(__name__)
Obj = dict[str, Any]


class WatchError(Exception):
    """The API server refused a list or watch (``status``: HTTP code, message from its Status)."""

    def __init__(self, status: int, body: bytes) -> None:
        try:
            message = json.loads(body).get("message") or body[:200].decode(errors="replace")
        except (ValueError, AttributeError):
            message = body[:200].decode(errors="replace")
        super().__init__(f"{status} {message}")
        self.status = status


class PodWatch:
    """Pods matching ``label_selector`` in ``namespace``, kept current by a watch."""

    def __init__(self, api: Any, namespace: str, label_selector: str, *, timeout: int = 240) -> None:
        self.api, self.namespace, self.label_selector = api, namespace, label_selector
        self.timeout = timeout
        self.pods: dict[str, Obj] = {}
        #: Pods seen deleted, by name (bounded): their handles now report GONE.
        self.deleted: OrderedDict[str, Obj] = OrderedDict()
        #: Why the watch is down (None while it works); ``deploy_poll`` raises it.
        self.error: BaseException | None = None
        self.synced = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._resource_version: str | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    # -- the cache ------------------------------------------------------------------------

    def get(self, name: str) -> Obj | None:
        return self.pods.get(name)

    def is_deleted(self, name: str) -> bool:
        return name in self.deleted

    async def poke(self) -> None:
        """Wake every ``wait_for`` so that it re-checks its condition (e.g. a close flag)."""
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _put(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        self.deleted.pop(name, None)
        self.pods[name] = obj

    def _drop(self, name: str) -> None:
        obj = self.pods.pop(name, None)
        self.deleted[name] = obj or {}
        while len(self.deleted) > 1000:
            self.deleted.popitem(last=False)

    def created(self, obj: Obj) -> None:
        """Record a pod this client just created, unless the watch already knows more."""
        name = obj["metadata"]["name"]
        if name not in self.pods and name not in self.deleted:
            self.pods[name] = obj

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds on the cache (True) or the timeout passes (False)."""
        async with self._changed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(condition), timeout)
            return condition()

    # -- list + watch ---------------------------------------------------------------------

    async def _list(self) -> None:
        resp = await self.api.list_namespaced_pod(self.namespace, label_selector=self.label_selector,
                                                  _preload_content=False)
        body = await resp.read()
        if resp.status != 200:  # raw responses raise nothing by themselves
            raise WatchError(resp.status, body)
        data = json.loads(body)
        seen = set()
        for item in data.get("items") or []:
            self._put(item)
            seen.add(item["metadata"]["name"])
        for name in set(self.pods) - seen:
            self._drop(name)
        self._resource_version = data["metadata"]["resourceVersion"]

    async def _watch(self) -> None:
        resp = await self.api.list_namespaced_pod(
            self.namespace, label_selector=self.label_selector, watch=True,
            resource_version=self._resource_version, timeout_seconds=self.timeout,
            allow_watch_bookmarks=True, _preload_content=False)
        try:
            if resp.status != 200:
                raise WatchError(resp.status, await resp.read())
            self.error = None
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # too old: list again
                        self._resource_version = None
                        return
                    raise WatchError(int(obj.get("code") or 500), json.dumps(obj).encode())
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self._resource_version = rv
                if kind in ("ADDED", "MODIFIED"):
                    self._put(obj)
                elif kind == "DELETED":
                    self._drop(obj["metadata"]["name"])
                else:
                    continue
                await self._notify()
        finally:
            resp.release()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                if self._resource_version is None:
                    await self._list()
                    self.error = None
                    self.synced.set()
                    await self._notify()
                await self._watch()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if getattr(e, "status", None) == 410:
                    self._resource_version = None
                    continue
                self.error = e
                logger.debug("pod watch of %s failed: %s; retrying", self.label_selector, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
