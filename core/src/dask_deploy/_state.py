"""The per-user record of clusters, so that a cluster can outlive the process that made it.

Every cluster writes ``<state dir>/clusters/<name>.json`` (mode 0600 in a 0700 directory:
it holds the cluster's TLS key) when it has started and whenever its handles change, and
removes it when it is shut down. A detached cluster (``shutdown_on_close=False``) keeps its
record, so another process can list it and re-attach; ``dask-deploy gc`` uses the records
to tell live clusters from what a crashed client left behind.

Secrets a user passes to a backend (a password, a key passphrase, an in-memory key) are
never written down: a field of a backend's options dataclass marked
``field(metadata={"secret": True})`` is left out of the record (it is back at its default
when the record is read), and ``metadata={"persist": fn}`` stores ``fn(value)`` instead of
the value (the ssh backend drops passwords from ``connect_options`` and stores key objects
as their paths). Re-attaching then relies on what is on disk or in the ssh agent.

A cluster name becomes a file name here, so every name is checked against the rule of
``ClusterSpec.name`` first: ``../x`` can never reach a record outside the state directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import DeployError, SpecError
from ._plugins import backend_info
from ._specs import _NAME, TLS, ClusterSpec, Handle, Pool, SchedulerSpec, WorkerSpec
from ._statedir import state_dir

__all__ = ["ClusterRecord", "list_clusters", "state_dir"]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            if f.metadata.get("secret"):
                continue  # never written down: re-attach uses its default
            v = getattr(value, f.name)
            out[f.name] = _plain(f.metadata["persist"](v) if "persist" in f.metadata else v)
        return out
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def spec_to_dict(spec: ClusterSpec) -> dict[str, Any]:
    d = _plain(spec)
    d["tls"] = {"cert": spec.tls.cert, "key": spec.tls.key} if spec.tls else None
    return d  # type: ignore[no-any-return]


def spec_from_dict(d: Mapping[str, Any]) -> ClusterSpec:
    d = dict(d)
    info = backend_info(d["backend"])
    opts = d.pop("backend_options")
    return ClusterSpec(
        **{k: v for k, v in d.items() if k not in ("worker", "scheduler", "tls", "pools")},
        worker=WorkerSpec(**d["worker"]),
        pools=tuple(Pool(**{**p, "worker": WorkerSpec(**p["worker"]),
                            "backend_options": info.options(**p["backend_options"])
                            if info.options and p.get("backend_options") is not None else None})
                    for p in d.get("pools", ())),
        scheduler=SchedulerSpec(**d["scheduler"]),
        tls=TLS(**d["tls"]) if d.get("tls") else None,
        backend_options=info.options(**opts) if info.options and opts is not None else None,
    )


@dataclass(frozen=True)
class ClusterRecord:
    """What is written down about one cluster."""

    spec: ClusterSpec
    scheduler_address: str
    dashboard_address: str | None = None
    scheduler_handle: Handle | None = None
    handles: Mapping[str, Handle] = field(default_factory=dict)
    owner_host: str = ""
    owner_pid: int | None = None  # None once detached: nobody owns it
    created: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def backend(self) -> str:
        return self.spec.backend

    @property
    def detached(self) -> bool:
        return not self.spec.shutdown_on_close

    def owner_alive(self) -> bool:
        """Whether the process that owns this cluster still runs (on this host)."""
        if self.owner_pid is None or self.owner_host != socket.gethostname():
            return False
        try:
            os.kill(self.owner_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def scheduler_answers(self, timeout: float = 2.0) -> bool:
        """Whether the scheduler's port accepts connections (a cheap liveness check)."""
        hostport = self.scheduler_address.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            return False

    def to_json(self) -> str:
        return json.dumps({
            "spec": spec_to_dict(self.spec), "scheduler_address": self.scheduler_address,
            "dashboard_address": self.dashboard_address,
            "scheduler_handle": self.scheduler_handle.to_dict() if self.scheduler_handle else None,
            "handles": {k: h.to_dict() for k, h in self.handles.items()},
            "owner_host": self.owner_host, "owner_pid": self.owner_pid, "created": self.created,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ClusterRecord:
        d = json.loads(text)
        return cls(
            spec=spec_from_dict(d["spec"]), scheduler_address=d["scheduler_address"],
            dashboard_address=d.get("dashboard_address"),
            scheduler_handle=Handle.from_dict(d["scheduler_handle"]) if d.get("scheduler_handle") else None,
            handles={k: Handle.from_dict(h) for k, h in d.get("handles", {}).items()},
            owner_host=d.get("owner_host", ""), owner_pid=d.get("owner_pid"), created=d.get("created", 0.0),
        )


def check_name(name: object) -> str:
    """``name`` if it is a valid cluster name (so it is safe as a file name), else SpecError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError("name", name, "expected a cluster name: 1-48 lowercase letters, digits or "
                        "'-', starting and ending with a letter or digit (`dask-deploy list` shows them)")
    return name


def record_path(name: str) -> Path:
    """Where the record of cluster ``name`` is (or would be) written."""
    return state_dir() / "clusters" / f"{check_name(name)}.json"


def _read(path: Path) -> str:
    # Never through a symlink: a record is only ever a file we wrote ourselves.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)) as f:
        return f.read()


def save(record: ClusterRecord) -> None:
    path = record_path(record.name)
    text = record.to_json()  # first: a record that cannot be written leaves no file behind
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load(name: str) -> ClusterRecord | None:
    path = record_path(name)
    try:
        record = ClusterRecord.from_json(_read(path))
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise DeployError(f"the record of cluster {name!r} ({path}) is a symlink, which dask-deploy "
                          "never writes: not loaded; remove it") from None
    if record.name != name:  # not written by save(): ignore it rather than act on it
        return None
    return record


def remove(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_path(name).unlink()


def list_clusters() -> list[ClusterRecord]:
    """Every recorded cluster of this user, oldest first (unreadable records are skipped)."""
    out = []
    for path in (state_dir() / "clusters").glob("*.json"):
        with contextlib.suppress(Exception):
            record = ClusterRecord.from_json(_read(path))
            if record.name == path.stem:
                out.append(record)
    return sorted(out, key=lambda r: r.created)


def new_record(spec: ClusterSpec, **fields: Any) -> ClusterRecord:
    return ClusterRecord(spec=spec, owner_host=socket.gethostname(), owner_pid=os.getpid(),
                         created=time.time(), **fields)
