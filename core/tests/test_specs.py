"""Options are validated where they enter, with errors that name the option and the fix."""

from __future__ import annotations

import pytest
from dask_deploy import Cluster, ClusterSpec, Handle, SpecError, WorkerSpec


@pytest.mark.parametrize(
    ("options", "option", "hint"),
    [
        ({"threads_per_worker": 0}, "threads_per_worker", "integer >= 1"),
        ({"memory_limit": "lots"}, "memory_limit", '"4GiB"'),
        ({"memory_limit": -5}, "memory_limit", "auto"),
        ({"name": "Bad_Name"}, "name", "lowercase"),
        ({"scheduler": "cloud"}, "scheduler", '"remote"'),
        ({"resources": {"GPU": -1}}, "resources['GPU']", ">= 0"),
        ({"env": {"A": 1}}, "env['A']", "string"),
        ({"n_workers": -1}, "n_workers", ">= 0"),
        ({"start_timeout": 0}, "start_timeout", "> 0"),
        ({"stop_grace": -1}, "stop_grace", ">= 0"),
        ({"security": "yes"}, "security", "True"),
        ({"nthreads": 2}, "nthreads", "threads_per_worker"),  # unknown: lists what is accepted
    ],
)
def test_bad_option_names_option_value_and_fix(options: dict, option: str, hint: str) -> None:
    with pytest.raises(SpecError) as info:
        Cluster.from_name("local", **options)
    err = info.value
    assert err.option == option
    assert f"={err.value!r}" in str(err)  # the value given is repeated
    assert hint in str(err)


def test_memory_sizes_are_parsed() -> None:
    assert WorkerSpec(memory_limit="2 GiB").memory_limit == 2 * 2**30
    assert WorkerSpec(memory_limit=None).memory_limit is None
    assert WorkerSpec(memory_limit="auto").memory_limit == "auto"


def test_specs_are_frozen_and_copy_their_mappings() -> None:
    env = {"A": "1"}
    w = WorkerSpec(env=env)
    env["A"] = "2"
    assert w.env["A"] == "1"
    with pytest.raises(TypeError):
        w.env["B"] = "3"  # type: ignore[index]
    with pytest.raises(AttributeError):
        w.nthreads = 4  # type: ignore[misc]


def test_handle_round_trips_through_json_types() -> None:
    h = Handle("slurm", "c1", "c1-0", "12345_0", {"host": "n1", "workers": ["c1-0"]})
    assert Handle.from_dict(h.to_dict()) == h


def test_tls_repr_hides_the_key() -> None:
    spec = ClusterSpec(backend="local", name="c1")
    assert spec.tls is None
    from dask_deploy import TLS

    tls = TLS("CERT", "SECRET-KEY")
    assert "SECRET" not in repr(tls) and "SECRET" not in repr(ClusterSpec("local", "c2", tls=tls))
