"""Per-pool backend options of the batch systems, without a batch system (< 2 s).

A pool's ``queue``/``account``/``walltime``/directives reach only its own job scripts; a
hostile value is either refused with one line naming the pool's option or stays inside its
directive (never a shell line); options the backend does not read per pool are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dask_deploy import SpecError, Unit
from dask_deploy._options import build_spec
from dask_deploy_jobqueue._backend import JobqueueBackend
from dask_deploy_jobqueue._systems import SYSTEMS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ADDRESS = "tls://10.0.0.1:8786"


def scripts(system: str, tmp: Path, **options: Any) -> dict[str, str]:
    """The worker job script of one unit of each pool."""
    spec, _ = build_spec(system, {"name": "p", "log_directory": str(tmp), "cores": 1,
                                  "memory": "1GiB", **options})
    backend = JobqueueBackend(spec)
    out = {}
    for pool in spec.all_pools:
        workers = [pool.worker]
        backend.deploy_expand_resources(spec, workers)
        unit = Unit(f"p-{pool.name}-0", tuple(workers), pool.name)
        out[pool.name] = backend._worker_script(ADDRESS, [unit])[1]
    return out


def header(script: str) -> list[str]:
    return script[:script.index("\n# dask-deploy: cluster")].split("\n")[1:]


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_each_pool_s_jobs_carry_its_own_queue(system: str, tmp_path: Path) -> None:
    got = scripts(system, tmp_path, queue="main", walltime="00:30:00",
                  pools={"cpu": {}, "gpu": {"queue": "gpuq", "account": "acct9"}})
    if system != "htcondor":  # HTCondor has no queue directive
        assert any("main" in line for line in header(got["cpu"]))
        assert any("gpuq" in line for line in header(got["gpu"]))
        assert not any("gpuq" in line for line in header(got["cpu"]))
    assert "acct9" not in got["cpu"]


def test_options_not_read_per_pool_are_refused(tmp_path: Path) -> None:
    for option, value in (("cores", 8), ("processes", 2), ("python", "/usr/bin/python3"),
                          ("array", False)):
        with pytest.raises(SpecError, match=rf"pools\['gpu'\].{option}=.*cannot set {option} "
                                            "per pool: set it for the whole cluster"):
            scripts("slurm", tmp_path, pools={"gpu": {option: value}})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["queue", "account", "walltime", "job_extra_directives",
                               "job_mem"]),
       value=st.one_of(st.text(max_size=12), st.integers(-2, 3), st.none(),
                       st.lists(st.text(max_size=6), max_size=2)))
def test_hostile_pool_options_are_refused_or_stay_in_their_directive(
        tmp_path: Path, option: str, value: Any) -> None:
    try:
        got = scripts("slurm", tmp_path, pools={"cpu": {}, "gpu": {option: value}})
    except SpecError as e:
        assert str(e).startswith(f"invalid pools['gpu'].{option}") and "\n" not in str(e), e
        return
    assert all(line.startswith("#") for line in header(got["gpu"])), got["gpu"]
