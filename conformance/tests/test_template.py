"""The tutorial's backend (conformance/template, docs/writing-a-backend.md) passes the suite.

It is not installed in this workspace, so it is imported from its file and registered with
``dask_deploy.register_backend`` instead of an entry point.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from dask_deploy import register_backend
from dask_deploy_conformance import ConformanceSuite

SOURCE = Path(__file__).parents[1] / "template" / "src" / "dask_deploy_shell" / "__init__.py"


def _load() -> object:
    if "dask_deploy_shell" not in sys.modules:
        spec = importlib.util.spec_from_file_location("dask_deploy_shell", SOURCE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["dask_deploy_shell"] = module
        spec.loader.exec_module(module)
    return sys.modules["dask_deploy_shell"]


class TestShellTemplateConformance(ConformanceSuite):
    @pytest.fixture
    def deploy_backend(self) -> str:
        register_backend(_load().INFO)  # type: ignore[attr-defined]
        return "shell"

    @pytest.fixture
    def deploy_options(self) -> dict[str, object]:
        return {"stop_grace": 1.0}
