"""The options of the batch-system backends: dask-jobqueue's names, validated at the edge.

Moving from ``SLURMCluster(cores=8, memory="16GB", queue="regular")`` to
``Cluster.from_name("slurm", cores=8, memory="16GB", queue="regular")`` is the whole
migration: the option names and meanings are dask-jobqueue's. A ``jobqueue.yaml`` that is
already in the Dask configuration (``jobqueue.<system>.*``) supplies defaults when
``deploy.<system>`` is absent; dask-jobqueue's deprecated spellings (``env_extra``,
``job_extra``, ``extra``, ``header_skip``...) are accepted too (the tables below).

``cores`` and ``memory`` are what one *job* asks the batch system for; ``processes``
workers share them, each with ``cores // processes`` threads and ``memory / processes``
bytes (dask-jobqueue's rule).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from dask.utils import parse_bytes
from dask_deploy import Alias, CompatTable, Convert, SpecError

__all__ = [
    "HTCONDOR_COMPAT",
    "JOBQUEUE_COMPAT",
    "LSF_COMPAT",
    "MOAB_COMPAT",
    "OAR_COMPAT",
    "PBS_COMPAT",
    "SGE_COMPAT",
    "SLURM_COMPAT",
    "HTCondorOptions",
    "JobqueueOptions",
    "LSFOptions",
    "MoabOptions",
    "OAROptions",
    "PBSOptions",
    "SGEOptions",
    "SLURMOptions",
    "default_processes",
    "defaults",
    "parse_walltime",
]


def _tuple_of_str(value: object, option: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence) \
            or not all(isinstance(v, str) for v in value):
        raise SpecError(option, value, "expected a list of strings")
    return tuple(value)


#: What ends a line for a batch system or a shell (C0/C1 controls, Unicode line breaks).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_directive(value: str, option: str, unquotable: str = "") -> str:
    """Refuse a value for a job-script header that could end its directive line.

    A newline would start a line of its own, which bash runs as a command; other control
    characters have no business in a queue, path or account. ``unquotable`` are characters
    the system's directive parser cannot carry inside quotes.
    """
    if _CONTROL.search(value):
        raise SpecError(option, value, "a job-script directive cannot hold a newline or "
                        "other control character: remove it")
    bad = "".join(sorted(set(value) & set(unquotable)))
    if bad:
        raise SpecError(option, value, f"this batch system's directives cannot quote {bad!r}: "
                        "remove it")
    return value


def check_argument(value: str, option: str) -> str:
    """Refuse a value for the job script's body (always quoted there) that holds NUL,
    which no program argument, variable or script line can carry."""
    if "\0" in value:
        raise SpecError(option, value, "a NUL character cannot be passed to a program: remove it")
    return value


def check_log_directory(value: str, special: str) -> str:
    """Refuse a log directory with a character the system expands in output paths
    (``%j``, ``$JOB_ID``, ``host:path``...), so output files land where we read them."""
    bad = "".join(sorted(set(value) & set(special)))
    if bad:
        raise SpecError("log_directory", value, f"this batch system reads {bad!r} specially "
                        "in output paths: choose a directory without it")
    return value


def _opt_int(value: object, option: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(option, value, f"expected an integer >= {minimum} (or None)")
    return value


def _opt_bytes(value: object, option: str) -> int | None:
    if value is None:
        return None
    try:
        parsed = parse_bytes(value) if isinstance(value, str) else value
    except (ValueError, TypeError):
        parsed = None
    if isinstance(parsed, bool) or not isinstance(parsed, (int, float)) or parsed <= 0:
        raise SpecError(option, value, 'expected a size such as "16GB" or a number of bytes')
    return int(parsed)


def _opt_seconds(value: object, option: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SpecError(option, value, "expected a number of seconds >= 0")
    return float(value)


_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_walltime(value: str, colon_means: str = "minutes:seconds") -> float:
    """Seconds in a walltime: ``[D-]HH:MM:SS``, ``MM:SS`` or ``HH:MM``, or plain minutes.

    One colon is ambiguous between systems: SLURM reads ``30:00`` as minutes:seconds and
    LSF as hours:minutes; ``colon_means`` says which (``"hours:minutes"`` for LSF).
    """
    m = _WALLTIME.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise SpecError("walltime", value, 'expected "[D-]HH:MM:SS" (e.g. "01:30:00")')
    days, a, b, c = (int(g) if g else None for g in m.groups())
    assert a is not None
    if c is not None:
        seconds = a * 3600 + (b or 0) * 60 + c
    elif b is not None:
        seconds = a * 3600 + b * 60 if colon_means == "hours:minutes" else a * 60 + b
    else:
        seconds = a * 60
    return float(seconds + (days or 0) * 86400)


def default_processes(cores: int) -> int:
    """dask-jobqueue's (and distributed's) rule: one single-threaded process per core up to
    4 cores, then the smallest divisor of ``cores`` that is at least its square root."""
    if cores <= 4:
        return cores
    return min(p for p in range(1, cores + 1) if cores % p == 0 and p >= math.sqrt(cores))


# --------------------------------------------------------------------------------------
# dask-jobqueue's names (options and jobqueue.yaml keys), as data the core applies
# --------------------------------------------------------------------------------------


def _scheduler_cls(value: object) -> dict[str, Any]:
    name = value if isinstance(value, str) else \
        f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
    if str(name).split(".")[-1] == "Scheduler" and str(name).startswith("distributed"):
        return {}
    raise SpecError("scheduler_cls", value, "the scheduler is a distributed.Scheduler (in this "
                    'process, or in a job of its own with scheduler="remote")')


def _no_args(option: str, why: str) -> Any:
    def convert(value: object) -> dict[str, Any]:
        if value in (None, [], (), ""):
            return {}
        raise SpecError(option, value, why)
    return convert


def _condor_directives(option: str) -> Any:
    """HTCondor's dict form (``{"+Owner": '"me"'}``) as submit-description lines."""
    def convert(value: object) -> dict[str, Any] | None:
        if isinstance(value, Mapping):
            return {"job_extra_directives": [f"{k} = {v}" for k, v in value.items()]}
        return {"job_extra_directives": value} if option != "job_extra_directives" else None
    return convert


_SAME = (
    "cores", "memory", "processes", "queue", "account", "walltime",
    "job_extra_directives", "job_directives_skip", "job_script_prologue", "python",
    "log_directory", "interface", "death_timeout", "local_directory", "worker_extra_args",
    "worker_command", "nanny", "scheduler_options",
)

#: dask-jobqueue's names for every batch system (``SLURMCluster``, ``PBSCluster``, ...).
JOBQUEUE_COMPAT = CompatTable(
    anchor="dask-jobqueue",
    config=("jobqueue.{section}",),
    section_option="config_name",
    entries=(
        *(Alias(n, n, "same") for n in _SAME),
        Alias("shebang", "shebang", "same", anchor_default="#!/usr/bin/env condor_submit"),
        *(Alias(n, n, "same", where="option") for n in (
            "n_workers", "name", "silence_logs", "asynchronous", "loop", "security")),
        Alias("config_name", None, "same", where="option",
              reason="selects the jobqueue.<config_name> section, as in dask-jobqueue"),
        Alias("extra", "worker_extra_args", "warn", reason="deprecated in dask-jobqueue too"),
        Alias("env_extra", "job_script_prologue", "warn",
              reason="deprecated in dask-jobqueue too"),
        Alias("job_extra", "job_extra_directives", "warn",
              reason="deprecated in dask-jobqueue too"),
        Alias("header_skip", "job_directives_skip", "warn",
              reason="deprecated in dask-jobqueue too"),
        Alias("name", None, "warn", where="config", anchor_default="dask-worker",
              reason="jobs are named dask-deploy.<cluster>.<role> so that gc and re-attach "
                     "find them; name= names the cluster"),
        Alias("job_name", None, "warn", where="option",
              reason="jobs are named dask-deploy.<cluster>.<role> so that gc and re-attach "
                     "find them; name= names the cluster"),
        Alias("shared_temp_directory", None, "warn",
              reason="each cluster's TLS files go to <log_directory>/<cluster>/ (user-only): "
                     "put log_directory on a filesystem the compute nodes share"),
        Alias("protocol", None, "same", convert=Convert.protocol, where="option",
              reason='"tcp://" is plain TCP; "tls://" is security=True'),
        Alias("scheduler_cls", None, "same", convert=_scheduler_cls, where="option",
              reason="distributed.Scheduler only"),
        Alias("job_cls", None, "refuse", where="option",
              reason="jobs are written by the backend for each system: choose the backend "
                     "(slurm, pbs, sge, lsf, htcondor, moab, oar) instead of a Job class"),
    ),
)

SLURM_COMPAT = JOBQUEUE_COMPAT.extended(
    *(Alias(n, n, "same") for n in ("job_cpu", "job_mem")), anchor="dask-jobqueue SLURMCluster")
PBS_COMPAT = JOBQUEUE_COMPAT.extended(
    Alias("resource_spec", "resource_spec", "same"),
    Alias("project", "account", "warn", reason="renamed to account (-A) in dask-jobqueue too"),
    anchor="dask-jobqueue PBSCluster")
SGE_COMPAT = JOBQUEUE_COMPAT.extended(
    *(Alias(n, n, "same") for n in ("resource_spec", "project")), anchor="dask-jobqueue SGECluster")

MOAB_COMPAT = PBS_COMPAT.extended(anchor="dask-jobqueue MoabCluster")
OAR_COMPAT = JOBQUEUE_COMPAT.extended(
    *(Alias(n, n, "same") for n in ("resource_spec", "project", "memory_per_core_property_name")),
    anchor="dask-jobqueue OARCluster")

#: LSFCluster adds ``use_stdin`` (``bsub < script``, which is what we always do).
LSF_COMPAT = JOBQUEUE_COMPAT.extended(
    *(Alias(n, n, "same") for n in ("ncpus", "mem", "lsf_units", "project")),
    Alias("use_stdin", None, "same", convert=lambda v: {}, anchor_default=True,
          reason="jobs are always submitted as `bsub < script` (bsub reads #BSUB lines "
                 "only from stdin)"),
    anchor="dask-jobqueue LSFCluster",
)

#: HTCondorCluster: ``job_extra_directives`` may be a dict of submit-description lines.
HTCONDOR_COMPAT = JOBQUEUE_COMPAT.extended(
    Alias("disk", "disk", "same"),
    Alias("job_extra_directives", "job_extra_directives", "same",
          convert=_condor_directives("job_extra_directives"),
          reason='the dict form becomes "key = value" lines'),
    Alias("job_extra", "job_extra_directives", "warn", convert=_condor_directives("job_extra"),
          reason="deprecated in dask-jobqueue too"),
    Alias("submit_command_extra", None, "same", where="both",
          convert=_no_args("submit_command_extra", "condor_submit's arguments are the "
                           "backend's; put submit settings in job_extra_directives"),
          reason="empty only; condor_submit's arguments are the backend's"),
    Alias("cancel_command_extra", None, "same", where="both",
          convert=_no_args("cancel_command_extra", "condor_rm's arguments are the backend's"),
          reason="empty only; condor_rm's arguments are the backend's"),
    anchor="dask-jobqueue HTCondorCluster",
)


@dataclass(frozen=True)
class JobqueueOptions:
    """Options shared by every batch system (dask-jobqueue's names and meanings).

    Fields left ``None`` take a system default at submission time, e.g. ``python`` is the
    interpreter of this process, as in dask-jobqueue (the same path must exist on the
    compute nodes).
    """

    #: Cores one job asks for (default: ``threads_per_worker * processes``).
    cores: int | None = None
    #: Memory one job asks for, e.g. ``"16GB"`` (default: none asked; workers use "auto").
    memory: str | int | None = None
    #: Worker processes per job; they share ``cores`` and ``memory``.
    processes: int | None = None
    queue: str | None = None
    account: str | None = None
    #: Wall-clock limit in the system's format; workers retire ``lifetime_margin`` before it.
    walltime: str | None = "00:30:00"
    #: Extra lines for the job script's header, each prefixed with the system's directive.
    job_extra_directives: Sequence[str] = ()
    #: Generated directives to leave out: any directive line containing one of these strings.
    job_directives_skip: Sequence[str] = ()
    #: Shell lines run before the workers start (``module load``, ``source activate``...).
    job_script_prologue: Sequence[str] = ()
    #: The interpreter on the compute nodes (default: this process's ``sys.executable``).
    python: str | None = None
    #: A directory on a filesystem shared with the compute nodes: job scripts, output files
    #: and the TLS files of each cluster go to ``<log_directory>/<cluster name>/``.
    #: Default: ``deploy.log-directory`` or ``~/.dask-deploy/jobqueue``.
    log_directory: str | None = None
    #: Network interface the workers (and a remote scheduler) bind to, e.g. ``"ib0"``.
    interface: str | None = None
    #: Seconds a worker waits for an unreachable scheduler before it exits.
    death_timeout: float | None = 60
    local_directory: str | None = None
    #: Extra command-line arguments of each ``dask worker``.
    worker_extra_args: Sequence[str] = ()
    #: The module run with ``python -m`` for each worker.
    worker_command: str = "distributed.cli.dask_worker"
    shebang: str = "#!/usr/bin/env bash"
    #: Submit many workers at once as one job array (one submission, one queue entry).
    array: bool = True
    #: Seconds between the graceful stop (SIGTERM, so the job ends COMPLETED) and the kill.
    stop_grace: float = 10.0
    #: How long before ``walltime`` workers retire (``--lifetime``); default: 10% of the
    #: walltime, between 30 s and 5 min.
    lifetime_margin: float | None = None
    #: Resources of the scheduler's own job when ``scheduler="remote"``.
    scheduler_cores: int = 1
    scheduler_memory: str | int | None = None
    #: Wall-clock limit of the scheduler's job with ``scheduler="remote"`` (default:
    #: ``walltime``, which the queue already admits). The cluster ends with it: when the
    #: job hits it, ``cluster.error`` becomes a ``SchedulerLost`` naming the job. Long
    #: sessions set it longer; the default ``idle_timeout`` ends an unused one earlier.
    scheduler_walltime: str | None = None

    #: Characters this system's directive parser cannot carry inside a quoted value.
    directive_unquotable: ClassVar[str] = '"\\'
    #: dask-jobqueue's names and jobqueue.yaml keys, translated by the core.
    anchor_compat: ClassVar[CompatTable] = JOBQUEUE_COMPAT
    #: Characters this system expands in output paths (see :func:`check_log_directory`).
    log_dir_special: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _opt_int(self.cores, "cores")
        _opt_bytes(self.memory, "memory")
        _opt_int(self.processes, "processes")
        for name in ("queue", "account", "project", "resource_spec", "walltime", "python",
                     "log_directory", "interface", "local_directory", "scheduler_walltime"):
            value = getattr(self, name, None)  # project, resource_spec: some systems only
            if value is not None and (not isinstance(value, str) or not value):
                raise SpecError(name, value, "expected a non-empty string (or None)")
        for name in ("job_extra_directives", "job_directives_skip", "job_script_prologue",
                     "worker_extra_args"):
            object.__setattr__(self, name, _tuple_of_str(getattr(self, name), name))
        self._check_text()
        for name in ("walltime", "scheduler_walltime"):
            if getattr(self, name):
                try:
                    parse_walltime(getattr(self, name))
                except SpecError as e:
                    raise SpecError(name, e.value, e.accepted) from None
        _opt_seconds(self.death_timeout, "death_timeout")
        _opt_seconds(self.lifetime_margin, "lifetime_margin")
        if _opt_seconds(self.stop_grace, "stop_grace") is None:
            raise SpecError("stop_grace", None, "expected a number of seconds >= 0")
        # ``nanny`` is the generic option (WorkerSpec.nanny, capability "nanny"): off by
        # default, as the batch system already supervises the job and the reconciler
        # replaces a job whose worker died, while a nanny doubles each worker's memory.
        if not isinstance(self.array, bool):
            raise SpecError("array", self.array, "expected True or False")
        if not isinstance(self.worker_command, str) or not self.worker_command:
            raise SpecError("worker_command", self.worker_command,
                            'expected a module name such as "distributed.cli.dask_worker"')
        _opt_int(self.scheduler_cores, "scheduler_cores")
        _opt_bytes(self.scheduler_memory, "scheduler_memory")
        if self.cores is not None and self.processes is not None and self.processes > self.cores:
            raise SpecError("processes", self.processes,
                            f"expected at most cores={self.cores} processes per job")

    def _check_text(self) -> None:
        """No option becomes shell: header values are refused when they could end their
        directive line (the systems quote them); body values are quoted, so only NUL is
        refused. ``job_script_prologue`` is shell by definition, as in dask-jobqueue."""
        if not isinstance(self.shebang, str) or not self.shebang.startswith("#!"):
            raise SpecError("shebang", self.shebang, 'expected an interpreter line such as '
                            '"#!/usr/bin/env bash"')
        check_directive(self.shebang, "shebang")
        for name in ("queue", "account", "project", "resource_spec", "walltime",
                     "scheduler_walltime", "log_directory"):
            value = getattr(self, name, None)
            if value:
                check_directive(value, name, self.directive_unquotable)
        if self.log_directory:
            check_log_directory(self.log_directory, self.log_dir_special)
        for line in self.job_extra_directives:  # the system's own syntax, written as given
            check_directive(line, "job_extra_directives")
        for name in ("python", "interface", "local_directory", "worker_command"):
            value = getattr(self, name)
            if isinstance(value, str):
                check_argument(value, name)
        for name in ("worker_extra_args", "job_script_prologue"):
            for value in getattr(self, name):
                check_argument(value, name)

    @property
    def memory_bytes(self) -> int | None:
        return _opt_bytes(self.memory, "memory")


@dataclass(frozen=True)
class SLURMOptions(JobqueueOptions):
    """SLURM: ``--cpus-per-task`` and ``--mem`` default to ``cores`` and ``memory``."""

    # sbatch reads quotes and backslash escapes in #SBATCH lines (any value can be quoted);
    # in --output, "%" is escaped as "%%", while a backslash turns off the %j patterns.
    directive_unquotable: ClassVar[str] = ""
    log_dir_special: ClassVar[str] = "\\"
    anchor_compat: ClassVar[CompatTable] = SLURM_COMPAT

    #: ``--cpus-per-task`` when it should differ from ``cores``.
    job_cpu: int | None = None
    #: ``--mem`` when it should differ from ``memory``.
    job_mem: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _opt_int(self.job_cpu, "job_cpu")
        _opt_bytes(self.job_mem, "job_mem")


@dataclass(frozen=True)
class PBSOptions(JobqueueOptions):
    """PBS Pro / OpenPBS: ``resource_spec`` replaces the generated ``-l select=...``."""

    log_dir_special: ClassVar[str] = ":"  # -o [host:]path
    anchor_compat: ClassVar[CompatTable] = PBS_COMPAT

    resource_spec: str | None = None


@dataclass(frozen=True)
class SGEOptions(JobqueueOptions):
    """Grid Engine: ``resource_spec`` is the ``-l`` list; ``project`` is ``-P``."""

    log_dir_special: ClassVar[str] = "$:,"  # -o [[host]:]path[,...] with $JOB_ID and the like
    anchor_compat: ClassVar[CompatTable] = SGE_COMPAT

    resource_spec: str | None = None
    project: str | None = None


@dataclass(frozen=True)
class LSFOptions(JobqueueOptions):
    """LSF: ``ncpus``/``mem`` default to ``cores``/``memory``; ``project`` is ``-P``."""

    log_dir_special: ClassVar[str] = "%"  # -o with %J and %I
    anchor_compat: ClassVar[CompatTable] = LSF_COMPAT

    ncpus: int | None = None
    mem: str | int | None = None
    project: str | None = None
    #: Unit of ``-M``/``rusage[mem=]`` as configured by LSF_UNIT_FOR_LIMITS.
    lsf_units: str = "KB"

    def __post_init__(self) -> None:
        super().__post_init__()
        _opt_int(self.ncpus, "ncpus")
        _opt_bytes(self.mem, "mem")
        if not isinstance(self.lsf_units, str) or self.lsf_units.upper() not in ("B", "KB", "MB", "GB", "TB"):
            raise SpecError("lsf_units", self.lsf_units, 'expected one of "KB", "MB", "GB", "TB"')


@dataclass(frozen=True)
class HTCondorOptions(JobqueueOptions):
    """HTCondor: ``disk`` is ``request_disk``; there is no queue or wall clock by default."""

    # Submit-description values run to the end of their line (nothing to quote); "$" starts
    # a macro such as $(Cluster).
    directive_unquotable: ClassVar[str] = ""
    log_dir_special: ClassVar[str] = "$"
    anchor_compat: ClassVar[CompatTable] = HTCONDOR_COMPAT

    disk: str | int | None = None
    walltime: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _opt_bytes(self.disk, "disk")


@dataclass(frozen=True)
class MoabOptions(PBSOptions):
    """Moab (over Torque): PBS-style scripts submitted with ``msub``; dask-jobqueue's
    ``MoabCluster`` takes ``PBSCluster``'s options, and so does this."""

    anchor_compat: ClassVar[CompatTable] = MOAB_COMPAT


@dataclass(frozen=True)
class OAROptions(JobqueueOptions):
    """OAR: ``resource_spec`` replaces ``/nodes=1/core=<cores>`` in ``-l``; ``project`` is
    ``--project``; ``memory_per_core_property_name`` (e.g. ``memcore``) turns ``memory`` into
    a ``-p`` property on the cores, as in dask-jobqueue (``"not_applicable"``: none)."""

    # oarsub reads "#OAR" lines as shell words; "%" in -O/-E names %jobid% and the like.
    log_dir_special: ClassVar[str] = "%"

    resource_spec: str | None = None
    project: str | None = None
    memory_per_core_property_name: str | None = None

    anchor_compat: ClassVar[CompatTable] = OAR_COMPAT

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.memory_per_core_property_name
        if value is not None and (not isinstance(value, str)
                                  or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", value)):
            raise SpecError("memory_per_core_property_name", value,
                            'expected a property name such as "memcore" (letters, digits, _)')


# --------------------------------------------------------------------------------------
# Defaults: jobqueue.yaml compatibility and the generic options derived from cores/memory
# --------------------------------------------------------------------------------------

def _job_processes(options: Mapping[str, Any]) -> int:
    if options.get("processes"):
        return int(options["processes"])
    cores = options.get("cores")
    return default_processes(cores) if isinstance(cores, int) and cores > 0 else 1


#: Default ``idle_timeout`` (seconds) of a remote scheduler: 20 minutes, as Coiled's.
REMOTE_IDLE_TIMEOUT = 1200.0


def defaults(system: str, options_cls: type[JobqueueOptions]) -> dict[str, Any]:
    """``BackendInfo.defaults`` of one system.

    An existing ``jobqueue.yaml`` is read by the core through :data:`JOBQUEUE_COMPAT` when
    ``deploy.<system>`` is absent. The generic per-worker options follow from the per-job
    ones: ``threads_per_worker = cores // processes`` and
    ``memory_limit = memory / processes``. Scheduler traffic is TLS by default (the workers
    run on other machines), and a job may wait in the queue for a long time, so the start
    timeout is generous.
    """
    out: dict[str, Any] = {}

    def threads(options: dict[str, Any]) -> int:
        cores = options.get("cores")
        return max(1, cores // _job_processes(options)) if isinstance(cores, int) else 1

    def memory_limit(options: dict[str, Any]) -> int | str:
        memory = _opt_bytes(options.get("memory"), "memory")
        return memory // _job_processes(options) if memory else "auto"

    def idle_timeout(options: dict[str, Any]) -> float | None:
        # A scheduler in a job of its own outlives a crashed client: it ends itself after
        # this long without work (None turns it off). One in the client ends with it.
        return REMOTE_IDLE_TIMEOUT if options.get("scheduler") == "remote" else None

    out.update(threads_per_worker=threads, memory_limit=memory_limit, security=True,
               poll_interval=2.0, start_timeout=300.0, idle_timeout=idle_timeout)
    return out


def field_names(cls: type[Any]) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))

