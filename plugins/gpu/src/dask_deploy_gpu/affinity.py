"""Worker preload: pin the worker process to the CPUs nearest its GPU.

Use it as ``worker_options={"preload": ["dask_deploy_gpu.affinity"]}`` (the ``cuda`` backend and
GPU expansion on the ``local`` backend add it for you). At worker start it reads the wanted CPUs
from ``DASK_DEPLOY_CPU_AFFINITY`` (a Linux CPU list such as ``"0-7,16-23"``, computed with NVML
by whoever started the worker) or, when that is unset, asks NVML itself for the CPUs nearest
the worker's own GPU (``DASK_DEPLOY_GPU_DEVICE``, else the first ``CUDA_VISIBLE_DEVICES`` entry),
which is how workers on remote hosts find theirs.

Why it only ever warns: under a partial allocation (a SLURM job or a container given some of a
socket's cores) the GPU's nearest CPUs may not all be usable, and pinning to CPUs outside the
process's cpuset fails. So it pins to the wanted CPUs that this process may use, and where none
are usable or pinning fails it warns and leaves the affinity as it is: a worker on the "wrong"
cores is slower, a worker that does not start is useless (dask-cuda #980, #1358, #1381).

Every thread of the process is pinned (``/proc/self/task``), not only the calling one:
``sched_setaffinity(0, ...)`` on Linux changes one thread, and the worker already runs a few.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable
from typing import Any

__all__ = ["AFFINITY_ENV", "DEVICE_ENV", "dask_setup", "format_cpus", "parse_cpus", "pin", "wanted_cpus"]

#: The CPUs a worker should run on, as a Linux CPU list ("0-3,8").
AFFINITY_ENV = "DASK_DEPLOY_CPU_AFFINITY"
#: The one device (CUDA_VISIBLE_DEVICES entry) a worker is pinned to.
DEVICE_ENV = "DASK_DEPLOY_GPU_DEVICE"


def parse_cpus(text: str) -> set[int]:
    """``"0-3,8"`` -> ``{0, 1, 2, 3, 8}``; raises ValueError on anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        first, last = int(lo), int(hi) if sep else int(lo)
        if first < 0 or last < first:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(first, last + 1))
    return cpus


def format_cpus(cpus: Iterable[int]) -> str:
    """``{0, 1, 2, 3, 8}`` -> ``"0-3,8"`` (the form ``taskset -c`` and cpusets use)."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive CPUs
    for cpu in sorted(set(cpus)):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def wanted_cpus() -> set[int] | None:
    """The CPUs this worker should use, or None when nobody said and NVML cannot tell."""
    text = os.environ.get(AFFINITY_ENV)
    if text:
        try:
            return parse_cpus(text)
        except ValueError:
            warnings.warn(f"ignoring {AFFINITY_ENV}={text!r}: expected a CPU list such as '0-3,8'",
                          RuntimeWarning, stacklevel=2)
            return None
    device = os.environ.get(DEVICE_ENV) or os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if not device:
        return None
    from ._nvml import DeviceNotFound, NVMLUnavailable, resolve

    try:
        cpus = resolve([device])[0].cpus
    except (NVMLUnavailable, DeviceNotFound) as e:
        warnings.warn(f"not pinning this worker to the CPUs of GPU {device}: {e}", RuntimeWarning,
                      stacklevel=2)
        return None
    return set(cpus) or None


def pin(cpus: set[int]) -> set[int] | None:
    """Pin every thread of this process to ``cpus`` (those of them it may use).

    Returns the CPUs it pinned to, or None (with a warning) when it could not.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError) as e:  # not Linux
        warnings.warn(f"cannot set CPU affinity here ({e}); the worker runs unpinned", RuntimeWarning,
                      stacklevel=2)
        return None
    target = cpus & allowed
    if not target:
        warnings.warn(f"none of the CPUs nearest this worker's GPU ({format_cpus(cpus)}) may be used by "
                      f"this process (allowed: {format_cpus(allowed)}); keeping the current affinity",
                      RuntimeWarning, stacklevel=2)
        return None
    try:
        os.sched_setaffinity(0, target)
    except OSError as e:
        warnings.warn(f"could not pin this worker to CPUs {format_cpus(target)} ({e}); it runs unpinned",
                      RuntimeWarning, stacklevel=2)
        return None
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), target)
    return target


def dask_setup(worker: Any = None) -> None:
    """Preload entry point: run by ``distributed`` when the worker starts."""
    cpus = wanted_cpus()
    if cpus:
        pin(cpus)
