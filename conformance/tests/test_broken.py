"""Proof that the suite can fail: each broken backend fails the check(s) naming its defect.

Each backend of the catalogue runs exactly its named checks (the claim is "this defect is
caught by that check"; the rest of the suite proves nothing about it), in its own
interpreter (``dask-deploy conformance``'s pytest command line plus a JUnit report), a few
at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from dask_deploy_conformance._cli import pytest_args
from dask_deploy_conformance.broken import CATALOGUE, install

#: The named checks against each broken backend, six at a time, on 2 shared cores.
pytestmark = pytest.mark.timeout(1500)


@dataclass(frozen=True)
class Outcome:
    returncode: int
    failed: frozenset[str]
    passed: frozenset[str]
    output: str


def _run(name: str, site: Path, work: Path) -> Outcome:
    report = work / f"{name}.xml"
    args = pytest_args([name, "--profile", "ci", "--timeout", "10", "-q",
                        # Native tracebacks: pytest's own re-parse source with ast, which
                        # CPython 3.11.7 can fail ("AST constructor recursion depth
                        # mismatch", an INTERNALERROR, exit 3) after a deep recursion.
                        "--", f"--junitxml={report}", "-p", "no:logging", "--tb=native",
                        "--timeout=180"])  # a hang in one check fails it, not the whole run
    # The named checks by node id (exact; -k would also pick test_no_leak_after_close_*).
    entry = args.pop(0)
    args[:0] = [f"{entry}::TestConformance::{check}" for check in CATALOGUE[name].fails]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "DASK_DEPLOY_STATE_DIR": str(work / f"state-{name}"), "CI": "true"}
    proc = subprocess.run([sys.executable, "-m", "pytest", *args], env=env, cwd=work,
                          capture_output=True, text=True, timeout=900, check=False)
    failed: set[str] = set()
    passed: set[str] = set()
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            bad = case.find("failure") is not None or case.find("error") is not None
            skipped = case.find("skipped") is not None
            (failed if bad else set() if skipped else passed).add(case.get("name", ""))
    return Outcome(proc.returncode, frozenset(failed), frozenset(passed),
                   (proc.stdout + proc.stderr)[-6000:])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    work = tmp_path_factory.mktemp("broken")
    site = Path(install(str(work / "site")))
    with ThreadPoolExecutor(max_workers=6) as pool:  # mostly waiting, little CPU each
        futures = {name: pool.submit(_run, name, site, work) for name in CATALOGUE}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_broken_backend_fails_the_named_check(name: str, outcomes: dict[str, Outcome]) -> None:
    broken, outcome = CATALOGUE[name], outcomes[name]
    assert outcome.returncode == 1, f"the suite did not fail against {name}:\n{outcome.output}"
    missed = [check for check in broken.fails if check not in outcome.failed]
    assert not missed, (f"{name} ({broken.defect}) passed {missed}; failed instead: "
                        f"{sorted(outcome.failed)}\n{outcome.output}")


def test_shell_base_is_the_template() -> None:
    """The catalogue's process backends build on the tutorial's code, not a drifting copy."""
    import dask_deploy_conformance._shell as shell

    template = Path(__file__).parents[1] / "template" / "src" / "dask_deploy_shell" / "__init__.py"
    marker = "from __future__ import annotations"
    ours = Path(shell.__file__).read_text().partition(marker)[2]
    assert ours == template.read_text().partition(marker)[2], (
        "conformance/src/dask_deploy_conformance/_shell.py differs from the template below "
        "`from __future__`: copy the template's code into it")


def test_catalogue_checks_exist() -> None:
    from dask_deploy_conformance import ConformanceSuite

    checks = {n for n in dir(ConformanceSuite) if n.startswith("test_")}
    for name, broken in CATALOGUE.items():
        assert set(broken.fails) <= checks, f"{name} names checks the suite does not have"
