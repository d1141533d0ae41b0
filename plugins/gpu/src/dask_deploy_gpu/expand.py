"""The ``gpu`` extension: ``gpus=N`` on any backend becomes N workers, one per GPU.

Loaded into every cluster's plugin manager (entry point group ``dask_deploy.extensions``), so
it stays light: NVML is imported only when a unit on this machine asks for GPUs. It implements
only the plain ``deploy_expand_resources`` hook, never a backend hook.

>>> Cluster.from_name("local", n_workers=1, gpus=4)   # doctest: +SKIP
... # 4 workers <name>-0-0 .. <name>-0-3, CUDA_VISIBLE_DEVICES 0,1,2,3 / 1,2,3,0 / ...
"""

from __future__ import annotations

from dask_deploy import ClusterSpec, WorkerSpec, hookimpl

from ._expand import expand

__all__ = ["deploy_expand_resources"]


@hookimpl
def deploy_expand_resources(cluster: ClusterSpec, workers: list[WorkerSpec]) -> None:
    """One worker per GPU, ``CUDA_VISIBLE_DEVICES`` rotated; see :func:`dask_deploy_gpu._expand.expand`."""
    expanded = expand(cluster, workers)
    if expanded is not None:
        workers[:] = expanded
