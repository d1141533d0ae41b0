"""A thin layer over NVML: which GPUs (and MIG instances) this machine has, and their nearest CPUs.

Why a layer: pynvml is a ctypes binding that needs the driver's ``libnvidia-ml.so.1``; here every
NVML failure becomes one of two exceptions with a readable reason, devices are plain frozen
records, and every call goes through :func:`nvml`. ``pynvml`` is imported only when a function
here is called, so importing this module costs nothing on machines without GPUs.

There is no test switch here: tests patch the ``pynvml`` module itself (the workspace's
unpublished ``dask_deploy_testing.fake_nvml``, in the test process and in the workers it starts).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast

__all__ = ["Device", "DeviceNotFound", "NVMLUnavailable", "all_devices", "nvml", "resolve"]

#: What we look for, in words, for error messages.
LOOKED_FOR = "NVIDIA GPUs through NVML (pynvml, the driver's libnvidia-ml.so.1)"


class NVMLUnavailable(Exception):
    """NVML cannot be used here: no driver library, no driver loaded, no permission."""


class DeviceNotFound(LookupError):
    """NVML works, but a device named in ``CUDA_VISIBLE_DEVICES`` is not on this machine."""


@dataclass(frozen=True)
class Device:
    """One CUDA device as a worker sees it: a whole GPU, or one MIG instance of a GPU."""

    #: NVML index of the physical GPU (of the parent GPU, for a MIG instance).
    index: int
    #: ``GPU-...`` for a whole GPU, ``MIG-...`` for a MIG instance.
    uuid: str
    name: str
    #: Total device memory in bytes.
    memory: int
    #: The CPUs nearest to the GPU, as NVML reports them (empty: unknown).
    cpus: tuple[int, ...] = ()
    mig: bool = False

    @property
    def visible_id(self) -> str:
        """How ``CUDA_VISIBLE_DEVICES`` names it: the index, or the UUID for a MIG instance."""
        return self.uuid if self.mig else str(self.index)


def nvml() -> ModuleType:
    """The ``pynvml`` module (imported on first use)."""
    import pynvml

    return cast(ModuleType, pynvml)


@contextlib.contextmanager
def _session() -> Iterator[Any]:
    try:
        lib = nvml()
    except ImportError as e:  # nvidia-ml-py missing: a broken install, but say so plainly
        raise NVMLUnavailable(f"the pynvml module is not installed ({e})") from e
    try:
        lib.nvmlInit()
    except lib.NVMLError as e:
        raise NVMLUnavailable(f"NVML did not start: {e}") from e
    try:
        yield lib
    except lib.NVMLError as e:
        raise NVMLUnavailable(f"NVML failed: {e}") from e
    finally:
        with contextlib.suppress(Exception):
            lib.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cpus(lib: Any, handle: Any) -> tuple[int, ...]:
    """The CPUs nearest to a GPU: NVML returns a bitmask in 64-bit words, lowest CPUs first."""
    words = ((os.cpu_count() or 1) + 63) // 64
    try:
        masks = lib.nvmlDeviceGetCpuAffinity(handle, words)
    except lib.NVMLError:
        return ()
    return tuple(i * 64 + bit for i, mask in enumerate(masks) for bit in range(64) if int(mask) >> bit & 1)


def _mig_enabled(lib: Any, handle: Any) -> bool:
    try:
        current, _pending = lib.nvmlDeviceGetMigMode(handle)
    except lib.NVMLError:  # not MIG capable
        return False
    return bool(current == lib.NVML_DEVICE_MIG_ENABLE)


def _scan(lib: Any) -> tuple[list[Device], list[Device]]:
    """(whole GPUs, usable CUDA devices): a GPU in MIG mode is usable only through its instances."""
    gpus: list[Device] = []
    usable: list[Device] = []
    for i in range(lib.nvmlDeviceGetCount()):
        h = lib.nvmlDeviceGetHandleByIndex(i)
        cpus = _cpus(lib, h)
        gpu = Device(i, _text(lib.nvmlDeviceGetUUID(h)), _text(lib.nvmlDeviceGetName(h)),
                     int(lib.nvmlDeviceGetMemoryInfo(h).total), cpus)
        gpus.append(gpu)
        if not _mig_enabled(lib, h):
            usable.append(gpu)
            continue
        for j in range(lib.nvmlDeviceGetMaxMigDeviceCount(h)):
            try:
                m = lib.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
            except lib.NVMLError:  # this slot holds no instance
                continue
            usable.append(Device(i, _text(lib.nvmlDeviceGetUUID(m)), _text(lib.nvmlDeviceGetName(m)),
                                 int(lib.nvmlDeviceGetMemoryInfo(m).total), cpus, mig=True))
    return gpus, usable


def all_devices() -> list[Device]:
    """Every CUDA device of this machine: whole GPUs, and the MIG instances of GPUs in MIG mode.

    Raises :class:`NVMLUnavailable` when NVML cannot be used.
    """
    with _session() as lib:
        return _scan(lib)[1]


def resolve(ids: Sequence[str]) -> list[Device]:
    """The devices that ``CUDA_VISIBLE_DEVICES`` entries name, in order.

    An entry is an NVML index (``"0"``), a GPU UUID (``"GPU-..."``, a unique prefix is enough,
    as for CUDA) or a MIG instance UUID (``"MIG-..."``). Raises :class:`NVMLUnavailable` when
    NVML cannot be used and :class:`DeviceNotFound` naming the entry and what exists otherwise.
    """
    with _session() as lib:
        gpus, usable = _scan(lib)
    out = []
    for entry in ids:
        if entry.isdigit():
            found = [gpus[int(entry)]] if int(entry) < len(gpus) else []
        else:
            found = [d for d in [*gpus, *usable] if d.uuid.startswith(entry)]
            found = list({d.uuid: d for d in found}.values())
        if len(found) != 1:
            have = ", ".join(f"{d.visible_id} ({d.name}, {d.uuid})" for d in usable) or "none"
            what = "no" if not found else "more than one"
            raise DeviceNotFound(f"{what} device matches {entry!r}; NVML found {len(gpus)} GPU(s): {have}")
        out.append(found[0])
    return out
