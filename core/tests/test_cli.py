"""Every CLI command, run as a user would: a subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "dask_deploy._cli"]


def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"dask-deploy {' '.join(args)} failed ({out.returncode}):\n"
                             f"{out.stdout}\n{out.stderr}")
    return out


class Foreground:
    """A long-running command: read its output until a line appears, then Ctrl-C it."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []

    def wait_for(self, text: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} never printed:\n{''.join(self.lines)}")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def test_help_reads_like_dask() -> None:
    out = run("--help").stdout
    for command in ("backends", "up", "list", "scale", "adapt", "logs", "dashboard", "down", "gc",
                    "conformance", "demo"):
        assert command in out
    assert "Usage: " in run("up", "--help").stdout
    dask = subprocess.run([sys.executable, "-m", "dask", "deploy", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert dask.returncode == 0 and "Start, inspect and clean up" in dask.stdout


def test_backends_lists_local() -> None:
    out = run("backends").stdout
    assert out.startswith("") and "local" in out and "pre-imported agent" in out


def test_demo_runs_a_computation() -> None:
    out = run("demo", "--workers", "2").stdout
    assert "sum of squares 0..999 = 332833500" in out and "Closed in" in out


def test_errors_are_one_line_unless_debug() -> None:
    out = run("up", "nosuch", check=False)
    assert out.returncode == 1
    assert "BackendNotFound" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    bad = run("up", "local", "-o", "threads_per_worker=0", check=False)
    assert "threads_per_worker" in bad.stderr and "Traceback" not in bad.stderr
    debug = run("--debug", "up", "nosuch", check=False)
    assert "Traceback" in debug.stderr


def test_up_in_the_foreground_stops_on_ctrl_c(agents_of: Any, wait_until: Any) -> None:
    fg = Foreground("up", "local", "-n", "2", "-o", "name=t-cli-fg")
    fg.wait_for("Running; press Ctrl-C")
    # Not a terminal: one line per change, no progress bar (no redraws, no bar characters).
    progress = "".join(fg.lines)
    assert "Waiting for workers: 2/2 connected" in progress
    assert "\r" not in progress and "|" not in progress and "%" not in progress
    assert len(agents_of("t-cli-fg")) == 1
    assert fg.interrupt() == 0
    wait_until(lambda: not agents_of("t-cli-fg"), 30, "the cluster to stop")


def test_up_on_a_terminal_shows_a_progress_bar(agents_of: Any, wait_until: Any) -> None:
    """On a pseudo-terminal, `up` draws a progress bar (tqdm) while workers connect."""
    from dask_deploy_testing.terminal import on_a_terminal

    text, code = on_a_terminal([*CLI, "up", "local", "-n", "2", "-o", "name=t-cli-tty"],
                               b"Running; press Ctrl-C", interrupt=True)
    # The finished bar: the description, 100%, a full bar and the count.
    assert "Waiting for workers: 100%|" in text and "| 2/2 workers [" in text, text
    assert "\u2588" in text  # tqdm's full block: drawn, not the one-line form
    assert "connected, " not in text  # the plain line is for non-terminals only
    assert code == 0
    wait_until(lambda: not agents_of("t-cli-tty"), 30, "the cluster to stop")


def test_detached_lifecycle_through_the_cli(tmp_path: Path, agents_of: Any, wait_until: Any) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("backend: local\nworkers: 1\ndetach: true\noptions:\n  name: t-cli\n"
                    "  threads_per_worker: 1\n")
    up = run("up", "-f", str(spec))
    assert "Cluster t-cli on local" in up.stdout and "Detached." in up.stdout
    assert "Waiting for workers: 1/1" in up.stderr  # progress while waiting

    listing = run("list").stdout
    assert "t-cli" in listing and "detached" in listing

    assert "t-cli: 3 workers" in run("scale", "t-cli", "3").stdout
    logs = run("logs", "t-cli").stdout
    assert "==> t-cli-2 <==" in logs and "Start worker" in logs
    assert "Start worker" in run("logs", "t-cli", "--worker", "t-cli-1").stdout

    dash = Foreground("dashboard", "t-cli")
    link = dash.wait_for("Dashboard of t-cli:").split(": ", 1)[1].strip()
    with urllib.request.urlopen(link, timeout=30) as page:
        assert page.status == 200 and b"Dask" in page.read()
    assert dash.interrupt() == 0

    adapt = Foreground("adapt", "t-cli", "--minimum", "1", "--maximum", "2", "--interval", "200ms")
    adapt.wait_for("Adapting t-cli between 1 and 2")
    assert adapt.interrupt() == 0

    assert "t-cli: stopped" in run("down", "t-cli").stdout
    wait_until(lambda: not agents_of("t-cli"), 30, "the cluster to stop")
    assert "no clusters" in run("list").stdout
    assert run("down", "t-cli", check=False).returncode == 1  # gone: a clear error


def test_gc_dry_run_and_run() -> None:
    # Only clusters this test names: other clusters on this machine are not ours to count.
    name = "t-cli-gc-none"
    out = run("gc", "--dry-run", "-b", "local", "--cluster", name).stdout
    assert "0 found" in out and "nothing removed" in out and name not in out
    assert "0 removed" in run("gc", "--yes", "-b", "local", "--cluster", name).stdout
    assert "nothing removed" in run("gc", "-b", "local", "--cluster", name).stdout  # asks first


def test_conformance_command_runs_the_suite() -> None:
    pytest.importorskip("dask_deploy_conformance")
    from dask_deploy_conformance import main  # noqa: F401  (the CLI's entry into the suite)

    out = run("conformance", "fake", "--", "-k", "close_twice or with_statement", "-q",
              check=False, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout
