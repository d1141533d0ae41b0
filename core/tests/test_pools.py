"""Worker pools: named groups of units with their own worker spec and bounds.

Pure tests first (options -> Pool records, the record round trip, the reconciler over
units of two pools, :func:`pool_load`'s assignment of tasks to pools), then one end-to-end
run on the fake backend and one on the local backend.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from dask_deploy import Cluster, Phase, Pool, SpecError, WorkerSpec
from dask_deploy._adaptive import pool_load
from dask_deploy._options import build_spec
from dask_deploy._reconcile import Failures, Observed, Policy, reconcile
from dask_deploy._state import spec_from_dict, spec_to_dict
from distributed import Client
from hypothesis import given
from hypothesis import strategies as st

POOLS = {"small": {"threads_per_worker": 1},
         "big": {"threads_per_worker": 2, "memory_limit": "2GB", "resources": {"BIG": 1},
                 "maximum": 2}}


def test_pools_inherit_the_generic_worker_options() -> None:
    spec, _ = build_spec("local", {"pools": POOLS, "env": {"A": "1"}, "n_workers": 1,
                                   "name": "p"})
    small, big = spec.all_pools
    assert (small.name, small.worker.nthreads, small.n_workers) == ("small", 1, 1)
    assert (big.worker.nthreads, big.worker.memory_limit, dict(big.worker.resources)) == \
        (2, 2_000_000_000, {"BIG": 1})
    assert big.n_workers == 0 and big.maximum == 2  # n_workers start in the first pool only
    assert dict(big.worker.env) == {"A": "1"}  # the cluster's options are every pool's base
    # Without pools: one "default" pool of the generic options, as before.
    plain, _ = build_spec("local", {"n_workers": 3, "name": "p"})
    assert [(p.name, p.n_workers) for p in plain.all_pools] == [("default", 3)]
    assert plain.pools == ()


def test_pools_survive_the_cluster_record() -> None:
    spec, _ = build_spec("local", {"pools": POOLS, "name": "p"})
    assert spec_from_dict(spec_to_dict(spec)) == spec


@pytest.mark.parametrize(("pools", "names"), [
    ({"Big": {}}, "pools"),  # not a valid pool name
    ({"big": {"queue": "gpu"}}, "pools['big'].queue"),  # not a pool option
    ({"big": {"minimum": 3, "maximum": 1}}, "maximum"),
    ({"big": {"n_workers": 5, "maximum": 2}}, "n_workers"),
    ({"big": {"threads_per_worker": 0}}, "threads_per_worker"),
    ({"big": [1]}, "pools['big']"),
    ({}, "pools"),
])
def test_bad_pools_name_the_option(pools: Any, names: str) -> None:
    with pytest.raises(SpecError, match=names.replace("[", r"\[")):
        build_spec("local", {"pools": pools, "name": "p"})


@given(st.one_of(
    st.none(), st.integers(), st.text(max_size=5),
    st.dictionaries(st.text(max_size=20), st.one_of(
        st.none(), st.integers(), st.dictionaries(
            st.sampled_from(["threads_per_worker", "minimum", "maximum", "n_workers",
                             "resources", "gpus", "env", "nanny", "bogus"]),
            st.one_of(st.integers(-2, 3), st.text(max_size=3), st.none(),
                      st.dictionaries(st.text(max_size=3), st.integers(-1, 2), max_size=2)),
            max_size=4)), max_size=3)))
def test_hostile_pools_fail_with_a_spec_error(pools: Any) -> None:
    try:
        spec, _ = build_spec("local", {"pools": pools, "name": "p"})
    except SpecError:
        return
    for pool in spec.all_pools:  # accepted: valid records within their bounds
        assert isinstance(pool, Pool) and isinstance(pool.worker, WorkerSpec)
        assert pool.allows(pool.n_workers)


def test_reconcile_treats_units_of_every_pool_alike() -> None:
    # The plan is per pool (scale(n, pool=) edits only that pool's units); the reconciler
    # then converges all units at once, whatever their pool.
    now = 100.0
    up = Observed(Phase.RUNNING, 0.0, running_at=1.0, connected_at=2.0, connected=True)
    units = {"c-small-0": up, "c-big-1": Observed(Phase.FAILED, 0.0, "oom"), "c-big-2": up}
    d = reconcile(["c-small-0", "c-big-1", "c-big-3"], units, Failures(), now, Policy())
    assert d.stop == ("c-big-1", "c-big-2") and d.failed == (("c-big-1", "oom"),)
    assert d.start == ()  # backing off after the failure: no start this round
    later = reconcile(["c-small-0", "c-big-1", "c-big-3"], {"c-small-0": up}, d.failures,
                      d.failures.retry_at, Policy())
    assert later.start == ("c-big-1", "c-big-3")


class _Task:
    """The two attributes of a scheduler's TaskState that pool_load reads (hashable)."""

    def __init__(self, prefix: str, need: dict[str, float] | None, seen: bool = True) -> None:
        # duration_average < 0: no task of the prefix has finished (the duration is a guess)
        self.prefix = SimpleNamespace(name=prefix, duration_average=1.0 if seen else -1.0)
        self.resource_restrictions = need


def _task(prefix: str, seen: bool = True, **need: float) -> _Task:
    return _Task(prefix, need or None, seen)


def _scheduler(queued: list[Any], unrunnable: list[Any], workers: dict[str, list[Any]],
               ) -> SimpleNamespace:
    ws = {f"tcp://{n}": SimpleNamespace(name=n, processing=set(p), nthreads=2, nbytes=len(n))
          for n, p in workers.items()}
    return SimpleNamespace(queued=queued, unrunnable=dict.fromkeys(unrunnable), workers=ws,
                           _get_prefix_duration=lambda prefix: 1.0)


def test_pool_load_gives_tasks_to_the_pools_whose_resources_fit() -> None:
    big_tasks = [_task("b", BIG=1) for _ in range(4)]
    plain = [_task("p") for _ in range(6)]
    sched = _scheduler(plain, big_tasks, {})
    # big: 1 BIG per worker, so one such task at a time per worker, whatever its threads.
    target, idle, work, busy, ready, guessed = pool_load(sched, frozenset(), {"BIG": 1}, 2,
                                                         False, 1.0)
    assert (target, idle, work, busy, ready, guessed) == (4, [], 4.0, 0.0, 4.0, False)
    # The general pool takes the unrestricted tasks only (2 threads: 3 workers' worth).
    assert pool_load(sched, frozenset(), {}, 2, True, 1.0)[:3] == (3, [], 6.0)
    # A pool without BIG never scales for BIG tasks; target_duration spreads the work.
    assert pool_load(_scheduler([], big_tasks, {}), frozenset(), {}, 2, True, 1.0)[0] == 0
    assert pool_load(sched, frozenset(), {"BIG": 1}, 2, False, 10.0)[0] == 1
    # Nothing running yet and work waiting: at least one worker, however short the work.
    assert pool_load(_scheduler([], big_tasks[:1], {}), frozenset(), {"BIG": 1}, 2, False,
                     100.0)[0] == 1


def test_pool_load_keeps_busy_workers_and_offers_idle_ones() -> None:
    sched = _scheduler([], [], {"c-big-1": [_task("b", BIG=1)], "c-big-2": [],
                                "c-big-33": [], "c-small-0": []})
    target, idle, work, busy, ready, _ = pool_load(
        sched, frozenset({"c-big-1", "c-big-2", "c-big-33"}), {"BIG": 1}, 2, False, 5.0)
    assert target == 1 and busy == 1.0 and work == 1.0
    assert ready == 0.0  # the one task runs: nothing a new worker could take
    assert idle == ["c-big-2", "c-big-33"]  # only its own workers, least data first


def test_pool_load_says_when_its_waiting_work_is_a_guess() -> None:
    sched = _scheduler([_task("new", seen=False, GPU=1)], [_task("p")], {})
    assert pool_load(sched, frozenset(), {"GPU": 1}, 1, False, 5.0)[4:] == (1.0, True)
    assert pool_load(sched, frozenset(), {}, 1, True, 5.0)[4:] == (1.0, False)  # not its task


def test_two_pools_on_the_fake_backend(wait_until: Any) -> None:
    with Cluster.from_name("fake", pools={"small": {}, "big": {"threads_per_worker": 2,
                                                                "resources": {"BIG": 2}}},
                           n_workers=1, name="t-pools-fake") as cluster, \
            Client(cluster) as client:
        cluster.scale(2, pool="big")
        cluster.wait_for_workers(3, timeout=30)
        got = client.run(lambda dask_worker: (dask_worker.state.nthreads,
                                              dict(dask_worker.state.total_resources)))
        by_name = {w["name"]: got[a] for a, w in client.scheduler_info()["workers"].items()}
        assert by_name == {"t-pools-fake-small-0": (1, {}), "t-pools-fake-big-1": (2, {"BIG": 2}),
                           "t-pools-fake-big-2": (2, {"BIG": 2})}
        report = cluster.status()
        assert report.pools == (("small", 1, 1), ("big", 2, 2))
        assert "small 1/1, big 2/2" in report.summary()
        assert report["t-pools-fake-big-2"].pool == "big"
        cluster.scale(0, pool="big")  # the other pool keeps its units
        wait_until(lambda: set(cluster.plan) == {"t-pools-fake-small-0"}
                   and len(client.scheduler_info()["workers"]) == 1, 30, "big pool to stop")
        with pytest.raises(SpecError, match="pools"):
            cluster.scale(1, pool="huge")


def test_local_pools_scale_apart_and_adapt_by_resources(wait_until: Any,
                                                        no_leaked_processes: None) -> None:
    pools = {"small": {}, "big": {"threads_per_worker": 2, "resources": {"BIG": 1},
                                  "maximum": 1}}
    with Cluster.from_name("local", n_workers=1, pools=pools, name="t-pools") as cluster, \
            Client(cluster) as client:
        with pytest.raises(SpecError, match="from 0 to 1"):
            cluster.scale(2, pool="big")  # above the pool's maximum
        cluster.wait_for_workers(1, timeout=60)
        assert "t-pools-small-0" in cluster.get_logs()
        cluster.scale(0, pool="small")
        wait_until(lambda: not client.scheduler_info()["workers"], 30, "small pool to stop")
        # Adapting every pool: a task that needs BIG starts a big worker, and no small one.
        cluster.adapt(cooldown=0.2)
        started = time.monotonic()
        assert client.submit(lambda: 42, resources={"BIG": 1}, pure=False).result(60) == 42
        names = [w["name"] for w in client.scheduler_info()["workers"].values()]
        assert [n.rpartition("-")[0] for n in names] == ["t-pools-big"], names
        assert cluster.pool_workers("small") == set()
        # Idle again: the big worker is retired (its result was released).
        wait_until(lambda: not cluster.units, 30, "the idle big worker to be retired")
        assert time.monotonic() - started < 60


def test_spec_files_name_pools(tmp_path: Any) -> None:
    from dask_deploy._cli import _load_spec_file

    path = tmp_path / "spec.yaml"
    path.write_text("backend: local\noptions:\n  pools:\n    big: {resources: {BIG: 1}}\n"
                    "adapt: {pool: big, minimum: 0, maximum: 2}\n")
    spec = _load_spec_file(str(path))
    assert spec["adapt"] == {"pool": "big", "minimum": 0, "maximum": 2}
    path.write_text("backend: local\nadapt: {cooldown: 10s, min_lifetime: 2.5}\n")
    assert _load_spec_file(str(path))["adapt"] == {"cooldown": "10s", "min_lifetime": 2.5}
    cluster_spec, _ = build_spec("local", {**spec["options"], "name": "p"})
    assert [p.name for p in cluster_spec.all_pools] == ["big"]


# -- per-pool backend options (BackendInfo.pool_options; the fake takes two) ------------


def test_a_pool_sets_the_backend_options_its_backend_allows() -> None:
    spec, _ = build_spec("fake", {"pools": {"fast": {}, "bad": {"fail_start": True}},
                                  "start_delay": 0.5, "name": "p"})
    fast, bad = spec.all_pools
    assert fast.backend_options is None and spec.options_of("fast") is spec.backend_options
    assert spec.options_of("bad") is bad.backend_options
    # The cluster's options are the pool's base; the pool replaces only what it sets.
    assert (spec.options_of("bad").fail_start, spec.options_of("bad").start_delay) == (True, 0.5)
    assert spec.backend_options.fail_start is False
    assert spec_from_dict(spec_to_dict(spec)) == spec


@pytest.mark.parametrize(("backend", "pools", "message"), [
    ("fake", {"big": {"workers_per_unit": 2}},
     r"pools\['big'\].workers_per_unit=2: backend 'fake' cannot set workers_per_unit per pool"),
    ("fake", {"big": {"start_delay": -1}}, r"pools\['big'\].start_delay=-1"),
    ("fake", {"big": {"fail_start": "yes"}}, r"pools\['big'\].fail_start='yes'"),
    ("local", {"big": {"queue": "gpu"}}, r"pools\['big'\].queue='gpu': not a pool option"),
])
def test_bad_pool_backend_options_name_the_pool_and_option(backend: str, pools: Any,
                                                           message: str) -> None:
    with pytest.raises(SpecError, match=message) as e:
        build_spec(backend, {"pools": pools, "name": "p"})
    assert "\n" not in str(e.value)


@given(st.dictionaries(st.sampled_from(["start_delay", "fail_start", "workers_per_unit",
                                        "refuse_start", "\n"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-2, 3),
                                 st.floats(allow_nan=True), st.text(max_size=3),
                                 st.lists(st.integers(), max_size=2)), max_size=3))
def test_hostile_pool_backend_options_fail_with_a_spec_error(opts: Any) -> None:
    try:
        spec, _ = build_spec("fake", {"pools": {"a": {}, "b": opts}, "name": "p"})
    except SpecError as e:
        assert "\n" not in str(e) and str(e).startswith("invalid pools['b'].")
        return
    assert set(opts) <= {"start_delay", "fail_start"}
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_a_pool_s_backend_options_reach_its_units_only(wait_until: Any) -> None:
    """~2 s: the fake backend fails the units of the pool that asks it to, not the other's."""
    with Cluster.from_name("fake", pools={"ok": {}, "bad": {"fail_start": True}},
                           n_workers=1, name="t-pool-opts") as cluster, Client(cluster):
        cluster.scale(1, pool="bad")
        cluster.wait_for_workers(1, timeout=30)
        wait_until(lambda: "failure" in cluster.status()["t-pool-opts-bad-1"].reason,
                   30, "the bad pool's unit to fail")
        assert "injected start failure" in cluster.get_logs()["t-pool-opts-bad-1"]
        assert cluster.status()["t-pool-opts-ok-0"].connected


def test_a_pool_record_made_in_python_cannot_smuggle_other_options() -> None:
    """A backend reads per pool only its ``pool_options``: a Pool record that differs in
    another field is refused, not silently started with the cluster's value."""
    import dataclasses

    from dask_deploy import SpecCluster

    spec, _ = build_spec("fake", {"pools": {"a": {}}, "name": "p"})
    smuggled = dataclasses.replace(spec.backend_options, workers_per_unit=2)
    bad = dataclasses.replace(spec, pools=(Pool("a"), Pool("b", backend_options=smuggled)))
    with pytest.raises(SpecError, match=r"pools\['b'\].workers_per_unit=2: backend 'fake' "
                                        "cannot set workers_per_unit per pool"):
        SpecCluster(bad, extensions={}, quiet=True)
    with pytest.raises(SpecError, match=r"pools\['b'\].backend_options"):  # another class
        dataclasses.replace(spec, pools=(Pool("b", backend_options=object()),))


@pytest.mark.parametrize(("maximum", "ok"), [(0, True), (1, False), (3, False), (4, True)])
def test_a_pool_of_multi_worker_units_is_bounded_in_whole_units(maximum: int, ok: bool) -> None:
    """Units start whole: with two workers per unit, ``maximum=1`` could never start one
    (adapt would fail every round), so it is refused when the cluster is made."""
    from dask_deploy import SpecCluster

    spec, _ = build_spec("fake", {"pools": {"a": {"maximum": maximum}}, "workers_per_unit": 2,
                                  "name": "p"})
    if ok:
        SpecCluster(spec, extensions={}, quiet=True).close()
        return
    with pytest.raises(SpecError, match=rf"pools\['a'\].maximum={maximum}: each unit of this "
                                        "pool runs 2 workers.*use a multiple of 2") as e:
        SpecCluster(spec, extensions={}, quiet=True)
    assert "\n" not in str(e.value)
