"""The emulated API server's object store: resource versions, events, deletion and garbage collection.

One global, increasing ``resourceVersion`` (like etcd's revision), a bounded event history
that watches resume from (older than the history: 410 Gone), graceful pod deletion
(``deletionTimestamp`` first, the kubelet removes the object once its processes ended) and
background cascading deletion of dependents through ``ownerReferences``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "ApiError", "Event", "Kind", "Store", "now_iso"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """One resource type the emulator serves."""

    resource: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    #: Field selector labels the real API server accepts for this resource.
    fields: tuple[str, ...] = ("metadata.name", "metadata.namespace")
    subresources: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {k.resource: k for k in (
    Kind("namespaces", "Namespace", False, ("ns",), ("metadata.name", "status.phase"), ("status",)),
    Kind("pods", "Pod", True, ("po",),
         ("metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
          "spec.schedulerName", "spec.serviceAccountName", "status.phase", "status.podIP",
          "status.nominatedNodeName"),
         ("status", "log", "portforward")),
    Kind("services", "Service", True, ("svc",), subresources=("status", "proxy")),
    Kind("secrets", "Secret", True, (), ("metadata.name", "metadata.namespace", "type")),
    Kind("configmaps", "ConfigMap", True, ("cm",)),
)}

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ApiError(Exception):
    """An error the API server answers with a ``Status`` object."""

    REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
               409: "AlreadyExists", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
               500: "InternalError"}

    def __init__(self, code: int, message: str, reason: str | None = None,
                 name: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.name, self.kind = name, kind

    def status(self) -> Obj:
        details = {k: v for k, v in (("name", self.name), ("kind", self.kind)) if v}
        out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": self.message, "reason": self.reason, "code": self.code}
        if details:
            out["details"] = details
        return out


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    """One change: ``old`` is the object before a MODIFIED (for selector transitions)."""

    rv: int
    resource: str
    namespace: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None = None


def _not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, f'{resource} "{name}" not found', name=name, kind=resource)


class Store:
    """All objects, by resource then ``(namespace, name)``; every change becomes an :class:`Event`."""

    def __init__(self, history: int = 1000,
                 service_ip: Callable[[], str] | None = None) -> None:
        #: Hands out a Service's clusterIP (the emulator's network gives each its own address).
        self.allocate_service_ip = service_ip or (lambda: "127.0.0.1")
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in KINDS}
        self.rv = 1
        self.history: deque[Event] = deque(maxlen=history)
        self.watchers: set[asyncio.Queue[Event]] = set()
        #: In-process controllers (the kubelet, the proxy) called on every event.
        self.listeners: list[Callable[[Event], None]] = []

    # -- reading ------------------------------------------------------------------------

    def get(self, resource: str, ns: str, name: str) -> Obj:
        try:
            return self.objects[resource][(ns, name)]
        except KeyError:
            raise _not_found(resource, name) from None

    def find(self, resource: str, ns: str, name: str) -> Obj | None:
        return self.objects[resource].get((ns, name))

    def items(self, resource: str, ns: str | None = None) -> Iterator[Obj]:
        for (ons, _), obj in sorted(self.objects[resource].items()):
            if ns is None or ons == ns:
                yield obj

    def by_uid(self, uid: str) -> tuple[str, Obj] | None:
        for resource, objs in self.objects.items():
            for obj in objs.values():
                if obj["metadata"]["uid"] == uid:
                    return resource, obj
        return None

    @property
    def oldest_rv(self) -> int:
        """Watches may resume from this resourceVersion or later."""
        return self.history[0].rv - 1 if len(self.history) == self.history.maxlen else 0

    # -- writing ------------------------------------------------------------------------

    def _emit(self, resource: str, ns: str, type_: str, obj: Obj, old: Obj | None = None) -> None:
        ev = Event(self.rv, resource, ns, type_, copy.deepcopy(obj), old)
        self.history.append(ev)
        for q in list(self.watchers):
            q.put_nowait(ev)
        for listener in list(self.listeners):
            listener(ev)

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def create(self, resource: str, ns: str, obj: Obj) -> Obj:
        kind = KINDS[resource]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        name = meta.get("name")
        if not name:
            raise ApiError(422, f"{kind.kind} is invalid: metadata.name: Required value: name or "
                                "generateName is required", kind=resource)
        pattern = _DNS_LABEL if resource in ("namespaces", "services") else _DNS_SUBDOMAIN
        if not isinstance(name, str) or len(name) > 253 or not pattern.match(name):
            raise ApiError(422, f'{kind.kind} "{name}" is invalid: metadata.name: Invalid value: '
                                f'"{name}": a lowercase RFC 1123 name must consist of lower case '
                                "alphanumeric characters or '-'", name=str(name), kind=resource)
        if kind.namespaced:
            if meta.get("namespace", ns) != ns:
                raise ApiError(400, "the namespace of the provided object does not match the "
                                    "namespace sent on the request")
            space = self.find("namespaces", "", ns)
            if space is None:
                raise ApiError(404, f'namespaces "{ns}" not found', name=ns, kind="namespaces")
            if space["metadata"].get("deletionTimestamp"):
                raise ApiError(403, f'{resource} "{name}" is forbidden: unable to create new content '
                                    f"in namespace {ns} because it is being terminated",
                               name=name, kind=resource)
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        key = (ns if kind.namespaced else "", name)
        if key in self.objects[resource]:
            raise ApiError(409, f'{resource} "{name}" already exists', name=name, kind=resource)
        validate(resource, obj)
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        obj["apiVersion"], obj["kind"] = "v1", kind.kind
        DEFAULTS.get(resource, lambda o, s: None)(obj, self)
        self._bump(obj)
        self.objects[resource][key] = obj
        self._emit(resource, key[0], "ADDED", obj)
        owners = [r["uid"] for r in meta.get("ownerReferences") or []]
        if owners and not any(self.by_uid(u) for u in owners):
            # The garbage collector removes dependents whose owners are all gone (later).
            asyncio.get_running_loop().call_soon(self._collect, resource, key[0], name,
                                                 meta["uid"])
        return obj

    def replace(self, resource: str, ns: str, name: str, new: Obj, *, status_only: bool = False,
                check_rv: bool = True) -> Obj:
        """PUT semantics: the main resource keeps the old status, ``/status`` keeps the rest."""
        old = self.get(resource, ns, name)
        meta = new.get("metadata") or {}
        if check_rv and meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            raise ApiError(409, f'Operation cannot be fulfilled on {resource} "{name}": the object '
                                "has been modified; please apply your changes to the latest version "
                                "and try again", reason="Conflict", name=name, kind=resource)
        if meta.get("name", name) != name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        if status_only:
            obj = copy.deepcopy(old)
            obj["status"] = copy.deepcopy(new.get("status", {}))
        else:
            obj = copy.deepcopy(new)
            obj["apiVersion"], obj["kind"] = "v1", KINDS[resource].kind
            kept = ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "generateName")
            obj["metadata"] = {**obj.get("metadata", {}),
                               **{k: old["metadata"][k] for k in kept if k in old["metadata"]}}
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            if resource == "services":
                obj.setdefault("spec", {})["clusterIP"] = old["spec"].get("clusterIP")
                obj["spec"]["clusterIPs"] = old["spec"].get("clusterIPs")
            validate(resource, obj)
        if obj == old:
            return old  # a no-op write does not bump the version (like the real server)
        self._bump(obj)
        self.objects[resource][(ns, name)] = obj
        self._emit(resource, ns, "MODIFIED", obj, copy.deepcopy(old))
        return obj

    def delete(self, resource: str, ns: str, name: str, grace: int | None = None,
               propagation: str = "Background", uid: str | None = None) -> Obj:
        """DELETE semantics: graceful for bound pods, cascading through ownerReferences."""
        obj = self.get(resource, ns, name)
        meta = obj["metadata"]
        if uid is not None and meta["uid"] != uid:
            raise ApiError(409, f"Precondition failed: UID in precondition: {uid}, UID in object "
                                f"meta: {meta['uid']}", reason="Conflict", name=name, kind=resource)
        if resource == "pods" and obj.get("spec", {}).get("nodeName") and grace != 0 \
                and obj.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            if meta.get("deletionTimestamp"):
                return obj
            new = copy.deepcopy(obj)
            period = grace if grace is not None else obj["spec"].get("terminationGracePeriodSeconds", 30)
            new["metadata"]["deletionTimestamp"] = now_iso()
            new["metadata"]["deletionGracePeriodSeconds"] = period
            if propagation == "Orphan":
                new["metadata"]["annotations"] = {**(meta.get("annotations") or {}),
                                                  "emulator/orphan": "true"}
            self._bump(new)
            self.objects[resource][(ns, name)] = new
            self._emit(resource, ns, "MODIFIED", new, copy.deepcopy(obj))
            return new  # the kubelet removes it once its containers ended
        if resource == "namespaces":
            return self._delete_namespace(name)
        return self.remove(resource, ns, name, propagation)

    def _delete_namespace(self, name: str) -> Obj:
        obj = self.get("namespaces", "", name)
        if not obj["metadata"].get("deletionTimestamp"):
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_iso()
            new["status"] = {"phase": "Terminating"}
            self._bump(new)
            self.objects["namespaces"][("", name)] = new
            self._emit("namespaces", "", "MODIFIED", new, copy.deepcopy(obj))
            obj = new
            for resource, kind in KINDS.items():
                if kind.namespaced:
                    for item in list(self.items(resource, name)):
                        if self.find(resource, name, item["metadata"]["name"]) is not None:
                            self.delete(resource, name, item["metadata"]["name"])
        self._finish_namespace(name)
        return obj

    def _finish_namespace(self, name: str) -> None:
        space = self.find("namespaces", "", name)
        if space is None or not space["metadata"].get("deletionTimestamp"):
            return
        if not any(any(self.items(r, name)) for r, k in KINDS.items() if k.namespaced):
            self.remove("namespaces", "", name)

    def remove(self, resource: str, ns: str, name: str, propagation: str = "Background") -> Obj:
        """Take the object out of the store for good (DELETED), then collect its dependents."""
        obj = self.objects[resource].pop((ns, name), None)
        if obj is None:
            raise _not_found(resource, name)
        obj = copy.deepcopy(obj)
        self._bump(obj)
        self._emit(resource, ns, "DELETED", obj)
        if (obj["metadata"].get("annotations") or {}).get("emulator/orphan") == "true":
            propagation = "Orphan"
        uid = obj["metadata"]["uid"]
        for dep_resource, objs in self.objects.items():
            for (dns, dname), dep in list(objs.items()):
                refs = dep["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == uid for r in refs):
                    continue
                if propagation == "Orphan":
                    new = copy.deepcopy(dep)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    self.replace(dep_resource, dns, dname, new, check_rv=False)
                else:
                    asyncio.get_running_loop().call_soon(
                        self._collect, dep_resource, dns, dname, dep["metadata"]["uid"])
        if KINDS[resource].namespaced:
            self._finish_namespace(ns)
        return obj

    def _collect(self, resource: str, ns: str, name: str, uid: str) -> None:
        """The garbage collector: delete a dependent once none of its owners exists."""
        obj = self.find(resource, ns, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if any(self.by_uid(r.get("uid", "")) for r in refs):
            return
        self.delete(resource, ns, name)

    def set_status(self, resource: str, ns: str, name: str, status: Obj,
                   spec: Obj | None = None) -> Obj | None:
        """For in-process controllers: write status (and spec fields); None if the object is gone."""
        old = self.find(resource, ns, name)
        if old is None:
            return None
        new = copy.deepcopy(old)
        new["status"] = copy.deepcopy(status)
        if spec:
            new["spec"] = {**new.get("spec", {}), **spec}
        if new == old:
            return old
        self._bump(new)
        self.objects[resource][(ns, name)] = new
        self._emit(resource, ns, "MODIFIED", new, copy.deepcopy(old))
        return new


# -- validation and defaults ----------------------------------------------------------------


def validate(resource: str, obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    kind = KINDS[resource].kind

    def invalid(field: str, why: str) -> ApiError:
        return ApiError(422, f'{kind} "{name}" is invalid: {field}: {why}', name=name, kind=resource)

    labels = obj["metadata"].get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) and len(v) <= 63
                                               for v in labels.values()):
        raise invalid("metadata.labels", "Invalid value: values must be strings of at most 63 characters")
    if resource == "pods":
        containers = (obj.get("spec") or {}).get("containers")
        if not containers:
            raise invalid("spec.containers", "Required value")
        for i, c in enumerate(containers):
            if not c.get("name"):
                raise invalid(f"spec.containers[{i}].name", "Required value")
            if not c.get("image"):
                raise invalid(f"spec.containers[{i}].image", "Required value")
    if resource == "services":
        for i, p in enumerate((obj.get("spec") or {}).get("ports") or []):
            if not isinstance(p.get("port"), int):
                raise invalid(f"spec.ports[{i}].port", "Required value")


def _pod_defaults(obj: Obj, store: Store) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", "default")
    for c in spec["containers"]:
        c.setdefault("imagePullPolicy", "Always" if c["image"].endswith(":latest") or ":" not in
                     c["image"].rsplit("/", 1)[-1] else "IfNotPresent")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
    limits = [c.get("resources", {}) for c in spec["containers"]]
    qos = ("BestEffort" if not any(r.get("requests") or r.get("limits") for r in limits) else
           "Guaranteed" if all(r.get("limits", {}).get("cpu") and r.get("limits", {}).get("memory")
                               for r in limits) else "Burstable")
    obj["status"] = {"phase": "Pending", "qosClass": qos}


def _service_defaults(obj: Obj, store: Store) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for p in spec.setdefault("ports", []):
        p.setdefault("protocol", "TCP")
        p.setdefault("targetPort", p["port"])
    if spec.get("clusterIP") != "None":
        spec["clusterIP"] = store.allocate_service_ip()
        spec["clusterIPs"] = [spec["clusterIP"]]
    obj["status"] = {"loadBalancer": {}}


def _secret_defaults(obj: Obj, store: Store) -> None:
    obj.setdefault("type", "Opaque")
    data = dict(obj.get("data") or {})
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            raise ApiError(422, f'Secret "{obj["metadata"]["name"]}" is invalid: data[{key}]: '
                                "Invalid value: not base64", kind="secrets") from None
    if data:
        obj["data"] = data


def _namespace_defaults(obj: Obj, store: Store) -> None:
    obj["spec"] = {"finalizers": ["kubernetes"]}
    obj["status"] = {"phase": "Active"}
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


DEFAULTS: dict[str, Callable[[Obj, Store], None]] = {
    "pods": _pod_defaults, "services": _service_defaults, "secrets": _secret_defaults,
    "namespaces": _namespace_defaults,
}
