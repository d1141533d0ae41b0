"""Where this user's dask-deploy state lives: cluster records, agent sockets, logs.

A leaf module: it imports only :mod:`dask_deploy._private` (standard library plus the
error class) and ``dask.config``, so every other module may import it without a cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._private import private_dir

__all__ = ["state_dir"]


def state_dir() -> Path:
    """``$DASK_DEPLOY_STATE_DIR``, ``deploy.state-directory`` or ``$XDG_STATE_HOME/dask-deploy``."""
    import dask.config

    path = os.environ.get("DASK_DEPLOY_STATE_DIR") or dask.config.get(
        "deploy.state-directory", default=None) or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "dask-deploy")
    # Private (0700, ours, not a planted symlink): it holds TLS keys and agent sockets.
    p = Path(private_dir(path, option="DASK_DEPLOY_STATE_DIR"))
    private_dir(str(p / "clusters"), option="DASK_DEPLOY_STATE_DIR")
    return p
