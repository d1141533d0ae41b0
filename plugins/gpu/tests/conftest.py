"""Fixtures: fake GPUs (NVML patched in this process and, through a start-up shim, in workers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import dask.config
import psutil
import pytest
from dask_deploy_conformance import wait_for as wait_until
from dask_deploy_testing import fake_nvml


def _live_children() -> set[int]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(autouse=True)
def _clean_gpu_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests must not depend on the CUDA variables of whoever runs them."""
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", fake_nvml.ENV, "DASK_DEPLOY_CPU_AFFINITY",
                 "DASK_DEPLOY_GPU_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    # distributed's own GPU dashboard metrics would call NVML too; keep them out of the way.
    monkeypatch.setenv("DASK_DISTRIBUTED__DIAGNOSTICS__NVML", "False")
    # distributed's defaults must be in dask.config before the set: leaving a set that
    # created the "distributed" section removes all of it, defaults loaded meanwhile too.
    import distributed  # noqa: F401

    with dask.config.set({"distributed.diagnostics.nvml": False}):
        yield
    fake_nvml.uninstall()


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """``fake_gpus(4)`` or ``fake_gpus(spec=...)``: fake GPUs here and in every process started after.

    Here: ``pynvml`` patched in place (undone by ``_clean_gpu_environment``). In new processes:
    the fake's start-up shim on ``PYTHONPATH`` (see :func:`dask_deploy_testing.fake_nvml.environ`).
    """

    def use(n: int = 0, *, spec: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        spec = spec if spec is not None else fake_nvml.gpus(n, **kwargs)
        fake_nvml.install(spec)
        for name, value in fake_nvml.environ(spec).items():
            monkeypatch.setenv(name, value)
        return spec

    return use


@pytest.fixture
def no_leaked_processes() -> Iterator[None]:
    """Fail the test if it leaves a child process of ours running."""
    before = _live_children()
    yield
    wait_until(lambda: not (_live_children() - before), 30, "the cluster's processes to end")
