"""TEST ONLY: a fake NVML patched onto the ``pynvml`` module, so GPU code runs without GPUs.

Nothing in a published package knows about it: a test switches it on explicitly.

* In the test process: :func:`install` (and :func:`uninstall` afterwards) patches the NVML calls
  of the ``pynvml`` module.
* In processes the test starts (the local backend's agent and its workers are fresh
  interpreters): :func:`environ` gives the variables that make them install the same fake at
  start-up, through the ``sitecustomize`` module in :data:`SITE_DIR`, put first on
  ``PYTHONPATH`` (it runs any ``sitecustomize`` it shadows, too).

The fake implements the handful of NVML calls dask-deploy-gpu makes, with the same return
shapes and the same ``pynvml.NVMLError`` subclasses as the real library, including the parts that
matter for scheduling: device count, names, UUIDs, memory, MIG mode and instances, and each
GPU's nearest CPUs as 64-bit affinity masks.

A description is JSON-able::

    {"gpus": [{"name": "Fake A100", "uuid": "GPU-...", "memory": 42949672960, "cpus": [0, 1],
               "mig": [{"uuid": "MIG-...", "name": "Fake A100 MIG 1g.5gb", "memory": 5368709120}]}],
     "missing_library": false}

:func:`gpus` builds one; ``missing_library`` makes ``nvmlInit`` fail as on a machine without
the driver.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENV", "SITE_DIR", "environ", "gpus", "install", "near_cpu", "uninstall"]

#: A JSON description of fake GPUs for processes started with :data:`SITE_DIR` on their path.
ENV = "DASK_DEPLOY_TESTING_FAKE_NVML"
#: The folder whose ``sitecustomize`` installs the fake described by :data:`ENV` at start-up.
SITE_DIR = str(Path(__file__).with_name("_nvml_site"))

#: Fake MIG slots per GPU (real A100/H100: up to 7; unused slots answer NOT_FOUND).
MAX_MIG = 7

_saved: dict[str, Any] = {}
_installed: str | None = None


@dataclass(frozen=True)
class _Handle:
    gpu: int
    mig: int | None = None


@dataclass(frozen=True)
class _Memory:
    total: int
    free: int
    used: int


@dataclass(frozen=True)
class _Utilization:
    gpu: int
    memory: int


def near_cpu(i: int) -> list[int]:
    """The default "nearest CPUs" of fake GPU i: one CPU this process may use, round robin."""
    allowed = sorted(os.sched_getaffinity(0))
    return [allowed[i % len(allowed)]]


def gpus(n: int, *, cpus: Callable[[int], Sequence[int]] | None = near_cpu,
         mig: dict[int, int] | None = None, memory: int = 40 << 30, name: str = "Fake A100"
         ) -> dict[str, Any]:
    """A description of ``n`` fake GPUs; ``cpus(i)`` gives GPU i's nearest CPUs (None: none
    known), ``mig`` maps a GPU index to how many MIG instances it has (MIG mode on)."""
    out = []
    for i in range(n):
        gpu: dict[str, Any] = {"name": name, "uuid": f"GPU-{i:08x}-fake-4000-8000-{i:012x}",
                               "memory": memory, "cpus": list(cpus(i)) if cpus else []}
        if mig and i in mig:
            gpu["mig"] = [{"uuid": f"MIG-{i:04x}{j:04x}-fake-4000-8000-{i:06x}{j:06x}",
                           "name": f"{name} MIG 1g.5gb", "memory": memory // 8}
                          for j in range(mig[i])]
        out.append(gpu)
    return {"gpus": out}


class _Fake:
    def __init__(self, lib: Any, spec: dict[str, Any]) -> None:
        self.lib, self.spec, self.gpus = lib, spec, spec.get("gpus", [])
        self.initialised = 0

    def _err(self, code: int) -> Exception:
        return self.lib.NVMLError(code)  # type: ignore[no-any-return]

    def _check(self) -> None:
        if not self.initialised:
            raise self._err(self.lib.NVML_ERROR_UNINITIALIZED)

    def _entry(self, h: _Handle) -> dict[str, Any]:
        self._check()
        if not isinstance(h, _Handle):
            raise self._err(self.lib.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[h.gpu]
        return gpu if h.mig is None else gpu["mig"][h.mig]  # type: ignore[no-any-return]

    # -- the NVML calls ---------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.spec.get("missing_library"):
            raise self._err(self.lib.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return "999.99-fake"

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise self._err(self.lib.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        self._check()
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for i, gpu in enumerate(self.gpus):
            if gpu["uuid"] == text:
                return _Handle(i)
            for j, m in enumerate(gpu.get("mig", [])):
                if m["uuid"] == text:
                    return _Handle(i, j)
        raise self._err(self.lib.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetIndex(self, h: _Handle) -> int:
        self._entry(h)
        return h.gpu

    def nvmlDeviceGetName(self, h: _Handle) -> str:
        return str(self._entry(h)["name"])

    def nvmlDeviceGetUUID(self, h: _Handle) -> str:
        return str(self._entry(h)["uuid"])

    def nvmlDeviceGetMemoryInfo(self, h: _Handle, version: Any = None) -> _Memory:
        total = int(self._entry(h)["memory"])
        return _Memory(total=total, free=total, used=0)

    def nvmlDeviceGetUtilizationRates(self, h: _Handle) -> _Utilization:
        self._entry(h)  # distributed's dashboard asks; the fake GPUs are always idle
        return _Utilization(gpu=0, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, h: _Handle) -> list[Any]:
        self._entry(h)
        return []

    def nvmlDeviceGetMigMode(self, h: _Handle) -> list[int]:
        entry = self._entry(h)
        if h.mig is not None:
            raise self._err(self.lib.NVML_ERROR_NOT_SUPPORTED)
        mode = int("mig" in entry)
        return [mode, mode]

    def nvmlDeviceIsMigDeviceHandle(self, h: _Handle) -> int:
        self._entry(h)
        return int(h.mig is not None)

    def nvmlDeviceGetMaxMigDeviceCount(self, h: _Handle) -> int:
        return MAX_MIG if "mig" in self._entry(h) else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: _Handle, index: int) -> _Handle:
        instances = self._entry(h).get("mig")
        if instances is None:
            raise self._err(self.lib.NVML_ERROR_INVALID_ARGUMENT)
        if not 0 <= index < len(instances):
            raise self._err(self.lib.NVML_ERROR_NOT_FOUND)
        return _Handle(h.gpu, index)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: _Handle) -> _Handle:
        self._entry(h)
        if h.mig is None:
            raise self._err(self.lib.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(h.gpu)

    def nvmlDeviceGetCpuAffinity(self, h: _Handle, cpu_set_size: int) -> list[int]:
        entry = self._entry(h)
        if h.mig is not None:  # as on real hardware: ask the parent GPU
            raise self._err(self.lib.NVML_ERROR_NOT_SUPPORTED)
        words = [0] * cpu_set_size
        for cpu in entry.get("cpus", []):
            if cpu // 64 < cpu_set_size:
                words[cpu // 64] |= 1 << (cpu % 64)
        return words


_CALLS = [name for name in vars(_Fake) if name.startswith("nvml")]


def install(spec: dict[str, Any]) -> None:
    """Patch a fake NVML described by ``spec`` onto ``pynvml`` (again only if ``spec`` changed)."""
    global _installed
    key = json.dumps(spec, sort_keys=True)
    if _installed == key:
        return
    import pynvml

    uninstall()
    fake = _Fake(pynvml, spec)
    for name in _CALLS:
        _saved[name] = getattr(pynvml, name)
        setattr(pynvml, name, getattr(fake, name))
    _installed = key


def uninstall() -> None:
    """Put the real NVML calls back (a no-op when no fake is installed)."""
    global _installed
    if _installed is None:
        return
    import pynvml

    for name, fn in _saved.items():
        setattr(pynvml, name, fn)
    _saved.clear()
    _installed = None


def environ(spec: dict[str, Any], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that make a new Python process (and what it forks) see the fake ``spec``.

    ``base`` is the environment the process would get otherwise (default: ours): its
    ``PYTHONPATH`` is kept, after :data:`SITE_DIR`.
    """
    base = os.environ if base is None else base
    path = [SITE_DIR, *[p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p and p != SITE_DIR]]
    return {ENV: json.dumps(spec), "PYTHONPATH": os.pathsep.join(path)}
