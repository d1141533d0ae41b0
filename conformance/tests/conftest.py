"""Our own tests of the suite: cluster records go to a per-test state directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Records of clusters started here (and any a failing check leaves) stay out of ~/.local.
    monkeypatch.setenv("DASK_DEPLOY_STATE_DIR", str(tmp_path / "state"))
