"""dask-jobqueue's own documented examples, with only the class name changed, give the job
scripts they ask for.

Each example is dask-jobqueue code as its documentation shows it (origin in the comment).
``SLURMCluster(`` becomes ``Cluster.from_name("slurm", `` and nothing else; the spec is built
without starting anything, and our job script is compared with the one dask-jobqueue itself
writes for the same call (its ``Job`` classes build scripts without a scheduler): cores,
memory, queue, account/project, walltime, resource specs, extra directives, prologue lines,
worker processes per job and threads per worker.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
import warnings
from typing import Any

import dask.config
import pytest
import yaml
from dask.utils import parse_bytes
from dask_deploy._options import build_spec
from dask_deploy_jobqueue import job_script

#: (origin, code). The code is dask-jobqueue's, verbatim up to line breaks.
EXAMPLES = [
    # docs/source/index.rst ("Example")
    ("index.rst", 'PBSCluster(cores=36, memory="100GB", project="P48500028", queue="premium", '
                  'interface="ib0", walltime="02:00:00")'),
    # docs/source/examples.rst, "PBS Deployments"
    ("examples.rst PBS", 'PBSCluster(cores=36, processes=18, memory="6GB", account="P48500028", '
                         'queue="premium", resource_spec="select=1:ncpus=36:mem=109G", '
                         'walltime="02:00:00", interface="ib0")'),
    # docs/source/examples.rst, "SLURM Deployments"
    ("examples.rst SLURM", 'SLURMCluster(cores=8, processes=4, memory="16GB", '
                           'account="woodshole", walltime="01:00:00", queue="normal")'),
    # docs/source/examples.rst, "SGE Deployments" (its walltime "1500000" is SGE seconds; the
    # same request is written as HH:MM:SS here, see "noticed" in docs/migrating.md)
    ("examples.rst SGE", 'SGECluster(queue="default.q", cores=10, processes=10, memory="20GB", '
                         'walltime="01:00:00")'),
    # docs/source/examples.rst, "LSF Deployments"
    ("examples.rst LSF", 'LSFCluster(queue="general", project="cpp", walltime="00:30", '
                         'cores=15, memory="25GB")'),
    # docs/source/examples.rst, "SLURM Deployment: Providing additional arguments to the
    # dask-workers" (GPU nodes via --gres)
    ("examples.rst SLURM gres", 'SLURMCluster(cores=8, memory="24GB", '
                                'job_extra_directives=["--gres=gpu:1", "--exclusive"], '
                                'queue="gpu")'),
    # docs/source/advanced-tips-and-tricks.rst, "Skipping unrecognised line in submission
    # script with job_directives_skip"
    ("advanced-tips SLURM skip", 'SLURMCluster(cores=4, memory="8GB", '
                                 'job_directives_skip=["--mem"])'),
    # docs/source/advanced-tips-and-tricks.rst, "Run setup commands before starting the worker
    # with job_script_prologue"
    ("advanced-tips prologue", 'SLURMCluster(cores=2, memory="4GB", job_script_prologue=['
                               '"module load python/3.11", "source activate myenv"])'),
    # docs/source/examples.rst, "HTCondor Deployments"
    ("examples.rst HTCondor", 'HTCondorCluster(cores=1, memory="2GB", disk="1GB", '
                              'job_extra_directives={"+MyAttr": "\\"value\\""})'),
    # docs/source/changelog.rst 0.7.4 (the deprecated names, still accepted by dask-jobqueue)
    ("changelog 0.7.4", 'SLURMCluster(cores=4, memory="8GB", env_extra=["export LANG=C"], '
                        'job_extra=["--qos=debug"], header_skip=["--mem"], '
                        'extra=["--lifetime", "55m"])'),
    # docs/source/interactive.rst ("Chatting with your job scheduler"): LSF with its units
    ("interactive.rst LSF", 'LSFCluster(cores=24, processes=6, memory="100GB", '
                            'queue="general", walltime="01:00", lsf_units="MB")'),
]

#: dask-jobqueue's configuration examples (docs/source/configuration-setup.rst and
#: configurations.rst), run as ``XCluster()`` with the section in dask.config.
CONFIG_EXAMPLES = [
    ("configuration-setup.rst PBS (NCAR Cheyenne)", "PBSCluster()", """
        jobqueue:
          pbs:
            name: dask-worker
            cores: 36
            memory: 109GB
            processes: 9
            interface: ib0
            queue: regular
            account: null
            walltime: '00:30:00'
            resource-spec: select=1:ncpus=36:mem=109GB
            job-extra-directives: []
            log-directory: null
        """),
    ("configurations.rst SLURM (deprecated keys)", "SLURMCluster()", """
        jobqueue:
          slurm:
            name: dask-worker
            cores: 24
            memory: 120GB
            processes: 4
            queue: regular
            walltime: '01:00:00'
            env-extra: ['module load anaconda']
            job-extra: ['--exclusive']
            shared-temp-directory: null
        """),
    ("configurations.rst SGE", "SGECluster()", """
        jobqueue:
          sge:
            cores: 8
            memory: 24GB
            processes: 2
            queue: all.q
            walltime: '02:00:00'
            resource-spec: h_vmem=12G
        """),
]

CLASSES = {"SLURMCluster": "slurm", "PBSCluster": "pbs", "SGECluster": "sge",
           "LSFCluster": "lsf", "HTCondorCluster": "htcondor"}


def _ours(code: str) -> Any:
    """Run ``code`` with only the class name changed; the spec, nothing started."""
    cls = code.split("(", 1)[0]
    backend = CLASSES[cls]

    def build(**options: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return build_spec(backend, options)[0]

    return eval(code.replace(f"{cls}(", "build(", 1), {"build": build}), backend


def _theirs(code: str) -> str:
    """dask-jobqueue's job script for the same call (its Job class, no scheduler started)."""
    import dask_jobqueue

    cls = code.split("(", 1)[0]
    job_cls = getattr(dask_jobqueue, cls).job_cls

    def build(**options: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return job_cls(scheduler="tcp://127.0.0.1:8786", name="x", **options)

    return str(eval(code.replace(f"{cls}(", "build(", 1), {"build": build}).job_script())


def _minutes(text: str, colon_means: str = "h:m:s") -> float:
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 2:
        parts = [*parts, 0] if colon_means == "h:m" else [0, *parts]
    h, m, s = parts
    return h * 60 + m + s / 60


def _mib(text: str) -> float:
    """A batch system's memory size in MiB: their K/M/G/T units are binary."""
    text = text.strip().strip('"')
    if text.isdigit():
        return int(text) / 2**20
    m = re.fullmatch(r"([\d.]+)\s*([KMGT])i?B?", text, re.I)
    if m:
        return float(m.group(1)) * 1024 ** "KMGT".index(m.group(2).upper()) / 1024
    return parse_bytes(text) / 2**20


def _facts(script: str, system: str) -> dict[str, Any]:
    """What a job script asks the batch system for, in one vocabulary for both scripts."""
    out: dict[str, Any] = {"extra": set()}
    workers = re.findall(r"distributed\.cli\.dask_worker .*", script)
    out["workers"] = sum(int(m.group(1)) if (m := re.search(r"--nworkers (\d+)", w)) else 1
                         for w in workers)
    out["threads"] = {int(t) for t in re.findall(r"--nthreads (\d+)", script)}
    if system == "slurm":
        for flag, value in re.findall(r"^#SBATCH (-\w|--[\w-]+)[ =]?(.*)$", script, re.M):
            key = {"-p": "queue", "--partition": "queue", "-A": "account", "--account": "account",
                   "-t": "walltime", "--time": "walltime", "--cpus-per-task": "cpus",
                   "--mem": "mem"}.get(flag)
            if key == "walltime":
                out[key] = _minutes(value)
            elif key == "mem":
                out[key] = _mib(value)
            elif key:
                out[key] = value.strip('"')
            elif flag not in ("-J", "--job-name", "-e", "-o", "--output", "-n", "--ntasks",
                              "--array"):
                out["extra"].add(f"{flag}={value}" if value else flag)
    elif system in ("pbs", "sge"):
        d = "#PBS" if system == "pbs" else r"#\$"
        for flag, value in re.findall(rf"^{d} (-\w) (.*)$", script, re.M):
            if flag == "-q":
                out["queue"] = value
            elif flag in ("-A", "-P"):
                out["account"] = value
            elif flag == "-l":
                for item in value.split(","):
                    k, _, v = item.partition("=")
                    if k in ("walltime", "h_rt"):
                        out["walltime"] = _minutes(v)
                        continue
                    # select=1:ncpus=36:mem=109GB: memory compared in MiB (rounding differs)
                    parts = []
                    for part in item.split(":"):
                        if part.startswith("mem="):
                            out["mem"] = _mib(part[4:])
                        else:
                            parts.append(part)
                    out.setdefault("resources", set()).add(":".join(parts))
    elif system == "lsf":
        for flag, value in re.findall(r"^#BSUB (-\w) (.*)$", script, re.M):
            key = {"-q": "queue", "-P": "account", "-n": "cpus", "-W": "walltime"}.get(flag)
            if key == "walltime":
                out[key] = _minutes(value, "h:m")
            elif key:
                out[key] = value.strip('"')
    elif system == "htcondor":
        for line in script.splitlines():
            k, sep, v = (p.strip() for p in line.partition("="))
            if sep and k.lower() in ("request_cpus", "my.daskworkercores"):
                out["cpus"] = v
            elif sep and k.startswith("+"):
                out["extra"].add(f"{k} = {v}")
    return out


@pytest.mark.parametrize("origin,code", EXAMPLES, ids=[o for o, _ in EXAMPLES])
def test_documented_example_asks_for_the_same_job(origin: str, code: str) -> None:
    spec, system = _ours(code)
    ours, theirs = job_script(spec), _theirs(code)
    a, b = _facts(ours, system), _facts(theirs, system)
    for key in ("queue", "account", "cpus", "walltime", "workers", "threads", "resources"):
        if key in b:
            assert a.get(key) == b[key], (key, a.get(key), b[key], origin)
    assert b["extra"] <= a["extra"], (b["extra"] - a["extra"], origin)
    if "mem" in b:  # dask-jobqueue rounds up to whole GiB, we to MiB
        assert abs(a["mem"] - b["mem"]) <= 1024, (a["mem"], b["mem"])
    # The prologue (dask-jobqueue's env_extra / job_script_prologue) is in the script.
    for line in spec.backend_options.job_script_prologue:
        assert line in ours
    # Worker memory: what one job asks for, shared by its processes, as in dask-jobqueue.
    if spec.backend_options.memory:
        per_worker = spec.backend_options.memory_bytes // len(re.findall(r"--name ", ours))
        assert spec.worker.memory_limit == per_worker


@pytest.mark.parametrize("origin,code,config", CONFIG_EXAMPLES,
                         ids=[o for o, _, _ in CONFIG_EXAMPLES])
def test_documented_jobqueue_yaml_is_read(origin: str, code: str, config: str) -> None:
    values = yaml.safe_load(textwrap.dedent(config))
    system = CLASSES[code.split("(")[0]]
    import dask_jobqueue  # noqa: F401  (its defaults fill in what the example leaves out)

    keys = {f"jobqueue.{system}.{k}": v for k, v in values["jobqueue"][system].items()}
    with dask.config.set(keys), dask.config.set({f"deploy.{system}": {}}):
        spec, _ = _ours(code)
        theirs = _theirs(code)
    section = values["jobqueue"][system]
    o = spec.backend_options
    assert o.cores == section["cores"] and o.processes == section["processes"]
    assert o.memory == section["memory"] and o.queue == section["queue"]
    a, b = _facts(job_script(spec), system), _facts(theirs, system)
    for key in ("queue", "walltime", "workers", "threads", "resources"):
        if key in b:
            assert a.get(key) == b[key], (key, origin)
    assert b["extra"] <= a["extra"]


def test_every_jobqueue_yaml_key_has_a_translation() -> None:
    """Each key of dask-jobqueue's shipped jobqueue.yaml, for our systems, is in the table
    or is one of our option names: none is silently dropped for want of an entry."""
    import importlib.resources

    from dask_deploy import installed_backends
    from dask_deploy._compat import compat_table
    from dask_deploy._options import GENERIC_OPTIONS

    shipped = yaml.safe_load(
        (importlib.resources.files("dask_jobqueue") / "jobqueue.yaml").read_text())
    for system in ("slurm", "pbs", "sge", "lsf", "htcondor"):
        info = installed_backends()[system]
        table = compat_table(system, info.options)
        assert table is not None
        assert info.options is not None
        ours = {f.name for f in dataclasses.fields(info.options)} | set(GENERIC_OPTIONS)
        for key in shipped["jobqueue"][system]:
            name = key.replace("-", "_")
            assert table.lookup(name, "config") or name in ours, (system, key)


def test_shipped_jobqueue_defaults_change_nothing() -> None:
    """dask-jobqueue registers its jobqueue.yaml when imported: those defaults (name:
    dask-worker, death-timeout: 60, ...) must not warn or change our defaults."""
    import dask_jobqueue  # noqa: F401  (registers its defaults)

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for system in ("slurm", "pbs", "sge", "lsf", "htcondor"):
            with dask.config.set({f"deploy.{system}": {}}):
                build_spec(system, {"cores": 2, "memory": "4GB", **(
                    {"disk": "1GB"} if system == "htcondor" else {})})
