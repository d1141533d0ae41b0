"""``dask-deploy gc`` tells a killed client's jobs from a live cluster's by ``owner.json``.

The race this pins down (the slurm conformance check of a SIGKILLed client failed under
load): gc ran while the killed client's worker jobs were still listed, RUNNING or
COMPLETING (their workers leaving after the scheduler in the client went). The listing
says only the user, so each job was "cannot tell", and gc kept the whole cluster: its jobs,
its key folder and its record. The cluster's folder now holds its client's tags, read by
discovery. No batch system is needed: the listing is a recorded ``squeue`` answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dask_deploy import ClusterSpec
from dask_deploy._gc import _verdicts
from dask_deploy_jobqueue import SLURMOptions, _backend
from dask_deploy_jobqueue._backend import OWNER_FILE, JobqueueBackend
from dask_deploy_jobqueue._systems import job_name
from hypothesis import given
from hypothesis import strategies as st


def dead_pid() -> int:
    """A pid that ran and is gone: the client that was killed."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def backend(log_dir: Path, name: str, **spec: Any) -> JobqueueBackend:
    return JobqueueBackend(ClusterSpec(backend="slurm", name=name, **spec,
                                       backend_options=SLURMOptions(log_directory=str(log_dir))))


def listing(cid: str, *states: str) -> str:
    """What ``squeue --format=%i|%T|%r|%j`` prints for the worker jobs of ``cid``."""
    return "".join(f"7_{i}|{s}|None|{job_name(cid, 'worker')}\n" for i, s in enumerate(states))


@pytest.mark.parametrize(("owner", "detached", "alive", "why"), [
    ("killed", False, False, "is gone and the cluster is not detached"),
    ("me", False, True, "still runs"),
    ("killed", True, True, "cannot tell"),  # outlives its client by design
])
def test_jobs_still_listed_after_their_client_died_are_judged_by_its_tags(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: str, detached: bool,
        alive: bool, why: str) -> None:
    pid = dead_pid() if owner == "killed" else os.getpid()
    started = backend(tmp_path, "jobs", shutdown_on_close=not detached)
    monkeypatch.setattr(_backend.os, "getpid", lambda: pid)
    started._ensure_dirs()  # what the client writes before its first submission
    monkeypatch.undo()
    probe = backend(tmp_path, "gc-probe")  # a fresh process, told only the log folder

    async def squeue(argv: Any, stdin: Any = None, check: bool = True) -> str:
        return listing("jobs", "RUNNING", "COMPLETING")

    monkeypatch.setattr(probe, "_run", squeue)
    found = asyncio.run(probe.deploy_discover(cluster=probe.spec, cluster_id="jobs"))
    assert [h.data["owner_pid"] for h in found] == [pid, pid]
    verdicts = asyncio.run(_verdicts("slurm", found, 0, False))
    assert [(v.alive, why in v.why) for v in verdicts] == [(alive, True)] * 2, verdicts


@given(st.one_of(st.dictionaries(st.sampled_from(["owner", "created", "owner_pid", "detached",
                                                  "x"]),
                                 st.one_of(st.none(), st.booleans(), st.integers(),
                                           st.floats(allow_nan=False), st.text(max_size=20),
                                           st.lists(st.integers(), max_size=2))),
                 st.lists(st.integers(), max_size=2), st.text(max_size=20)))
def test_a_hostile_owner_file_yields_only_well_formed_tags(value: Any) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "c"))
        with open(os.path.join(d, "c", OWNER_FILE), "w") as f:
            f.write(json.dumps(value) if not isinstance(value, str) else value)
        tags = backend(Path(d), "gc-probe")._read_tags("c")
    assert set(tags) <= {"owner", "created", "owner_pid", "detached"}
    assert isinstance(tags.get("owner", "@"), str) and "@" in tags.get("owner", "@")
    assert type(tags.get("owner_pid", 0)) is int and type(tags.get("detached", True)) is bool
    assert type(tags.get("created", 0.0)) in (int, float)


def test_an_owner_file_that_is_a_link_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.json").write_text(json.dumps({"owner": "x@y", "owner_pid": 1}))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / OWNER_FILE).symlink_to(tmp_path / "elsewhere.json")
    assert backend(tmp_path, "gc-probe")._read_tags("c") == {}
