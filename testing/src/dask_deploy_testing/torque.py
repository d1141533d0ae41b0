"""SLURM's Torque wrappers (``qsub``/``qstat``/``qdel`` over SLURM) for the pbs backend's tests.

Debian has no Torque or OpenPBS; ``slurm-wlm-torque`` provides PBS-style commands that talk
to SLURM, but as a package it conflicts with ``gridengine-client`` (both own
``/usr/bin/qsub``). ``plugins/jobqueue/ci-setup.sh`` therefore unpacks it (``apt-get
download`` + ``dpkg-deb -x``) into a private folder instead of installing it, and the pbs
tests put that folder's ``usr/bin`` first on ``PATH``, while the SLURM that
:mod:`.slurm` starts answers them. Grid Engine stays installed for the sge tests.

Test infrastructure of the workspace's unpublished ``testing`` member.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["TORQUE_DIR", "torque_bin"]

#: Where ci-setup.sh unpacks the package (``DASK_DEPLOY_TORQUE_DIR`` overrides it).
TORQUE_DIR = os.environ.get("DASK_DEPLOY_TORQUE_DIR", "/opt/dask-deploy/slurm-torque")
_CI_SETUP = Path(__file__).resolve().parents[3] / "plugins" / "jobqueue" / "ci-setup.sh"
_COMMANDS = ("qsub", "qstat", "qdel")


def torque_bin() -> str:
    """The folder holding the wrappers; unpacks them (as root) when missing."""
    folder = Path(TORQUE_DIR, "usr", "bin")

    def present() -> bool:
        return all(os.access(folder / c, os.X_OK) for c in _COMMANDS)

    if not present():
        if os.geteuid() != 0:
            raise RuntimeError(f"SLURM's Torque wrappers are not in {folder} (run "
                               "plugins/jobqueue/ci-setup.sh as root)")
        proc = subprocess.run(["sh", str(_CI_SETUP)], capture_output=True, text=True, check=False,
                              env={**os.environ, "DASK_DEPLOY_TORQUE_DIR": TORQUE_DIR})
        if proc.returncode != 0 or not present():
            raise RuntimeError(f"unpacking slurm-wlm-torque failed: {proc.stderr[-2000:]}")
    return str(folder)
