"""distributed's ``SSHCluster`` examples, with only the class name changed (spec level: the
ssh backend's start is covered by test_ssh.py against a real sshd)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from dask_deploy import SpecError
from dask_deploy._options import build_spec

#: (origin, code, expected facts or the refusal's words). The code is distributed's.
EXAMPLES: list[tuple[str, str, dict[str, Any] | str]] = [
    # distributed SSHCluster docstring, first example
    ("SSHCluster docstring",
     'SSHCluster(["localhost", "localhost", "localhost", "localhost"], '
     'connect_options={"known_hosts": None}, worker_options={"nthreads": 2}, '
     'scheduler_options={"port": 0, "dashboard_address": ":8797"})',
     {"nthreads": 2, "port": 0, "dashboard_address": ":8797", "n_workers": 4,
      "known_hosts": None}),
    # distributed SSHCluster docstring, GPU example: dask_cuda's worker class is refused
    # with the way to get GPU workers here
    ("SSHCluster docstring (GPU)",
     'SSHCluster(["localhost", "hostwithgpus", "anothergpuhost"], '
     'connect_options={"known_hosts": None}, '
     'scheduler_options={"port": 0, "dashboard_address": ":8797"}, '
     'worker_class="dask_cuda.CUDAWorker")', "gpus="),
    # distributed docs, ssh.rst: remote_python per host
    ("ssh.rst (remote_python)",
     'SSHCluster(["host1", "host2"], remote_python="/opt/conda/bin/python")',
     {"remote_python": ("/opt/conda/bin/python",) * 2}),
    # distributed docs, ssh.rst: the worker class spelled out
    ("ssh.rst (worker_class)",
     'SSHCluster(["host1", "host2"], worker_class="distributed.Nanny", '
     'worker_options={"nthreads": 1, "memory_limit": "2GiB"})',
     {"nthreads": 1, "memory_limit": 2**31}),
    # distributed (2021 and older): worker_module, deprecated there too
    ("SSHCluster changelog (worker_module)",
     'SSHCluster(["host1", "host2"], worker_module="distributed.cli.dask_worker")', {}),
]


def _build(code: str) -> Any:
    def build(*hosts: Any, **options: Any) -> Any:
        if hosts:
            options["hosts"] = hosts[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return build_spec("ssh", options)[0]

    return eval(code.replace("SSHCluster(", "build(", 1), {"build": build})


@pytest.mark.parametrize("origin,code,expected", EXAMPLES, ids=[o for o, _, _ in EXAMPLES])
def test_sshcluster_example(origin: str, code: str, expected: dict[str, Any] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(SpecError, match=expected) as e:
            _build(code)
        assert "\n" not in str(e.value)
        return
    spec = _build(code)
    o = spec.backend_options
    facts = {"nthreads": spec.worker.nthreads, "port": spec.scheduler.port,
             "dashboard_address": spec.scheduler.dashboard_address, "n_workers": spec.n_workers,
             "known_hosts": o.connect_options[0].get("known_hosts", "unset"),
             "remote_python": tuple(o.remote_python), "memory_limit": spec.worker.memory_limit}
    for key, value in expected.items():
        assert facts[key] == value, (key, facts[key], origin)
