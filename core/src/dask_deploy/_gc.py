"""``dask-deploy gc``: find and remove what crashed or killed clients left behind."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import _state
from ._errors import SpecError
from ._plugins import backend_info, cluster_plugin_manager, installed_backends
from ._specs import ClusterSpec, Handle

__all__ = ["collect_garbage"]


def _live_clusters() -> set[str]:
    """Clusters that someone still uses: owned by a live process, or detached and answering."""
    return {r.name for r in _state.list_clusters()
            if r.owner_alive() or (r.detached and r.scheduler_answers())}


async def collect_garbage(backends: Iterable[str] | None = None,
                          options: Mapping[str, Mapping[str, Any]] | None = None,
                          dry_run: bool = False,
                          echo: Callable[[str], None] = print) -> list[Handle]:
    """Remove every resource tagged by dask-deploy whose cluster nobody uses any more.

    Asks each backend's ``deploy_discover`` hook (the backend itself, not our records) for
    everything it runs for dask-deploy, keeps what belongs to a live cluster (see
    :func:`_live_clusters`), and stops the rest with ``deploy_stop_workers``. Records of
    dead clusters are deleted. ``options[backend]`` are the backend options needed to reach
    it (hosts, namespace, region). Returns the handles found (removed unless ``dry_run``).
    """
    options = options or {}
    names = list(backends) if backends is not None else list(installed_backends())
    live = _live_clusters()
    orphans: list[Handle] = []
    for name in names:
        info = backend_info(name)
        try:
            opts = info.options(**options.get(name, {})) if info.options else None
        except (SpecError, TypeError) as e:
            echo(f"skipped {name}: {e} (pass its options with --option)")
            continue
        spec = ClusterSpec(backend=name, name="dask-deploy-gc", backend_options=opts)
        pm, _ = cluster_plugin_manager(spec, extensions={})
        try:
            result = pm.hook.deploy_discover(cluster=spec, cluster_id=None)
            found = list(await result) if result is not None else []
            mine = [h for h in found if h.cluster not in live]
            for cluster_id in sorted({h.cluster for h in mine}):
                handles = [h for h in mine if h.cluster == cluster_id]
                verb = "would remove" if dry_run else "removing"
                for h in handles:
                    echo(f"{verb} {name} {h.cluster} {h.name} ({h.backend_id})")
                if not dry_run:
                    stop = pm.hook.deploy_stop_workers(
                        cluster=dataclasses.replace(spec, name=cluster_id), handles=handles)
                    if stop is not None:
                        await stop
            orphans += mine
        except Exception as e:
            echo(f"skipped {name}: {type(e).__name__}: {e}")
        finally:
            teardown = pm.hook.deploy_teardown(cluster=spec)
            if teardown is not None:
                await teardown
    if not dry_run:
        for record in _state.list_clusters():
            if record.name not in live:
                _state.remove(record.name)
    return orphans
