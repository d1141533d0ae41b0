"""Backends are found through entry points, one at a time, with helpful errors."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest
from dask_deploy import BackendNotFound, Cluster, DeployError, hookimpl, hookspecs, installed_backends
from dask_deploy._plugins import backend_info, cluster_plugin_manager
from dask_deploy._specs import ClusterSpec


def install_fake_distribution(root: Path, modules: dict[str, str], entry_points: str) -> None:
    """A real installed distribution (a .dist-info with entry_points.txt) on sys.path."""
    dist = root / "dask_deploy_testplugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dask-deploy-testplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def test_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_fake_distribution(
        tmp_path,
        {
            "ddtest_good": """
                from dask_deploy import BackendInfo, hookimpl
                from dask_deploy._local import LocalBackend
                IMPORTED = True

                @hookimpl
                def deploy_backends():
                    return [BackendInfo("ddtest", "a test backend", factory=LocalBackend,
                                        capabilities=frozenset({"scale"}))]
            """,
            "ddtest_broken": "raise ImportError('this plugin must never be imported')\n",
        },
        """
            [dask_deploy]
            ddtest = ddtest_good
            ddbroken = ddtest_broken
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    backend_info.cache_clear()
    yield tmp_path
    backend_info.cache_clear()
    for mod in ("ddtest_good", "ddtest_broken"):
        sys.modules.pop(mod, None)


def test_from_name_loads_only_the_named_backend(test_plugin: Path) -> None:
    with Cluster.from_name("ddtest", n_workers=1, name="t-ep") as cluster:
        cluster.wait_for_workers(1, timeout=60)
        assert cluster.spec.backend == "ddtest"
    assert "ddtest_good" in sys.modules
    assert "ddtest_broken" not in sys.modules  # never imported: it was not asked for


def test_listing_survives_a_broken_plugin(test_plugin: Path) -> None:
    with pytest.warns(RuntimeWarning, match="ddbroken"):
        names = installed_backends()
    assert {"local", "ddtest"} <= set(names)
    assert names["ddtest"].summary == "a test backend"


def test_unknown_backend_lists_installed_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendNotFound) as info:
        Cluster.from_name("nosuch")
    assert "installed: " in str(info.value) and "local" in str(info.value)
    assert "'dask_deploy' group" in str(info.value)
    monkeypatch.setenv("DASK_DEPLOY_DISABLE_PLUGINS", "k8s")
    backend_info.cache_clear()
    with pytest.raises(BackendNotFound, match="disabled by DASK_DEPLOY_DISABLE_PLUGINS"):
        Cluster.from_name("k8s")
    # As if the k8s plugin were not installed at all: the error says which extra adds it.
    monkeypatch.delenv("DASK_DEPLOY_DISABLE_PLUGINS")
    monkeypatch.setattr("dask_deploy._plugins._entry_points", lambda group: {})
    backend_info.cache_clear()
    with pytest.raises(BackendNotFound, match=r'pip install "dask-deploy\[k8s\]"'):
        Cluster.from_name("k8s")
    backend_info.cache_clear()


def test_every_hook_is_documented_as_a_contract() -> None:
    hooks = [n for n, f in vars(hookspecs).items() if n.startswith("deploy_") and callable(f)]
    assert len(hooks) >= 11
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 200, f"{name} lacks a contract docstring"
        assert "Called" in doc or "called" in doc, f"{name}: say when it is called"
    for name in hookspecs.BACKEND_HOOKS:
        assert inspect.iscoroutinefunction(getattr(hookspecs, name)), name


def test_an_extension_may_not_implement_a_backend_hook() -> None:
    class Sneaky:
        @hookimpl
        async def deploy_poll(self, cluster, handles):  # type: ignore[no-untyped-def]
            return []

    with pytest.raises(DeployError, match="deploy_poll"):
        cluster_plugin_manager(ClusterSpec("local", "t-x"), extensions={"sneaky": Sneaky()})


def _expand(spec: ClusterSpec, extensions: dict[str, object]) -> list[str]:
    from dask_deploy import SpecCluster

    c = SpecCluster.__new__(SpecCluster)
    c._hook = cluster_plugin_manager(spec, extensions=extensions)[0].hook
    return [w.suffix for w in c._expand(spec)]


class _Split:
    """Splits every worker in two, and notes its turn in ``order``."""

    def __init__(self, tag: str, order: list[str]) -> None:
        self.tag, self.order = tag, order

    @hookimpl
    def deploy_expand_resources(self, workers):  # type: ignore[no-untyped-def]
        # Accepts only ``workers``: pluggy passes the subset an implementation asks for.
        self.order.append(self.tag)
        workers[:] = [w.replace(suffix=f"{w.suffix}-{i}") for w in workers for i in range(2)]


def test_expansion_hooks_chain_in_pluggy_order() -> None:
    from dask_deploy import WorkerSpec

    order: list[str] = []
    spec = ClusterSpec("local", "t-exp2", worker=WorkerSpec(nthreads=1))
    assert _expand(spec, {"a": _Split("a", order), "b": _Split("b", order)}) == \
        ["-0-0", "-0-1", "-1-0", "-1-1"]
    assert order == ["a", "b"]  # in the order the extensions were given


def test_a_tryfirst_expansion_runs_first() -> None:
    from dask_deploy import WorkerSpec

    order: list[str] = []

    class First:
        @hookimpl(tryfirst=True)
        def deploy_expand_resources(self, cluster, workers):  # type: ignore[no-untyped-def]
            order.append("first")
            assert workers == [cluster.worker]  # nobody ran before it
            workers[:] = [workers[0].replace(suffix="-x")]

    spec = ClusterSpec("local", "t-exp3", worker=WorkerSpec(nthreads=1))
    assert _expand(spec, {"a": _Split("a", order), "first": First()}) == ["-x-0", "-x-1"]
    assert order == ["first", "a"]


def test_an_expansion_that_empties_the_unit_is_refused() -> None:
    from dask_deploy import SpecError, WorkerSpec

    class Empty:
        @hookimpl
        def deploy_expand_resources(self, workers):  # type: ignore[no-untyped-def]
            workers.clear()

    with pytest.raises(SpecError, match="no workers"):
        _expand(ClusterSpec("local", "t-exp4", worker=WorkerSpec()), {"e": Empty()})


def test_remote_scheduler_capability_comes_from_the_hooks() -> None:
    from dask_deploy import BackendInfo, SpecError, from_name, register_backend
    from dask_deploy._plugins import backend_capabilities

    class NoRemote:
        def __init__(self, spec: ClusterSpec) -> None:
            pass

    # Claims remote_scheduler, but implements no deploy_start_scheduler: the hook decides.
    register_backend(BackendInfo("t-noremote", "test", NoRemote,
                                 capabilities=frozenset({"remote_scheduler"})))
    assert "remote_scheduler" not in backend_capabilities("t-noremote")
    with pytest.raises(SpecError, match="scheduler"):
        from_name("t-noremote", scheduler="remote")
    assert "remote_scheduler" in backend_capabilities("local")  # local implements it


def test_job_script_is_only_for_backends_that_submit_one() -> None:
    with Cluster.from_name("local", n_workers=0, name="t-js") as cluster, \
            pytest.raises(DeployError, match="submits no job script"):
        cluster.job_script()
