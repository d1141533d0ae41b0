"""Turning a unit that asks for N GPUs into N workers, each pinned to one GPU.

Shared by the ``gpu`` extension (every backend) and the ``cuda`` backend. A worker pinned to a
GPU carries ``DASK_DEPLOY_GPU_DEVICE`` in its env, which is also how a later expansion knows to
leave it alone (so that the extension and the ``cuda`` backend never expand twice).

Where the unit runs on this machine (:data:`LOCAL_BACKENDS`) the GPUs are checked with NVML, and
each worker gets its GPU's nearest CPUs (env ``DASK_DEPLOY_CPU_AFFINITY`` plus the
:mod:`dask_deploy_gpu.affinity` preload). Elsewhere the requested count is trusted: the batch
system, the device plugin or the task definition gives the unit its GPUs, and they appear to it
as devices ``0..N-1`` (or as the worker env's ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dask_deploy import ClusterSpec, SpecError, WorkerSpec

from .affinity import AFFINITY_ENV, DEVICE_ENV, format_cpus

__all__ = ["LOCAL_BACKENDS", "PRELOAD", "expand", "one_per_gpu", "pinned", "resolve_or_fail"]

#: Backends whose units run on this machine, where NVML can check the request.
LOCAL_BACKENDS = frozenset({"local", "cuda"})
#: The worker preload that applies the CPU affinity.
PRELOAD = "dask_deploy_gpu.affinity"


def pinned(w: WorkerSpec) -> bool:
    """Whether an earlier expansion already pinned this worker to one GPU."""
    return DEVICE_ENV in w.env


def _wants(w: WorkerSpec) -> bool:
    return w.gpus > 0 and not pinned(w)


def visible_ids(w: WorkerSpec, local: bool) -> tuple[list[str] | None, str]:
    """The devices a unit can see, from ``CUDA_VISIBLE_DEVICES``, and where that came from."""
    raw, source = w.env.get("CUDA_VISIBLE_DEVICES"), "the worker's env"
    if raw is None and local:
        raw, source = os.environ.get("CUDA_VISIBLE_DEVICES"), "this process's environment"
    if raw is None:
        return None, "no CUDA_VISIBLE_DEVICES"
    return [s.strip() for s in raw.split(",") if s.strip()], f"CUDA_VISIBLE_DEVICES={raw!r} in {source}"


def resolve_or_fail(option: str, value: object, ids: Sequence[str] | None, source: str,
                    backend: str) -> list[Any]:
    """The NVML devices for ``ids`` (all devices when None), or a SpecError saying what was sought."""
    from ._nvml import LOOKED_FOR, DeviceNotFound, NVMLUnavailable, all_devices, resolve

    wanted = f"devices {','.join(ids)} ({source})" if ids is not None else "every device"
    try:
        devices = resolve(ids) if ids is not None else all_devices()
    except (NVMLUnavailable, DeviceNotFound) as e:
        raise SpecError(option, value, f"GPUs were asked for on this machine (backend {backend!r}) but not "
                        f"found: looked for {wanted} among {LOOKED_FOR}: {e}. Run on a machine with NVIDIA "
                        "GPUs and their driver, fix CUDA_VISIBLE_DEVICES, or ask for no GPUs") from e
    if not devices:
        raise SpecError(option, value, f"GPUs were asked for on this machine (backend {backend!r}) but not "
                        f"found: looked for {wanted} among {LOOKED_FOR}, which found none. Run on a "
                        "machine with NVIDIA GPUs, or ask for no GPUs")
    return devices


def _with_preload(options: dict[str, Any]) -> dict[str, Any]:
    preload = options.get("preload") or []
    preload = [preload] if isinstance(preload, str) else list(preload)
    if PRELOAD not in preload:
        preload.append(PRELOAD)
    return {**options, "preload": preload}


def _split_memory(w: WorkerSpec, n: int, local: bool) -> int | str | None:
    """The unit's memory shared among its N workers.

    ``"auto"`` on this machine becomes what distributed would give the whole unit (its share of
    the machine by threads), divided by N: left as ``"auto"``, N one-thread workers on a machine
    with fewer cores would each claim a core's share and together promise more than exists.
    Elsewhere ``"auto"`` stays, and each remote worker sizes itself from its own threads.
    """
    memory = w.memory_limit
    if memory == "auto" and local:
        from distributed.system import MEMORY_LIMIT

        memory = int(MEMORY_LIMIT * min(1.0, w.nthreads / (os.cpu_count() or 1)))
    return max(1, memory // n) if isinstance(memory, int) else memory


def one_per_gpu(w: WorkerSpec, ids: Sequence[str], devices: Sequence[Any] | None, suffixes: Sequence[str],
                *, nthreads: int, memory_limit: int | str | None, env: dict[str, str] | None = None,
                ) -> list[WorkerSpec]:
    """One worker per entry of ``ids``, each seeing its own device first.

    ``devices`` (NVML records, same order) is given where the unit runs on this machine: then
    each worker also gets its GPU's nearest CPUs and NVML's (PCI bus) device numbering.
    """
    out = []
    for i, device in enumerate(ids):
        wenv = {**w.env, **(env or {}), "CUDA_VISIBLE_DEVICES": ",".join([*ids[i:], *ids[:i]]),
                DEVICE_ENV: device}
        options = dict(w.options)
        if devices is not None:
            # CUDA numbers fastest-first by default, NVML (and nvidia-smi) by PCI bus: make an
            # index mean the same GPU to both, unless the user chose an order.
            if "CUDA_DEVICE_ORDER" not in w.env and "CUDA_DEVICE_ORDER" not in os.environ:
                wenv["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            if devices[i].cpus:
                wenv[AFFINITY_ENV] = format_cpus(devices[i].cpus)
                options = _with_preload(options)
        out.append(w.replace(
            gpus=1, nthreads=nthreads, memory_limit=memory_limit, resources={**w.resources, "GPU": 1},
            env=wenv, options=options, suffix=f"{w.suffix}-{suffixes[i]}"))
    return out


def expand(cluster: ClusterSpec, workers: Sequence[WorkerSpec]) -> list[WorkerSpec] | None:
    """Every worker asking for N > 0 GPUs becomes N workers with one GPU each (None: no change).

    Suffixes ``-0..-N-1`` (after any suffix an earlier expansion gave); threads and memory are
    shared out among the N; resources get ``GPU: 1`` (other resources are kept as they are:
    they may be tags that every worker of the unit should carry).
    """
    if not any(_wants(w) for w in workers):
        return None
    local = cluster.backend in LOCAL_BACKENDS
    out: list[WorkerSpec] = []
    for w in workers:
        if not _wants(w):
            out.append(w)
            continue
        ids, source = visible_ids(w, local)
        if ids is None:
            ids = [str(i) for i in range(w.gpus)]
        elif len(ids) < w.gpus:
            raise SpecError("gpus", w.gpus, f"only {len(ids)} device(s) are visible to the unit ({source}); "
                            "ask for at most that many GPUs or make more devices visible")
        ids = ids[: w.gpus]
        devices = resolve_or_fail("gpus", w.gpus, ids, source, cluster.backend) if local else None
        n = len(ids)
        out.extend(one_per_gpu(w, ids, devices, [str(i) for i in range(n)],
                               nthreads=max(1, w.nthreads // n), memory_limit=_split_memory(w, n, local)))
    return out
