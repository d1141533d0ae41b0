"""The ``cuda`` backend: ``LocalCUDACluster`` on dask-deploy, one worker per GPU of this machine.

It is the ``local`` backend (same forking agent, logs, discovery, teardown) plus one thing: its
unit is "this machine's GPUs", expanded to one worker per visible GPU (or MIG instance), each
with ``CUDA_VISIBLE_DEVICES`` rotated so its own device comes first, named after its device
(``<cluster>-0-<index>``, or ``<cluster>-0-MIG-<uuid>`` for a MIG instance), with ``GPU: 1`` as a
resource and pinned to the GPU's nearest CPUs (from NVML; a warning, not a failure, where that
is not possible). Option names follow ``LocalCUDACluster``: ``CUDA_VISIBLE_DEVICES``,
``n_workers``, ``threads_per_worker`` (default 1), ``memory_limit`` (``"auto"``: this machine's
memory shared among the workers), ``device_memory_limit``, ``interface``.

Scaling counts whole units: ``scale(n)`` starts ``ceil(n / GPUs)`` units, so going past the
number of GPUs puts a second worker on each GPU rather than failing as ``LocalCUDACluster`` does.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from dask.utils import parse_bytes
from dask_deploy import BackendInfo, ClusterSpec, SpecError, WorkerSpec, hookimpl
from dask_deploy.toolkit import LOCAL_INFO, LocalBackend, LocalOptions

from ._expand import one_per_gpu, pinned, resolve_or_fail, visible_ids

__all__ = ["INFO", "CUDABackend", "CUDAOptions", "deploy_backends"]

#: Each worker's device memory limit in bytes, for libraries that spill device memory.
DEVICE_MEMORY_ENV = "DASK_DEPLOY_DEVICE_MEMORY_LIMIT"


def _device_list(value: object) -> tuple[str, ...] | None:
    """``"0,2"``, ``2``, ``[0, "MIG-..."]`` -> ``("0", "2")`` ...; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        items: list[object] = []
    elif isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        items = [s.strip() for s in value.split(",") if s.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = []
    ids = tuple(str(v).strip() for v in items
                if (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or
                (isinstance(v, str) and v.strip()))
    if not ids or len(ids) != len(items):
        raise SpecError("CUDA_VISIBLE_DEVICES", value,
                        'expected devices as "0,1", a list such as [0, 1] or GPU/MIG UUIDs')
    return ids


def _interface_ip(name: str) -> str:
    import psutil

    addrs = psutil.net_if_addrs()
    if name not in addrs:
        raise SpecError("interface", name, f"no network interface of that name; this machine has "
                        f"{', '.join(sorted(addrs))}")
    for addr in addrs[name]:
        if addr.family == socket.AF_INET:
            return str(addr.address)
    raise SpecError("interface", name, "that interface has no IPv4 address; pick another one or use host=")


@dataclass(frozen=True)
class CUDAOptions(LocalOptions):
    """Options of the ``cuda`` backend beyond the generic ones (names as ``LocalCUDACluster``)."""

    #: Devices to use: ``"0,1"``, ``[0, 1]`` or GPU / MIG UUIDs (default: the process's
    #: ``CUDA_VISIBLE_DEVICES``, else every GPU and MIG instance NVML finds).
    CUDA_VISIBLE_DEVICES: str | int | Sequence[int | str] | None = None
    #: Per worker: a fraction of its device's memory (0 < x <= 1), bytes, a size such as
    #: ``"30GB"``, ``"auto"`` (all of it) or 0 / None (no limit). Given to the worker as
    #: ``DASK_DEPLOY_DEVICE_MEMORY_LIMIT`` (bytes) for device-memory spilling libraries.
    device_memory_limit: float | int | str | None = 0.8
    #: Network interface the scheduler and workers listen on (e.g. ``"ib0"``); default loopback.
    interface: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "CUDA_VISIBLE_DEVICES", _device_list(self.CUDA_VISIBLE_DEVICES))
        self.device_memory(1 << 30)  # validates
        if self.interface is not None:
            if not isinstance(self.interface, str):
                raise SpecError("interface", self.interface, "expected a network interface name")
            _interface_ip(self.interface)

    @property
    def devices(self) -> tuple[str, ...] | None:
        """``CUDA_VISIBLE_DEVICES`` as validated: a tuple of entries, or None."""
        return cast("tuple[str, ...] | None", self.CUDA_VISIBLE_DEVICES)

    def device_memory(self, total: int) -> int | None:
        """The limit in bytes for a device of ``total`` bytes (None: no limit)."""
        value = self.device_memory_limit
        accepted = 'expected a fraction such as 0.8, bytes, a size such as "30GB", "auto", 0 or None'
        if value is None or value == 0:
            return None
        if value == "auto":
            return total
        if isinstance(value, bool):
            raise SpecError("device_memory_limit", value, accepted)
        if isinstance(value, float) and 0 < value <= 1:
            return int(total * value)
        if isinstance(value, (int, float)) and value > 1:
            return int(value)
        if isinstance(value, str):
            try:
                parsed = parse_bytes(value)
            except (ValueError, TypeError):
                pass
            else:
                return int(total * parsed) if 0 < parsed <= 1 else int(parsed) if parsed > 1 else None
        raise SpecError("device_memory_limit", value, accepted)


def _selected(w: WorkerSpec, options: CUDAOptions) -> tuple[list[str] | None, str]:
    if options.devices is not None:
        return list(options.devices), "the CUDA_VISIBLE_DEVICES option"
    return visible_ids(w, local=True)


def expand_cuda(cluster: ClusterSpec, workers: Sequence[WorkerSpec], options: CUDAOptions
                ) -> list[WorkerSpec]:
    """The unit of the ``cuda`` backend: one worker per selected device, named after it."""
    from distributed.system import MEMORY_LIMIT  # this machine's memory, cgroup limits included

    out: list[WorkerSpec] = []
    for w in workers:
        if pinned(w):
            out.append(w)
            continue
        if w.gpus > 1:
            raise SpecError("gpus", w.gpus, "the cuda backend gives each worker one GPU; choose the GPUs "
                            "with CUDA_VISIBLE_DEVICES and their number with n_workers")
        ids, source = _selected(w, options)
        devices = resolve_or_fail("CUDA_VISIBLE_DEVICES", ",".join(ids) if ids else None, ids, source,
                                  cluster.backend)
        ids = ids or [d.visible_id for d in devices]
        n = cluster.n_workers or len(ids)
        if n > len(ids):
            raise SpecError("n_workers", n, f"the cuda backend runs one worker per GPU and {len(ids)} "
                            f"are visible ({source}: {','.join(ids)}); ask for at most {len(ids)}")
        ids, devices = ids[:n], devices[:n]
        memory = MEMORY_LIMIT // n if w.memory_limit == "auto" else w.memory_limit
        expanded = one_per_gpu(w, ids, devices, ids, nthreads=w.nthreads, memory_limit=memory)
        for i, spec in enumerate(expanded):
            limit = options.device_memory(devices[i].memory)
            if limit is not None:
                spec = spec.replace(env={**spec.env, DEVICE_MEMORY_ENV: str(limit)})
            out.append(spec)
    return out


class CUDABackend(LocalBackend):
    """The local backend with a unit of one worker per GPU (see the module docstring)."""

    def __init__(self, spec: ClusterSpec) -> None:
        super().__init__(spec)
        self.options: CUDAOptions = spec.backend_options or CUDAOptions()

    # tryfirst: it runs before the gpu extension, which then sees pinned workers and passes.
    @hookimpl(tryfirst=True)
    def deploy_expand_resources(self, cluster: ClusterSpec, workers: list[WorkerSpec]) -> None:
        workers[:] = expand_cuda(cluster, workers, self.options)


def _default_n_workers(options: dict[str, Any]) -> int:
    """As many workers as visible devices (1 if none are found: the start then says why)."""
    try:
        listed = _device_list(options.get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES")))
        if listed is not None:
            return len(listed)
        from ._nvml import all_devices

        return max(1, len(all_devices()))
    except Exception:  # the expansion reports the real problem, with a clear error
        return 1


def _default_host(options: dict[str, Any]) -> str:
    interface = options.get("interface")
    return _interface_ip(interface) if isinstance(interface, str) else "127.0.0.1"


INFO = BackendInfo(
    name="cuda",
    summary="One worker per GPU of this machine, pinned to its nearest CPUs (LocalCUDACluster)",
    factory=CUDABackend,
    options=CUDAOptions,
    capabilities=LOCAL_INFO.capabilities,
    extra="gpu",
    defaults={"n_workers": _default_n_workers, "threads_per_worker": 1, "poll_interval": 0.2,
              "host": _default_host},
)


@hookimpl
def deploy_backends() -> list[BackendInfo]:
    return [INFO]
