"""dask-deploy: one way to start Dask clusters anywhere.

>>> from dask_deploy import Cluster
>>> cluster = Cluster.from_name("local", n_workers=4)     # doctest: +SKIP
>>> client = cluster.get_client()                          # doctest: +SKIP

Backends are plugins found through the ``dask_deploy`` entry point group; the contract they
implement is :mod:`dask_deploy.hookspecs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._compat import Alias, CompatTable, Convert
from ._errors import (
    BackendError,
    BackendNotFound,
    CrashLoopError,
    DeployError,
    SchedulerLost,
    SpecError,
    StartTimeout,
)
from ._owner import created_tag, owner_tag
from ._plugins import get_plugin_manager, installed_backends, register_backend
from ._specs import (
    TLS,
    BackendInfo,
    ClusterSpec,
    Handle,
    Phase,
    Pool,
    SchedulerInfo,
    SchedulerSpec,
    Status,
    Unit,
    WorkerSpec,
)
from ._status import StatusReport, UnitStatus
from .hookspecs import hookimpl

# The cluster machinery (distributed.deploy, aiohttp) loads on first use, so that light
# users of this package (the worker agent, plugin listings) do not pay for it.
_LAZY = {
    "SpecCluster": "_cluster", "Cluster": "_cluster", "attach": "_cluster", "from_name": "_cluster",
    "ClusterRecord": "_state", "list_clusters": "_state",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        # ``Cluster.from_name("ssh", ...)``: every cluster is a SpecCluster
        value = module.SpecCluster if name == "Cluster" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from ._cluster import SpecCluster, attach, from_name
    from ._state import ClusterRecord, list_clusters

    Cluster = SpecCluster

__all__ = [
    "TLS",
    "Alias",
    "BackendError",
    "BackendInfo",
    "BackendNotFound",
    "Cluster",
    "ClusterRecord",
    "ClusterSpec",
    "CompatTable",
    "Convert",
    "CrashLoopError",
    "DeployError",
    "Handle",
    "Phase",
    "Pool",
    "SchedulerInfo",
    "SchedulerLost",
    "SchedulerSpec",
    "SpecCluster",
    "SpecError",
    "StartTimeout",
    "Status",
    "StatusReport",
    "Unit",
    "UnitStatus",
    "WorkerSpec",
    "attach",
    "created_tag",
    "from_name",
    "get_plugin_manager",
    "hookimpl",
    "installed_backends",
    "list_clusters",
    "owner_tag",
    "register_backend",
]
__version__ = "0.1.0"
