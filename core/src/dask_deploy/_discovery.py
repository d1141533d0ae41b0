"""Discovery of our running clusters for Dask tooling (the ``dask_cluster_discovery`` entry point).

dask-ctl style tools list clusters through :func:`discover` and re-attach with
``DetachedCluster.from_name``. Listing reads only the records (:mod:`dask_deploy._state`);
the cluster machinery (:mod:`dask_deploy._cluster`) loads only when one is re-attached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ._state import list_clusters

__all__ = ["DetachedCluster", "discover"]


class DetachedCluster:
    """What ``dask_cluster_discovery`` hands to Dask tooling: ``from_name`` re-attaches."""

    @staticmethod
    def from_name(name: str) -> Any:
        # Imported here so that listing stays light; _cluster never imports this module.
        from ._cluster import attach

        return attach(name)


async def discover() -> AsyncIterator[tuple[str, type]]:
    """The ``dask_cluster_discovery`` entry point: our live clusters, by name."""
    for record in list_clusters():
        if record.owner_alive() or (record.detached and record.scheduler_answers(0.5)):
            yield record.name, DetachedCluster
