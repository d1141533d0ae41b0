"""distributed's ``LocalCluster`` examples, with only the class name changed, and
dask-jobqueue's ``scale(jobs=)`` / ``adapt(minimum_jobs=, maximum_jobs=, *_memory=)`` on any
backend. (``SSHCluster``'s examples are in plugins/ssh/tests/test_migration.py.)"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
from dask_deploy import Cluster, SpecError, hookimpl
from dask_deploy._options import build_spec

#: (origin, code, expected spec facts or the refusal's words). The code is distributed's.
EXAMPLES: list[tuple[str, str, dict[str, Any] | str]] = [
    # distributed LocalCluster docstring: "Create a local cluster"
    ("LocalCluster docstring", "LocalCluster()", {}),
    # dask docs, deploying-python.rst: "LocalCluster(n_workers=4, threads_per_worker=2)"-style
    ("deploying-python.rst", "LocalCluster(n_workers=4, threads_per_worker=2)",
     {"n_workers": 4, "nthreads": 2}),
    # distributed docs, efficiency / memory: explicit per-worker memory
    ("worker-memory.rst", 'LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB")',
     {"n_workers": 2, "nthreads": 1, "memory_limit": 2**30}),
    # LocalCluster docstring: processes=True is the default spelled out
    ("LocalCluster docstring (processes)", "LocalCluster(processes=True, n_workers=2)",
     {"n_workers": 2}),
    # LocalCluster docstring: "Set the dashboard address"
    ("LocalCluster docstring (dashboard)", 'LocalCluster(dashboard_address=":0", scheduler_port=0)',
     {"dashboard_address": ":0", "port": 0}),
    # distributed docs, resources.rst: abstract worker resources
    ("resources.rst", 'LocalCluster(n_workers=1, resources={"GPU": 2})',
     {"resources": {"GPU": 2}}),
    # distributed docs, logging: quieter cluster
    ("logging.rst", "LocalCluster(n_workers=1, silence_logs=logging.ERROR)", {"n_workers": 1}),
    # LocalCluster keyword arguments that go to each worker (worker_kwargs)
    ("LocalCluster docstring (**worker_kwargs)",
     'LocalCluster(n_workers=1, local_directory="/tmp", lifetime="1h")',
     {"worker_options": {"local_directory": "/tmp", "lifetime": "1h"}}),
    # LocalCluster(host=..., protocol=...) as in the networking docs
    ("networking.rst", 'LocalCluster(host="127.0.0.1", protocol="tcp://", n_workers=1)',
     {"host": "127.0.0.1"}),
    # LocalCluster docstring: threads in this process; the local backend cannot: one line says why
    ("LocalCluster docstring (processes=False)", "LocalCluster(processes=False)",
     "cannot run workers in this process"),
    # distributed: scheduler keyword arguments
    ("LocalCluster docstring (scheduler_kwargs)",
     'LocalCluster(n_workers=1, scheduler_kwargs={"idle_timeout": "1h"})',
     {"scheduler_options": {"idle_timeout": "1h"}}),
]


def _build(code: str) -> Any:
    def build(**options: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return build_spec("local", options)[0]

    return eval(code.replace("LocalCluster(", "build(", 1),
                {"build": build, "logging": logging})


@pytest.mark.parametrize("origin,code,expected", EXAMPLES, ids=[o for o, _, _ in EXAMPLES])
def test_localcluster_example(origin: str, code: str, expected: dict[str, Any] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(SpecError, match=expected) as e:
            _build(code)
        assert "\n" not in str(e.value)
        return
    spec = _build(code)
    facts = {"n_workers": spec.n_workers, "nthreads": spec.worker.nthreads,
             "memory_limit": spec.worker.memory_limit, "resources": dict(spec.worker.resources),
             "dashboard_address": spec.scheduler.dashboard_address, "port": spec.scheduler.port,
             "host": spec.scheduler.host, "worker_options": dict(spec.worker.options),
             "scheduler_options": dict(spec.scheduler.options)}
    for key, value in expected.items():
        assert facts[key] == value, (key, facts[key], origin)


def test_localcluster_example_runs_through_from_name() -> None:
    """One example for real: the workers have the threads and memory it asked for."""
    code = 'LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB")'
    with eval(code.replace("LocalCluster(", 'Cluster.from_name("local", '),
              {"Cluster": Cluster}) as cluster:
        cluster.wait_for_workers(2, timeout=60)
        workers = cluster.scheduler_info["workers"].values()
        assert sorted((w["nthreads"], w["memory_limit"]) for w in workers) == [(1, 2**30)] * 2


class TwoPerUnit:
    """An extension that makes each unit (a "job") run two workers, as processes=2 does."""

    @hookimpl
    def deploy_expand_resources(self, cluster: Any, workers: list[Any]) -> None:
        workers[:] = [workers[0].replace(suffix="-0"), workers[0].replace(suffix="-1")]


def test_scale_jobs_and_adapt_bounds_as_in_dask_jobqueue() -> None:
    # Units stay queued (start_delay): this is about the plan, and nothing needs to run.
    with Cluster.from_name("fake", n_workers=0, memory_limit="1GiB", threads_per_worker=2,
                           start_delay=3600.0, extensions={"two": TwoPerUnit()}) as cluster:
        assert cluster.workers_per_unit == 2
        cluster.scale(jobs=2)
        assert len(cluster.units) == 2 and len(cluster.plan) == 4
        cluster.scale(3)  # workers, rounded up to whole jobs
        assert len(cluster.units) == 2
        cluster.scale(jobs=1)
        assert len(cluster.units) == 1

        # interval: the bounds are what is checked, not what Adaptive then does
        adaptive = cluster.adapt(minimum_jobs=1, maximum_jobs=3, interval="1h")
        assert (adaptive.minimum, adaptive.maximum) == (2, 6)
        adaptive = cluster.adapt(minimum_memory="3GiB", maximum_memory="10GiB")
        assert (adaptive.minimum, adaptive.maximum) == (3, 10)  # 1 GiB per worker
        adaptive = cluster.adapt(minimum_cores=4, maximum_cores=9, maximum_jobs=2)
        assert (adaptive.minimum, adaptive.maximum) == (2, 4)  # the tightest bound wins
        adaptive.stop()
        with pytest.raises(SpecError, match="widen"):
            cluster.adapt(minimum_jobs=5, maximum=2)
        with pytest.raises(SpecError, match="maximum_memory"):
            cluster.adapt(maximum_memory="lots")
        with pytest.raises(SpecError, match="jobs"):
            cluster.scale(jobs=-1)
        cluster.scale(0)
