"""Hypothesis settings profiles of the suite: ``ci`` (small), ``dev`` (default), ``thorough``.

The suite builds its own ``settings`` objects instead of loading a global profile, so it
never changes the settings of the rest of a project's tests. The same profiles are also
registered with hypothesis as ``dask-deploy-ci`` etc. for ``--hypothesis-profile``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["PROFILES", "default_profile", "settings_for"]

#: name -> (max_examples, stateful_step_count)
SIZES: dict[str, tuple[int, int]] = {"ci": (3, 6), "dev": (5, 8), "thorough": (60, 25)}
ENV = "DASK_DEPLOY_CONFORMANCE_PROFILE"


def default_profile() -> str:
    """``$DASK_DEPLOY_CONFORMANCE_PROFILE``, else ``ci`` when ``CI`` is set true, else ``dev``."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    return "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"


def settings_for(name: str) -> Any:
    """The ``hypothesis.settings`` of profile ``name``.

    No deadline (a step waits for processes), no example database (a backend's state is
    not reproducible from one), and the health checks that slow clusters trip are off.
    """
    from hypothesis import HealthCheck, Phase, settings

    examples, steps = SIZES[name]
    return settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        derandomize=name == "ci", print_blob=True,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target] if name != "thorough"
        else list(Phase),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    )


def _lazy(name: str) -> Callable[[], Any]:
    return lambda: settings_for(name)


PROFILES: dict[str, Callable[[], Any]] = {name: _lazy(name) for name in SIZES}


def register() -> None:
    """Register the profiles with hypothesis as ``dask-deploy-<name>``."""
    from hypothesis import settings

    for name in SIZES:
        settings.register_profile(f"dask-deploy-{name}", settings_for(name))
