"""The pytest plugin's API as other backends use it, and the CLI entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dask_deploy_conformance._cli import pytest_args
from dask_deploy_conformance._profiles import default_profile
from dask_deploy_conformance._support import merge_options, parse_option

pytest_plugins = ["pytester"]


def test_parse_option() -> None:
    assert parse_option("n_workers=2") == ("n_workers", 2)
    assert parse_option("hosts=[\"a\", \"b\"]") == ("hosts", ["a", "b"])
    assert parse_option("python=/usr/bin/python3") == ("python", "/usr/bin/python3")
    assert parse_option("stop-grace=0.5") == ("stop_grace", 0.5)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_option("novalue")


def test_merge_options_merges_nested_dicts() -> None:
    merged = merge_options({"worker_options": {"a": 1}, "n_workers": 1},
                           {"worker_options": {"b": 2}, "n_workers": 2})
    assert merged == {"worker_options": {"a": 1, "b": 2}, "n_workers": 2}


def test_ci_profile_is_chosen_when_ci_is_true(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASK_DEPLOY_CONFORMANCE_PROFILE", raising=False)
    monkeypatch.setenv("CI", "true")
    assert default_profile() == "ci"
    monkeypatch.setenv("CI", "")
    assert default_profile() == "dev"
    monkeypatch.setenv("DASK_DEPLOY_CONFORMANCE_PROFILE", "thorough")
    assert default_profile() == "thorough"


def test_cli_arguments() -> None:
    args = pytest_args(["local", "--option", "stop_grace=1", "--profile", "ci", "--", "-k", "scale"])
    assert args[0].endswith("_entry.py")
    assert args[args.index("--deploy-backend") + 1] == "local"
    assert args[args.index("--deploy-option") + 1] == "stop_grace=1"
    assert args[args.index("--deploy-profile") + 1] == "ci"
    assert args[-2:] == ["-k", "scale"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DASK_DEPLOY_STATE_DIR": str(tmp_path / "state")}


def test_pytest_plugin_runs_the_suite_from_any_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "dask_deploy_conformance", "--deploy-backend", "fake",
         "-k", "close_twice", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


def test_main_runs_the_suite(tmp_path: Path) -> None:
    code = ("import sys; from dask_deploy_conformance import main; "
            "sys.exit(main(['fake', '--option', 'start_delay=0', '--', '-k', 'with_statement']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


def test_fixture_overrides_from_a_third_party_module(pytester: pytest.Pytester) -> None:
    """Options from the module's own fixtures; a capability it does not claim is skipped."""
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def my_server():
            return {"delay": 0.0}
    """)
    pytester.makepyfile(test_mine="""
        import pytest
        from dask_deploy_conformance import LifecycleChecks, ScalingChecks

        class TestMine(LifecycleChecks, ScalingChecks):
            @pytest.fixture
            def deploy_backend(self):
                return "fake"

            @pytest.fixture
            def deploy_options(self, deploy_options, my_server):
                return {**deploy_options, "start_delay": my_server["delay"]}

            @pytest.fixture
            def deploy_capabilities(self):
                return frozenset()      # claims nothing: the scaling checks skip
    """)
    result = pytester.runpytest_subprocess("-p", "dask_deploy_conformance", "-k",
                                           "close_twice or scale_by", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*does not claim the capability scale*"])


def test_a_managed_backend_skips_what_its_service_rules_out(pytester: pytest.Pytester) -> None:
    """``managed`` (a limit): the worker-option checks skip, saying why; the others run, and
    the default faults keep only those from outside the workers."""
    pytester.makepyfile(test_managed="""
        import pytest
        from dask_deploy_conformance import LifecycleChecks, OptionChecks, default_faults
        from dask_deploy_conformance._support import backend_info

        class TestManaged(LifecycleChecks, OptionChecks):
            @pytest.fixture
            def deploy_backend(self):
                return "fake"

            @pytest.fixture
            def deploy_capabilities(self, deploy_capabilities):
                return deploy_capabilities | {"managed"}

        def test_faults():
            import dataclasses
            info = dataclasses.replace(backend_info("local"), capabilities=frozenset({"managed"}))
            faults = default_faults(info)
            assert faults.start_failure is faults.cluster_start_failure is None
            assert faults.stop_failure and faults.kill
    """)
    result = pytester.runpytest_subprocess("-p", "dask_deploy_conformance", "-k",
                                           "close_twice or generic_options or faults", "-rs",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*claims 'managed'*the service starts every worker*"])


def test_missing_backend_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nobackend="""
        from dask_deploy_conformance import LifecycleChecks

        class TestNothing(LifecycleChecks):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "dask_deploy_conformance", "-k", "close_twice",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pass --deploy-backend NAME*"])
