"""A catalogue of bad input: each gives a one-line error naming the option, and nothing is
left running or recorded.

Three doors: the CLI (run as a user would, as a subprocess), ``up -f`` spec files, and
``from_name`` from Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from dask_deploy import Cluster, SpecError

CLI = [sys.executable, "-m", "dask_deploy._cli"]


def _leftovers(state_dir: str) -> list[str]:
    """What a refused start left behind: records, sockets, and processes of this test."""
    left = [str(p) for p in Path(state_dir).rglob("*") if p.is_file() or p.is_socket()]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get("DASK_DEPLOY_STATE_DIR") == state_dir:
                left.append(" ".join(proc.info["cmdline"] or []))
        except psutil.Error:
            pass
    return left


# -- the CLI and spec files -------------------------------------------------------------

#: (spec file text or None, CLI arguments, what the last line of stderr must name)
CLI_CASES: list[tuple[str | None, list[str], str]] = [
    # spec files (up -f)
    ("backend: local\noptions: {n_workers: 1\n", [], "not valid YAML"),
    ("just a string\n", [], "expected a mapping"),
    ("[local, 2]\n", [], "expected a mapping"),
    ("backend: local\noptions: [1, 2]\n", [], "options="),
    ("backend: local\nworkers: two\n", [], "workers="),
    ("backend: local\nworkers: -1\n", [], "workers="),
    ("backend: local\nworkers: true\n", [], "workers="),
    ("backend: local\nadapt: 3\n", [], "adapt="),
    ("backend: local\nadapt: {minimum: 5, maximum: 2}\n", [], "minimum=5"),
    ("backend: local\nadapt: {minimum: few}\n", [], "minimum"),
    ("backend: local\nadapt: {bogus: 1}\n", [], "adapt has unknown keys"),
    ("backend: local\nadapt: {cooldown: soon}\n", [], "adapt.cooldown="),
    ("backend: local\nadapt: {min_lifetime: -3}\n", [], "adapt.min_lifetime="),
    ("backend: local\ndetach: maybe\n", [], "detach="),
    ("backend: 3\n", [], "backend="),
    ("backend: local\nworker: 2\n", [], "unknown keys"),
    ("backend: local\noptions: {scheduler-port: abc}\n", [], "scheduler_port"),
    ("backend: local\noptions: {1: 2}\n", [], "option name"),
    ("backend: local\noptions: {name: ../x}\n", [], "name="),
    ("backend: local\noptions: {host: not..a..host}\n", [], "host="),
    ("backend: local\noptions: {threads-per-worker: many}\n", [], "threads_per_worker"),
    ("!!python/object/apply:os.system ['touch /tmp/dds-pwned']\n", [], "not valid YAML"),
    ("backend: local\n\xff\xfe\n", [], "cannot read"),
    # -o and arguments
    (None, ["up", "local", "-o", "scheduler_port=abc"], "scheduler_port"),
    (None, ["up", "local", "-o", "scheduler_port=99999"], "scheduler_port"),
    (None, ["up", "local", "-o", "host=not..a..host"], "host="),
    (None, ["up", "local", "-o", "host=192.0.2.77"], "host="),
    (None, ["up", "local", "-o", "host=tcp://127.0.0.1"], "host="),
    (None, ["up", "local", "-o", "x=[1"], "not valid YAML"),
    (None, ["up", "local", "-o", "novalue"], "KEY=VALUE"),
    (None, ["up", "local", "-o", "=3"], "option name"),
    (None, ["up", "local", "-o", "threads_per_worker=0"], "threads_per_worker"),
    (None, ["up", "local", "-o", "n_workers=two"], "n_workers"),
    (None, ["up", "local", "--workers", "-1"], "--workers"),
    (None, ["up", "local", "-o", "memory_limit=lots"], "memory_limit"),
    (None, ["up", "local", "-o", "scheduler=elsewhere"], "scheduler="),
    (None, ["up", "local", "-o", "dashboard_address=nope"], "dashboard_address"),
    (None, ["up", "local", "-o", "name=Bad_Name"], "name="),
    (None, ["up", "local", "-o", "shutdown_on_close=maybe"], "shutdown_on_close"),
    (None, ["up", "local", "-o", "security=maybe"], "security"),
    (None, ["up", "local", "-o", "env=[A]"], "env"),
    (None, ["up", "local", "-o", "log_directory=3"], "log_directory"),
    (None, ["up", "local", "-o", "start_timeout=-1"], "start_timeout"),
    (None, ["up", "local", "-o", "bogus=1"], "bogus"),
    (None, ["up", "nosuchbackend"], "nosuchbackend"),
    (None, ["logs", "../../x"], "name="),
    (None, ["adapt", "x", "--minimum", "5", "--maximum", "2"], "minimum=5"),
    (None, ["adapt", "x", "--cooldown", "later"], "cooldown="),
]


@pytest.mark.parametrize(("text", "args", "names"), CLI_CASES,
                         ids=[f"cli{i}" for i in range(len(CLI_CASES))])
def test_cli_gives_one_line_and_starts_nothing(text: str | None, args: list[str], names: str,
                                                state_dir: str, tmp_path: Path) -> None:
    if text is not None:
        spec = tmp_path / "spec.yaml"
        spec.write_bytes(text.encode("latin-1"))
        args = ["up", "-f", str(spec), "--timeout", "30"]
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DASK_DEPLOY_STATE_DIR": state_dir})
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and names in last, out.stderr
    assert not _leftovers(state_dir)
    assert not os.path.exists("/tmp/dds-pwned")


# -- from_name --------------------------------------------------------------------------

#: (backend, options, the option the SpecError must name)
FROM_NAME_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("local", {"scheduler_port": "abc"}, "scheduler_port"),
    ("local", {"scheduler_port": 70000}, "scheduler_port"),
    ("local", {"scheduler_port": True}, "scheduler_port"),
    ("local", {"scheduler_options": {"port": "x"}}, "scheduler_options['port']"),
    ("local", {"scheduler_options": [1]}, "scheduler_options"),
    ("local", {"host": "bad host"}, "host"),
    ("local", {"host": 123}, "host"),
    ("local", {"host": "192.0.2.77"}, "host"),
    ("local", {"host": "no-such-host.invalid"}, "host"),
    ("local", {"host": "a\nb"}, "host"),
    ("local", {"n_workers": "two"}, "n_workers"),
    ("local", {"n_workers": -1}, "n_workers"),
    ("local", {"threads_per_worker": "2"}, "threads_per_worker"),
    ("local", {"dashboard_address": "nope"}, "dashboard_address"),
    ("local", {"dashboard_address": ":99999"}, "dashboard_address"),
    ("local", {"dashboard_proxy_address": "x y"}, "dashboard_proxy_address"),
    ("local", {"shutdown_on_close": "no"}, "shutdown_on_close"),
    ("local", {"name": "../x"}, "name"),
    ("local", {"name": "UPPER"}, "name"),
    ("local", {"name": 5}, "name"),
    ("local", {"security": "yes"}, "security"),
    ("local", {"env": ["A"]}, "env"),
    ("local", {"resources": {"GPU": "x"}}, "resources['GPU']"),
    ("local", {"memory_limit": "lots"}, "memory_limit"),
    ("local", {"start_timeout": -1}, "start_timeout"),
    ("local", {"idle_timeout": "5 min"}, "idle_timeout"),
    ("local", {"max_failures": 0}, "max_failures"),
    ("local", {"log_directory": 3}, "log_directory"),
    ("local", {"python": ""}, "python"),
    ("local", {"stop_grace": "x"}, "stop_grace"),
    ("local", {"bogus": 1}, "bogus"),
    ("local", {"scheduler": "elsewhere"}, "scheduler"),
    ("local", {"worker_options": [1]}, "worker_options"),
    ("local", {"gpus": -1}, "gpus"),
    ("local", {"poll_interval": 0}, "poll_interval"),
    ("ssh", {"hosts": "node1"}, "hosts"),
    ("ssh", {"hosts": ["a"], "connect_options": [{}, {}]}, "connect_options"),
    ("ssh", {"hosts": ["a"], "log_directory": ""}, "log_directory"),
]


@pytest.mark.parametrize(("backend", "options", "option"), FROM_NAME_CASES,
                         ids=[f"from_name{i}" for i in range(len(FROM_NAME_CASES))])
def test_from_name_gives_one_line_naming_the_option(backend: str, options: dict[str, Any],
                                                     option: str, state_dir: str) -> None:
    options = {"name": "t-bad-input", "n_workers": 1, **options}
    with pytest.raises(SpecError) as info:
        Cluster.from_name(backend, **options)
    assert info.value.option == option, info.value
    assert "\n" not in str(info.value)
    assert not _leftovers(state_dir)
