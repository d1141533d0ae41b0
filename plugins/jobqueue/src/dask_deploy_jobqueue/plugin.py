"""The ``slurm``, ``pbs``, ``sge``, ``lsf``, ``htcondor``, ``moab`` and ``oar`` backends (one
module for all seven).

Importing this module is cheap: the backend itself (:mod:`._backend`) is imported by the
factory when a cluster is made.
"""

from __future__ import annotations

from typing import Any

from dask_deploy import BackendInfo, ClusterSpec, hookimpl

from ._options import (
    HTCondorOptions,
    JobqueueOptions,
    LSFOptions,
    MoabOptions,
    OAROptions,
    PBSOptions,
    SGEOptions,
    SLURMOptions,
    defaults,
)

__all__ = ["deploy_backends"]

_SYSTEMS: tuple[tuple[str, str, type[JobqueueOptions]], ...] = (
    ("slurm", "Workers as SLURM jobs (job arrays, sbatch/squeue/scancel)", SLURMOptions),
    ("pbs", "Workers as PBS Pro / OpenPBS jobs (job arrays, qsub/qstat/qdel)", PBSOptions),
    ("sge", "Workers as Grid Engine jobs (task arrays, qsub/qstat/qdel)", SGEOptions),
    ("lsf", "Workers as LSF jobs (job arrays, bsub/bjobs/bkill)", LSFOptions),
    ("htcondor", "Workers as HTCondor jobs (one cluster of procs, condor_submit/condor_q)",
     HTCondorOptions),
    ("moab", "Workers as Moab jobs (PBS-style scripts, msub/showq/canceljob)", MoabOptions),
    ("oar", "Workers as OAR jobs (array jobs, oarsub/oarstat/oardel)", OAROptions),
)


#: Options a pool may set for its own jobs (``pools={"gpu": {"queue": "gpu"}}``): what goes
#: in a job's header or around its workers. Not ``cores``/``memory``/``processes``: they set
#: every pool's worker threads and memory (``defaults``) and the workers per job.
_POOL_OPTIONS = frozenset({"queue", "account", "walltime", "job_extra_directives",
                           "job_directives_skip", "job_script_prologue", "worker_extra_args",
                           "resource_spec", "project", "job_cpu", "job_mem"})


def _pool_options(options: type[JobqueueOptions]) -> frozenset[str]:
    import dataclasses

    return _POOL_OPTIONS & {f.name for f in dataclasses.fields(options)}


def _factory(spec: ClusterSpec) -> Any:
    from ._backend import JobqueueBackend

    return JobqueueBackend(spec)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [
        BackendInfo(
            name=name, summary=summary, factory=_factory, options=options,
            capabilities=frozenset({"scale", "logs_after_death", "dashboard",
                                    "detach", "nanny"}),
            extra="jobqueue", defaults=defaults(name, options),
            pool_options=_pool_options(options),
        )
        for name, summary, options in _SYSTEMS
    ]
