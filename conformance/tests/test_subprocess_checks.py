"""The task-subprocess checks on the local backend (real processes) and on ``fake`` (skips).

Once :class:`TaskSubprocessChecks` is part of ``ConformanceSuite`` these run there too.
"""

from __future__ import annotations

from typing import Any

import pytest
from dask_deploy_conformance._subprocess_checks import TaskSubprocessChecks


class TestLocalTaskSubprocess(TaskSubprocessChecks):
    @pytest.fixture
    def deploy_backend(self) -> str:
        return "local"

    @pytest.fixture
    def deploy_options(self, deploy_options: dict[str, Any]) -> dict[str, Any]:
        return {**deploy_options, "stop_grace": 1.0}


class TestFakeTaskSubprocess(TaskSubprocessChecks):
    @pytest.fixture
    def deploy_backend(self) -> str:
        return "fake"
