"""Finding backends through entry points and building each cluster's plugin manager."""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from . import hookspecs
from ._errors import BackendNotFound, DeployError
from ._specs import BackendInfo, ClusterSpec

__all__ = ["BACKEND_GROUP", "EXTENSION_GROUP", "backend_capabilities", "backend_info", "capabilities",
           "cluster_plugin_manager",
           "get_plugin_manager", "installed_backends", "register_backend"]

#: Entry points that provide backends: ``ssh = "dask_deploy_ssh.plugin"`` (the core's own
#: ``local = "dask_deploy._local"`` too: it is found and loaded like every other backend).
BACKEND_GROUP = "dask_deploy"
#: Entry points of composable plugins loaded into every cluster (resource expansion).
EXTENSION_GROUP = "dask_deploy.extensions"
#: Comma-separated entry point names that are never loaded.
DISABLE_ENV = "DASK_DEPLOY_DISABLE_PLUGINS"

# Which pip extra of the meta-package installs which backend, for the "not found" error.
_EXTRAS = {
    "ssh": "ssh", "slurm": "jobqueue", "pbs": "jobqueue", "sge": "jobqueue", "lsf": "jobqueue",
    "htcondor": "jobqueue", "moab": "jobqueue", "oar": "jobqueue", "k8s": "k8s", "ecs": "cloud",
    "fargate": "cloud", "ec2": "cloud",
    "cuda": "gpu", "fake": "conformance",
}


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _entry_points(group: str) -> dict[str, EntryPoint]:
    disabled = _disabled()
    return {ep.name: ep for ep in entry_points(group=group) if ep.name not in disabled}


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def get_plugin_manager(load: bool = True) -> pluggy.PluginManager:
    """A plugin manager with every installed backend plugin and extension registered.

    Imports every plugin module (they are light: client libraries load in factories), so
    use it for listing; ``Cluster.from_name`` loads only the one backend it needs. The
    core's ``local`` backend is one of them, through its entry point. ``load=False``: the
    hookspecs only, no plugin imported.
    """
    pm = _new_manager()
    if load:
        for group in (BACKEND_GROUP, EXTENSION_GROUP):
            for name, ep in sorted(_entry_points(group).items()):
                try:
                    plugin = ep.load()
                except Exception as e:
                    warnings.warn(f"dask-deploy plugin {name!r} ({ep.value}) failed to import: {e}",
                                  RuntimeWarning, stacklevel=2)
                    continue
                if pm.get_plugin(name) is None and not pm.is_registered(plugin):
                    pm.register(plugin, name=name)
    pm.check_pending()
    return pm


def installed_backends() -> dict[str, BackendInfo]:
    """Every installed backend by name (this imports every backend plugin module)."""
    pm = get_plugin_manager()
    infos = [info for batch in pm.hook.deploy_backends() for info in batch]
    infos += _REGISTERED.values()
    return {info.name: info for info in sorted(infos, key=lambda i: i.name)}


_REGISTERED: dict[str, BackendInfo] = {}


def register_backend(info: BackendInfo) -> None:
    """Make a backend available by name without an entry point (tests, notebooks).

    Entry points are the way for installed plugins; this is for a backend defined in the
    running program. A later registration under the same name replaces the earlier one.
    """
    _REGISTERED[info.name] = info
    backend_info.cache_clear()


@functools.cache
def backend_info(name: str) -> BackendInfo:
    """The :class:`BackendInfo` of backend ``name``, importing only the plugin that provides it."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    eps = _entry_points(BACKEND_GROUP)
    if name in eps:
        pm = _new_manager()
        pm.register(eps[name].load(), name=name)
        for batch in pm.hook.deploy_backends():
            for info in batch:
                if info.name == name:
                    return info
    available = ", ".join(sorted({*eps, *_REGISTERED}))
    extra = _EXTRAS.get(name)
    hint = (f'install it with: pip install "dask-deploy[{extra}]"' if extra else
            "a third-party backend must register an entry point in the 'dask_deploy' group")
    if name in _disabled():
        hint = f"it is disabled by {DISABLE_ENV}"
    raise BackendNotFound(f"no backend named {name!r} (installed: {available}); {hint}")


def cluster_plugin_manager(spec: ClusterSpec, extensions: Mapping[str, Any] | None = None,
                           ) -> tuple[pluggy.PluginManager, object]:
    """The plugin manager of one cluster: its one backend plugin plus the extensions.

    Returns the manager and the backend plugin object. Extensions that implement a backend
    hook are refused, so every backend hook has at most one implementation (see hookspecs).
    """
    pm = _new_manager()
    if extensions is None:
        extensions = installed_extensions()
    # pluggy calls the last registered first: extensions in reverse, the backend last, so
    # that plain hooks run backend first, then extensions in the order they were given.
    for name, plugin in reversed(list(extensions.items())):
        pm.register(plugin, name=f"extension:{name}")
        for hook in (*hookspecs.BACKEND_HOOKS, *hookspecs.BACKEND_PLAIN_HOOKS):
            if _implementations(pm, hook):
                raise DeployError(f"extension plugin {name!r} implements the backend hook {hook}; "
                                  "only a cluster's backend may (wrappers may: see dask_deploy.hookspecs)")
    backend = backend_info(spec.backend).factory(spec)
    pm.register(backend, name=f"backend:{spec.backend}")
    pm.check_pending()
    return pm, backend


def installed_extensions() -> dict[str, Any]:
    """The composable plugins every cluster loads (entry point group ``dask_deploy.extensions``)."""
    return {name: ep.load() for name, ep in _entry_points(EXTENSION_GROUP).items()}


def _implementations(pm: pluggy.PluginManager, hook: str) -> list[Any]:
    """The implementations of ``hook`` that return its result (wrappers do not)."""
    return [i for i in getattr(pm.hook, hook).get_hookimpls() if not (i.hookwrapper or i.wrapper)]


def backend_capabilities(name: str, options: Mapping[str, Any] | None = None) -> frozenset[str]:
    """The capabilities of backend ``name`` built with ``options`` (its own options only are
    used; building the backend object does no I/O), e.g. for listings and the conformance
    suite's skips."""
    info = backend_info(name)
    fields = {f.name for f in dataclasses.fields(info.options)} if info.options else set()
    opts = (info.options(**{k: v for k, v in (options or {}).items() if k in fields})
            if info.options else None)
    pm, _ = cluster_plugin_manager(ClusterSpec(backend=name, name="capabilities", backend_options=opts),
                                   extensions={})
    return capabilities(info, pm)


def capabilities(info: BackendInfo, pm: pluggy.PluginManager) -> frozenset[str]:
    """What a cluster's backend can do: its declared capabilities, plus those that only say
    "this hook is implemented" (``remote_scheduler``), read from the hooks themselves."""
    derived = {"remote_scheduler"} if _implementations(pm, "deploy_start_scheduler") else set()
    return frozenset(set(info.capabilities) - {"remote_scheduler"} | derived)
