"""The plugin's session-end check: no process of a cluster the session started outlives it.

Each case runs a small pytest session in a subprocess. Its test "starts a cluster" the way
the suite's factory does (the name goes into ``SESSION_CLUSTERS``) and a process tagged
with that name, as the template's workers are (``DASK_DEPLOY_CLUSTER`` in the environment)
or as agents are (the name in the command line).
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
import dask_deploy_conformance.plugin as plugin
plugin.SESSION_END_GRACE = 1.0  # this test's processes either go at once or never
"""

TEST = """
import os, subprocess, sys, uuid
from dask_deploy_conformance._support import ClusterFactory

def test_starts_and_{how}(tmp_path):
    factory = ClusterFactory("fake", {{}})
    name = factory.merged()["name"]
    env = {{**os.environ, "DASK_DEPLOY_CLUSTER": name}} if "{tag}" == "env" else dict(os.environ)
    argv = [sys.executable, "-c", "import time; time.sleep(300)"]
    if "{tag}" == "cmdline":
        argv.append(name)
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    (tmp_path.parent.parent / "pid").write_text(str(proc.pid))
    if "{how}" == "stops":
        proc.kill()
        proc.wait()
"""


def _run(pytester: pytest.Pytester, how: str, tag: str) -> tuple[pytest.RunResult, int]:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_session=TEST.format(how=how, tag=tag))
    base = pytester.path / "base"
    result = pytester.runpytest_subprocess("-p", "dask_deploy_conformance", "-p", "no:cacheprovider",
                                           f"--basetemp={base}")
    pid = int((pytester.path / "pid").read_text())
    return result, pid


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("tag", ["env", "cmdline"])
def test_a_process_that_outlives_the_session_fails_it_and_is_killed(pytester: pytest.Pytester,
                                                                    tag: str) -> None:
    result, pid = _run(pytester, "leaks", tag)
    try:
        assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
        result.stdout.fnmatch_lines(["*processes outlived the session*",
                                     f"*pid {pid} (cluster conf-*, started during "
                                     "test_session.py::test_starts_and_leaks*"])
        assert _gone(pid), "the session-end check did not kill what it reported"
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_session_that_leaves_nothing_passes(pytester: pytest.Pytester) -> None:
    result, _ = _run(pytester, "stops", "env")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "outlived" not in result.stdout.str()
