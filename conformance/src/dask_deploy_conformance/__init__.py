"""dask-deploy-conformance: the backend contract of dask-deploy, made executable.

* a pytest plugin (``pytest -p dask_deploy_conformance --deploy-backend NAME``) and test
  classes to subclass (:class:`ConformanceSuite`), see the README;
* the ``fake`` backend (in-process workers with fault-injection switches, :class:`FakeOptions`);
* a catalogue of deliberately broken backends (:mod:`dask_deploy_conformance.broken`);
* :func:`main`, the ``dask-deploy conformance NAME`` command;
* :func:`wait_for`, the polling wait that the checks (and our own tests) use.

Importing this package is light: names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PROFILES",
    "AdaptivityChecks",
    "ConformanceSuite",
    "DashboardChecks",
    "FakeBackend",
    "FakeOptions",
    "FaultChecks",
    "Faults",
    "LeakChecks",
    "LifecycleChecks",
    "LogChecks",
    "OptionChecks",
    "OrphanChecks",
    "RemoteSchedulerChecks",
    "ScalingChecks",
    "SigtermChecks",
    "StateMachineChecks",
    "TaskSubprocessChecks",
    "default_faults",
    "kill_worker",
    "main",
    "settings_for",
    "wait_for",
]

_WHERE = {
    "FakeBackend": "._fake", "FakeOptions": "._fake",
    "Faults": "._support", "default_faults": "._support", "kill_worker": "._support",
    "wait_for": "._support",
    "PROFILES": "._profiles", "settings_for": "._profiles",
    "main": "._cli",
    **{name: ".suite" for name in __all__ if name.endswith(("Checks", "Suite"))},
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
