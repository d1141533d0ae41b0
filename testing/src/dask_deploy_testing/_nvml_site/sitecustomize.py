"""Fake GPUs in a process started by a test: see :func:`dask_deploy_testing.fake_nvml.environ`.

Python imports ``sitecustomize`` at start-up from the first folder of ``sys.path`` that has
one; the test puts this folder first on ``PYTHONPATH``, so this module installs the fake NVML
described by ``DASK_DEPLOY_TESTING_FAKE_NVML`` before any user code runs, then runs the
``sitecustomize`` it shadows, if there is one.
"""

from __future__ import annotations

import json
import os
import sys


def _install_fake() -> None:
    spec = os.environ.get("DASK_DEPLOY_TESTING_FAKE_NVML")
    if spec:
        from dask_deploy_testing import fake_nvml

        fake_nvml.install(json.loads(spec))


def _run_shadowed() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    me = sys.modules.pop(__name__)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        import sitecustomize  # noqa: F401  (the next one on the path)
    except ModuleNotFoundError as e:
        if e.name != "sitecustomize":
            raise
        sys.modules[__name__] = me
    finally:
        sys.path[:] = saved


_install_fake()
_run_shadowed()
