"""The pytest plugin (entry point ``pytest11``): command-line options and the suite's fixtures.

``pytest -p dask_deploy_conformance --deploy-backend NAME [--deploy-option KEY=VALUE ...]``
runs the shipped suite against an installed backend. From a test module, subclass
:class:`dask_deploy_conformance.ConformanceSuite` and override the fixtures below (in the
class or a ``conftest.py``); see the package README for the whole API.

Light to import: nothing here imports ``distributed`` or a backend until a test runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._profiles import PROFILES, default_profile

__all__ = [
    "deploy_backend",
    "deploy_capabilities",
    "deploy_cluster",
    "deploy_faults",
    "deploy_max_workers",
    "deploy_options",
    "deploy_profile",
    "deploy_timeout",
]

#: The module collected when ``--deploy-backend`` is given without test paths.
SUITE_ENTRY = Path(__file__).with_name("_entry.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dask-deploy", "dask-deploy conformance suite")
    group.addoption("--deploy-backend", metavar="NAME", default=None,
                    help="run the dask-deploy conformance suite against this installed backend")
    group.addoption("--deploy-option", metavar="KEY=VALUE", action="append", default=[],
                    help="an option for the backend under test (repeatable); VALUE is JSON if it "
                         "parses, else a string: --deploy-option start_timeout=30")
    group.addoption("--deploy-profile", metavar="NAME", default=None, choices=sorted(PROFILES),
                    help="hypothesis settings profile of the suite: ci (small; the default when "
                         "CI=true), dev (the default otherwise) or thorough (nightly)")
    group.addoption("--deploy-timeout", metavar="SECONDS", type=float, default=None,
                    help="how long the suite waits for a cluster to converge (default 60)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "deploy_requires(*capabilities): skip unless the backend under test claims "
                   "these BackendInfo.capabilities (scale, remote_scheduler, logs_after_death, "
                   "dashboard, detach)")
    config.addinivalue_line(
        "markers", "deploy_unless(capability, reason): skip when the backend under test claims "
                   "this limit among its BackendInfo.capabilities (managed), saying why")
    # `pytest -p dask_deploy_conformance --deploy-backend NAME` with no test paths: run the
    # shipped suite (and only it), from any directory.
    if config.getoption("--deploy-backend") and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = [str(SUITE_ENTRY)]


#: Seconds the session-end check waits for processes of the session's clusters to go.
SESSION_END_GRACE = 15.0


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No process of any cluster this session started may outlive the session.

    Per-check leak checks look at one cluster object, right after its close; a worker that
    a check never looked at (a hypothesis example's teardown, a test without a leak check)
    or that comes back later would run on, orphaned, after pytest ended. So at the end the
    whole machine is searched for the session's cluster names (see ``processes_of``);
    whatever is found is reported, killed, and fails the session.
    """
    import sys

    support = sys.modules.get("dask_deploy_conformance._support")
    if support is None or not support.SESSION_CLUSTERS:
        return
    import time

    names = frozenset(support.SESSION_CLUSTERS)
    deadline = time.monotonic() + SESSION_END_GRACE
    while (left := support.processes_of(names)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not left:
        return
    lines = []
    for pid, (proc, cluster) in sorted(left.items()):
        try:
            what = " ".join(proc.cmdline())[:160]
            test = proc.environ().get("PYTEST_CURRENT_TEST", "?")
        except Exception:
            what, test = "?", "?"
        lines.append(f"  pid {pid} (cluster {cluster}, started during {test}): {what}")
        with contextlib.suppress(Exception):
            proc.kill()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (f"dask-deploy conformance: {len(left)} process(es) of clusters this session "
               f"started outlived it (killed now):\n" + "\n".join(lines))
    if reporter is not None:
        reporter.write_sep("=", "processes outlived the session", red=True)
        reporter.write_line(message)
    else:
        print(message, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --------------------------------------------------------------------------------------
# Fixtures: override any of them in your conftest.py or your ConformanceSuite subclass.
# --------------------------------------------------------------------------------------


@pytest.fixture
def deploy_backend(request: pytest.FixtureRequest) -> str:
    """Name of the backend under test. Default: ``--deploy-backend``."""
    name = request.config.getoption("--deploy-backend")
    if not name:
        pytest.fail("no backend to test: pass --deploy-backend NAME, or override the "
                    "`deploy_backend` fixture in your ConformanceSuite subclass or conftest.py",
                    pytrace=False)
    return str(name)


@pytest.fixture
def deploy_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Options for ``Cluster.from_name(backend, **options)`` in every check.

    Default: the ``--deploy-option KEY=VALUE`` flags. Override it to pass options that only
    your own fixtures know (a server's port, a key file); a fixture may request the
    original by its own name to extend it::

        @pytest.fixture
        def deploy_options(deploy_options, sshd):
            return {**deploy_options, "hosts": [f"127.0.0.1:{sshd.port}"]}
    """
    from ._support import parse_option

    return dict(parse_option(text) for text in request.config.getoption("--deploy-option"))


@pytest.fixture
def deploy_capabilities(deploy_backend: str, deploy_options: dict[str, Any]) -> frozenset[str]:
    """Capabilities the suite holds the backend to. Default: its ``BackendInfo.capabilities``
    plus ``remote_scheduler`` when it implements ``deploy_start_scheduler``.

    Override to narrow them where a test environment cannot offer one (say why).
    """
    from dask_deploy._plugins import backend_capabilities

    return backend_capabilities(deploy_backend, deploy_options)


@pytest.fixture
def deploy_faults(deploy_backend: str) -> Any:
    """How faults are injected: a :class:`dask_deploy_conformance.Faults`.

    Default: :func:`dask_deploy_conformance.default_faults` (the fake's switches where the
    backend has them, else worker preloads that fail or hang). Set a field to ``None`` to
    skip the checks that need that fault.
    """
    from ._support import backend_info, default_faults

    return default_faults(backend_info(deploy_backend))


@pytest.fixture
def deploy_timeout(request: pytest.FixtureRequest) -> float:
    """Seconds the suite waits for a cluster to start or converge (``--deploy-timeout``)."""
    value = request.config.getoption("--deploy-timeout")
    return float(value) if value else float(os.environ.get("DASK_DEPLOY_CONFORMANCE_TIMEOUT", 60))


@pytest.fixture
def deploy_profile(request: pytest.FixtureRequest) -> Any:
    """The ``hypothesis.settings`` of the generated checks (``--deploy-profile``)."""
    return PROFILES[request.config.getoption("--deploy-profile") or default_profile()]()


@pytest.fixture
def deploy_cluster(deploy_backend: str, deploy_options: dict[str, Any], deploy_timeout: float,
                   ) -> Iterator[Any]:
    """A factory: ``deploy_cluster(**overrides)`` starts a cluster of the backend under test.

    Options are the suite's defaults, then ``deploy_options``, then ``overrides``. Every
    cluster it made is closed when the test ends.
    """
    from ._support import ClusterFactory

    factory = ClusterFactory(deploy_backend, deploy_options, deploy_timeout)
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture(autouse=True)
def _deploy_requires(request: pytest.FixtureRequest) -> None:
    """Skip, with the reason, checks whose ``deploy_requires`` capabilities are not claimed,
    and checks whose ``deploy_unless`` limit (``managed``) is."""
    limit = request.node.get_closest_marker("deploy_unless")
    if limit is not None and limit.args[0] in request.getfixturevalue("deploy_capabilities"):
        backend = request.getfixturevalue("deploy_backend")
        pytest.skip(f"backend {backend!r} claims {limit.args[0]!r} (BackendInfo.capabilities): "
                    f"{limit.kwargs['reason']}")
    marker = request.node.get_closest_marker("deploy_requires")
    if marker is None:
        return
    claimed = request.getfixturevalue("deploy_capabilities")
    missing = sorted(set(marker.args) - set(claimed))
    if missing:
        backend = request.getfixturevalue("deploy_backend")
        pytest.skip(f"backend {backend!r} does not claim the capabilit{'ies' if len(missing) > 1 else 'y'} "
                    f"{', '.join(missing)} (BackendInfo.capabilities)")


@pytest.fixture
def deploy_max_workers() -> int:
    """The most workers a check asks for at once (default 4); lower it for small test systems."""
    return 4
