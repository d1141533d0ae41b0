"""dask-deploy batch-system backends: SLURM, PBS, SGE, LSF, HTCondor, Moab and OAR, with job arrays.

>>> from dask_deploy import Cluster
>>> cluster = Cluster.from_name("slurm", cores=8, memory="16GB", queue="regular")  # doctest: +SKIP
>>> print(job_script(cluster))                                                   # doctest: +SKIP

The options are dask-jobqueue's (``cores``, ``memory``, ``processes``, ``queue``,
``account``, ``walltime``, ``job_extra_directives``, ``job_script_prologue``, ``python``,
``log_directory``, ...), so ``SLURMCluster(...)`` becomes ``Cluster.from_name("slurm", ...)``.
"""

from __future__ import annotations

from typing import Any

from ._options import (
    HTCondorOptions,
    JobqueueOptions,
    LSFOptions,
    MoabOptions,
    OAROptions,
    PBSOptions,
    SGEOptions,
    SLURMOptions,
)

__all__ = [
    "HTCondorOptions",
    "JobqueueOptions",
    "LSFOptions",
    "MoabOptions",
    "OAROptions",
    "PBSOptions",
    "SGEOptions",
    "SLURMOptions",
    "job_script",
]


def job_script(cluster_or_spec: Any, count: int = 1) -> str:
    """The job script a cluster submits for ``count`` workers' jobs (dask-jobqueue's
    ``cluster.job_script()``).

    Takes a running cluster made with ``Cluster.from_name("slurm", ...)`` (its scheduler
    address and expanded workers are filled in) or a bare ``ClusterSpec`` (the address is a
    placeholder). The same is reachable as ``cluster.backend.job_script()``.
    """
    from ._backend import JobqueueBackend

    backend = getattr(cluster_or_spec, "backend", None)
    if isinstance(backend, JobqueueBackend):
        return backend.job_script(cluster_or_spec.scheduler_address, count,
                                  getattr(cluster_or_spec, "_unit_template", None))
    spec = getattr(cluster_or_spec, "spec", cluster_or_spec)
    if isinstance(getattr(spec, "backend", None), str):
        return JobqueueBackend(spec).job_script(None, count)
    raise TypeError(f"expected a jobqueue cluster or its ClusterSpec, got {cluster_or_spec!r}")
