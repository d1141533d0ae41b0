"""From ``from_name`` options to a :class:`ClusterSpec`: dask.config, backend defaults, checks.

:func:`build_spec` merges ``dask.config`` (``deploy.<backend>``), the caller's options and
the backend's defaults, checks them (every mistake is one :class:`SpecError` naming the
option), decides whether the cluster gets TLS (:func:`needs_tls`), and splits what
describes the cluster (the spec) from what only this process uses (:class:`ClientOptions`).
Nothing starts here. Imports only the layers below the cluster: specs, plugins, toolkit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask.config

from ._compat import anchor_config, compat_table, did_you_mean, translate
from ._errors import SpecError
from ._plugins import backend_info, installed_extensions
from ._specs import (
    TLS,
    BackendInfo,
    ClusterSpec,
    Pool,
    SchedulerSpec,
    WorkerSpec,
    _frozen_map,
    _positive_int,
    check_address,
    check_bindable,
    check_port,
)
from .toolkit import is_loopback

__all__ = ["GENERIC_OPTIONS", "ClientOptions", "build_spec", "needs_tls", "register_defaults"]

_registered = False


def register_defaults() -> None:
    """Register ``deploy.yaml`` (shipped next to this module) with ``dask.config``.

    Done on first use rather than at import (no import-time I/O); every default there equals
    the fallback its reader uses, so a value read before this runs is the same. A user's
    own settings keep priority (``update_defaults`` only fills in).
    """
    global _registered
    if _registered:
        return
    import yaml

    path = os.path.join(os.path.dirname(__file__), "deploy.yaml")
    with open(path, encoding="utf-8") as f:
        dask.config.update_defaults(yaml.safe_load(f))
    _registered = True

#: Options every backend accepts (LocalCluster's names where it has one).
GENERIC_OPTIONS = (
    "name", "n_workers", "threads_per_worker", "memory_limit", "resources", "gpus", "env",
    "image", "worker_options", "scheduler", "host", "scheduler_port", "dashboard_address",
    "scheduler_options", "idle_timeout", "start_timeout", "queue_timeout", "max_failures",
    "shutdown_on_close", "poll_interval", "nanny", "pools",
    "asynchronous", "loop", "quiet", "silence_logs", "security", "dashboard_proxy_address",
    "dashboard_token", "extensions",
)


@dataclass(frozen=True)
class ClientOptions:
    """What only this process uses: the keyword arguments of ``SpecCluster`` besides the spec."""

    asynchronous: bool = False
    loop: Any = None
    quiet: bool = False
    silence_logs: int | str | bool = logging.WARN
    #: None: the installed extensions (the cluster loads them itself).
    extensions: Mapping[str, Any] | None = None
    dashboard_proxy_address: str = "127.0.0.1:0"
    dashboard_token: str | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _new_name() -> str:
    return f"dask-{os.urandom(4).hex()}"


def needs_tls(info: BackendInfo, scheduler: SchedulerSpec) -> bool:
    """Whether a cluster's traffic can leave this machine's loopback, so TLS is the default.

    Only a backend whose processes all run here (capability ``loopback``: local, cuda,
    fake) with a loopback ``host`` and the scheduler in this process stays on loopback;
    every other cluster has a scheduler or workers bound to a reachable address.
    """
    return not ("loopback" in info.capabilities and is_loopback(scheduler.host)
                and scheduler.placement == "local")


#: Pool option -> the WorkerSpec field it sets (the generic options' names).
_POOL_WORKER = {"threads_per_worker": "nthreads", "memory_limit": "memory_limit",
                "resources": "resources", "gpus": "gpus", "env": "env", "image": "image",
                "worker_options": "options", "nanny": "nanny"}
_POOL_BOUNDS = ("n_workers", "minimum", "maximum")


def _build_pools(value: object, base: WorkerSpec, n_workers: int | None,
                 info: BackendInfo | None = None, backend_options: Any = None,
                 given: Mapping[str, Any] | None = None) -> tuple[Pool, ...]:
    """``pools={"name": {option: value}}`` as Pool records: each pool's worker is the
    cluster's (the generic options) with its own options applied, and its backend options
    the cluster's with the ones the backend lets a pool set (``info.pool_options``)
    replaced, checked by the backend's own options class. The first is the default pool:
    ``n_workers`` of the cluster start there unless it gives its own. ``given``: the
    cluster's options with their defaults, when ``threads_per_worker`` was not given: the
    backend's default for it (from a task's CPUs) is computed again with a pool's own
    backend options."""
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        raise SpecError("pools", value, 'expected a mapping of pool name -> options, e.g. '
                        '{"big": {"threads_per_worker": 4, "resources": {"BIG": 1}}}')
    per_pool = info.pool_options if info is not None else frozenset()
    backend_fields = ({f.name for f in dataclasses.fields(info.options)}
                      if info is not None and info.options else set())
    pools = []
    for i, (name, opts) in enumerate(value.items()):
        opts = {} if opts is None else opts
        if not isinstance(opts, Mapping):
            raise SpecError(f"pools[{name!r}]", opts, "expected a mapping of options")
        for k in opts:
            if k in _POOL_WORKER or k in _POOL_BOUNDS or k in per_pool:
                continue
            shown = f"pools[{name!r}].{k if isinstance(k, str) and k.isidentifier() else repr(k)}"
            takes = sorted({*_POOL_WORKER, *_POOL_BOUNDS, *per_pool})
            if k in backend_fields and info is not None:
                raise SpecError(shown, opts[k], f"backend {info.name!r} cannot set {k} per pool: "
                                f"set it for the whole cluster (a pool takes {takes})")
            raise SpecError(shown, opts[k], f"not a pool option; a pool takes {takes}")
        own = {k: v for k, v in opts.items() if k in per_pool}
        changes = {_POOL_WORKER[k]: v for k, v in opts.items() if k in _POOL_WORKER}
        threads = info.defaults.get("threads_per_worker") if info is not None else None
        if own and callable(threads) and given is not None and "threads_per_worker" not in opts:
            changes.setdefault("nthreads", threads({**given, **own}))
        worker = base.replace(**changes)
        pool_backend = None
        if own:
            try:
                pool_backend = dataclasses.replace(backend_options, **own)
            except SpecError as e:  # the backend's own check, named as the pool's option
                raise SpecError(f"pools[{name!r}].{e.option}", e.value, e.accepted) from None
            except (TypeError, ValueError) as e:
                key = next(iter(own))
                raise SpecError(f"pools[{name!r}].{key}", own[key],
                                str(e).splitlines()[0] if str(e) else "not accepted") from None
        minimum = _positive_int(opts.get("minimum", 0), f"pools[{name!r}].minimum", minimum=0)
        default_n = max(minimum, n_workers) if i == 0 and n_workers else minimum
        pools.append(Pool(name, worker, n_workers=opts.get("n_workers", default_n),
                          minimum=minimum, maximum=opts.get("maximum"),
                          backend_options=pool_backend))
    return tuple(pools)


def build_spec(backend: str, options: Mapping[str, Any], *, stacklevel: int = 2,
               ) -> tuple[ClusterSpec, ClientOptions]:
    """The spec of a new cluster on ``backend`` and the client-side options, from ``options``.

    Imports only the named backend's plugin (and the installed extensions when
    ``extensions=`` adds some). ``stacklevel`` is that of the ``security=False`` warning,
    counted from the caller of this function.
    """
    register_defaults()
    info = backend_info(backend)
    backend_fields = {f.name for f in dataclasses.fields(info.options)} if info.options else set()
    known = {*GENERIC_OPTIONS, *backend_fields}
    table = compat_table(backend, info.options)
    options = dict(options)
    # The anchor's option naming which of its config sections to read (config_name).
    section = options.pop(table.section_option, None) if table and table.section_option else None
    if section is not None and not isinstance(section, str):
        raise SpecError(str(table.section_option if table else ""), section,
                        "expected the name of a config section")
    # Explicit options, then deploy.<backend> (our config, anchors' spellings translated
    # too), else the anchor's own config sections (jobqueue.<system>, kubernetes, ...).
    own = dask.config.get(f"deploy.{backend}", default=None)
    if own is not None and not isinstance(own, Mapping):
        raise SpecError(f"deploy.{backend}", own, "expected a mapping of option names to values")
    config = (translate(table, own, where="option", prefix=f"deploy.{backend}.",
                        ours_prefix=f"deploy.{backend}.", stacklevel=stacklevel + 1) if own
              else anchor_config(table, backend, section, known, stacklevel=stacklevel + 1))
    explicit = translate(table, options, where="option", stacklevel=stacklevel + 1)
    merged = {**config, **explicit}

    threads_given = merged.get("threads_per_worker") is not None
    # Checked before the defaults below compute with them (threads per worker from n_workers).
    for key, low in (("n_workers", 0), ("threads_per_worker", 1)):
        if merged.get(key) is not None:
            _positive_int(merged[key], key, minimum=low)
    for key, default in info.defaults.items():
        if key not in merged:
            merged[key] = default(merged) if callable(default) else default
    # What a pool's defaults are computed again from, with its own backend options.
    given = None if threads_given else dict(merged)
    unknown = sorted(set(merged) - known)
    if unknown:
        name = unknown[0]
        candidates = known | (table.names("option") if table else set())
        hint = did_you_mean(name, candidates) or (
            f" ({table.anchor}'s names and ours: docs/migrating.md)" if table
            else " (its options: help(dask_deploy.from_name) and the backend's docs)")
        shown = name if name.isidentifier() else repr(name)  # a name with a newline: one line
        raise SpecError(shown, merged[name], f"not an option of backend {backend!r}{hint}")
    backend_options = (info.options(**{k: merged.pop(k) for k in backend_fields if k in merged})
                       if info.options else None)
    g = {k: merged[k] for k in GENERIC_OPTIONS if k in merged}
    sched_opts = dict(_frozen_map(g.get("scheduler_options"), "scheduler_options"))
    port_option = "scheduler_port" if "scheduler_port" in g else "scheduler_options['port']"
    worker = WorkerSpec(
        nthreads=1 if g.get("threads_per_worker") is None else g["threads_per_worker"],
        memory_limit=g.get("memory_limit", "auto"),
        resources=g.get("resources") or {},
        gpus=g.get("gpus", 0),
        env=g.get("env") or {},
        image=g.get("image"),
        options=g.get("worker_options") or {},
        nanny=g.get("nanny", False),
    )
    if worker.nanny and "nanny" not in info.capabilities:
        raise SpecError("nanny", True, f"backend {backend!r} cannot run workers under a nanny; "
                        "leave nanny=False (workers without a nanny start faster)")
    pools = _build_pools(g.get("pools"), worker, g.get("n_workers"), info, backend_options,
                         given)
    if any(p.worker.nanny for p in pools) and "nanny" not in info.capabilities:
        raise SpecError("nanny", True, f"backend {backend!r} cannot run workers under a nanny")
    scheduler = SchedulerSpec(
        placement=g.get("scheduler", "local"),
        host=g.get("host", sched_opts.pop("host", "127.0.0.1")) or "127.0.0.1",
        port=check_port(g.get("scheduler_port", sched_opts.pop("port", 0)) or 0, port_option),
        dashboard_address=g.get("dashboard_address",
                                sched_opts.pop("dashboard_address", "127.0.0.1:0")),
        idle_timeout=g.get("idle_timeout"),
        options=sched_opts,
    )
    if scheduler.placement == "local" or "loopback" in info.capabilities:
        check_bindable(scheduler.host)  # the scheduler binds it on this machine
    if not isinstance(g.get("shutdown_on_close", True), bool):
        raise SpecError("shutdown_on_close", g["shutdown_on_close"],
                        "expected True (stop with this process) or False (leave it running)")
    if not g.get("shutdown_on_close", True) and "detach" not in info.capabilities:
        raise SpecError("shutdown_on_close", False,
                        f"backend {backend!r} cannot leave a cluster running after this process")
    if not g.get("shutdown_on_close", True) and scheduler.placement != "remote":
        raise SpecError("shutdown_on_close", False,
                        'a cluster that outlives this process needs scheduler="remote"')
    security = g.get("security", needs_tls(info, scheduler))
    if not isinstance(security, bool):
        raise SpecError("security", security, "expected True (per-cluster TLS) or False (plain TCP)")
    if not security and needs_tls(info, scheduler):
        warnings.warn(f"security=False: the scheduler of this {backend} cluster accepts plain, "
                      "unauthenticated connections beyond this machine's loopback; anyone who "
                      "reaches it can run code as you", UserWarning, stacklevel=stacklevel + 1)
    spec = ClusterSpec(
        backend=backend,
        tls=TLS.temporary() if security else None,
        name=g.get("name") or _new_name(),
        worker=worker,
        scheduler=scheduler,
        n_workers=g.get("n_workers", 0),
        start_timeout=g.get("start_timeout", dask.config.get("deploy.start-timeout", 60)),
        queue_timeout=g.get("queue_timeout", dask.config.get("deploy.queue-timeout", None)),
        max_failures=g.get("max_failures", dask.config.get("deploy.max-failures", 5)),
        shutdown_on_close=g.get("shutdown_on_close", True),
        poll_interval=g.get("poll_interval", dask.config.get("deploy.poll-interval", 1.0)),
        backend_options=backend_options,
        pools=pools,
    )
    extra = g.get("extensions")
    if extra is not None and not isinstance(extra, Mapping):
        raise SpecError("extensions", extra, "expected a mapping of name -> plugin object")
    client = ClientOptions(
        asynchronous=g.get("asynchronous", False), loop=g.get("loop"),
        extensions={**installed_extensions(), **extra} if extra else None,
        quiet=g.get("quiet", False), silence_logs=g.get("silence_logs", logging.WARN),
        dashboard_proxy_address=check_address(
            g.get("dashboard_proxy_address"), "dashboard_proxy_address") or "127.0.0.1:0",
        dashboard_token=g.get("dashboard_token"))
    return spec, client
