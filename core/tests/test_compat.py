"""Anchor compatibility tables: every entry of every installed backend's table does what its
kind says (same: silent; warn: FutureWarning; refuse: one-line SpecError), as an option and
as a key of the anchor's config section; arbitrary names never escape as a traceback."""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path
from typing import Any

import dask.config
import pytest
from dask_deploy import CompatTable, SpecError, installed_backends
from dask_deploy._compat import Alias, compat_table, did_you_mean, translate
from dask_deploy._options import build_spec, register_defaults
from hypothesis import given
from hypothesis import strategies as st

#: A value each anchor name accepts (the one that is not the anchor's own default, so that
#: a config section holding it is read). Per-table overrides below.
SAMPLES: dict[str, Any] = {
    # generic
    "n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GB", "host": "127.0.0.1",
    "scheduler_port": 0, "dashboard_address": "127.0.0.1:0", "silence_logs": "error",
    "asynchronous": False, "loop": None, "security": True, "name": "mig-test",
    "shutdown_on_close": True, "resources": {"A": 1}, "env": {"A": "b"}, "quiet": True,
    "idle_timeout": 120, "scheduler_options": {"dashboard_address": "127.0.0.1:0"},
    "worker_options": {"lifetime": "1h"},
    # LocalCluster / SSHCluster
    "processes": 1, "protocol": "tcp://", "interface": "lo",
    "diagnostics_port": "127.0.0.1:0", "worker_class": "distributed.Nanny",
    "scheduler_kwargs": {"idle_timeout": 60}, "local_directory": "/tmp", "lifetime": "1h",
    "lifetime_stagger": "1m", "lifetime_restart": True, "worker_dashboard_address": ":0",
    "services": {"x": 1}, "worker_services": {"x": 1}, "blocked_handlers": ["x"],
    "scheduler_sync_interval": 2, "hosts": ["127.0.0.1"], "connect_options": {},
    "remote_python": "/usr/bin/python3", "worker_module": "distributed.cli.dask_worker",
    # dask-jobqueue
    "cores": 2, "memory": "4GB", "queue": "q", "account": "a", "walltime": "01:00:00",
    "job_extra_directives": ["--x"], "job_directives_skip": ["--mem"],
    "job_script_prologue": ["echo hi"], "python": "/usr/bin/python3",
    "log_directory": "/tmp/dd-compat-logs", "death_timeout": 30,
    "worker_extra_args": ["--lifetime", "1h"], "worker_command": "distributed.cli.dask_worker",
    "nanny": True, "shebang": "#!/bin/bash", "config_name": "slurm", "extra": ["--x", "1"],
    "env_extra": ["echo"], "job_extra": ["--x"], "header_skip": ["--mem"], "job_name": "x",
    "shared_temp_directory": "/tmp", "scheduler_cls": "distributed.Scheduler",
    "job_cls": "x", "job_cpu": 2, "job_mem": "4GB", "resource_spec": "select=1",
    "project": "p", "memory_per_core_property_name": "memcore",
    "ncpus": 2, "mem": "4GB", "lsf_units": "MB", "use_stdin": False,
    "disk": "1GB", "submit_command_extra": [], "cancel_command_extra": [],
    # dask-kubernetes
    "namespace": "ns", "image": "example/dask:1", "port_forward_cluster_ip": True,
    "scheduler_service_type": "NodePort", "create_mode": "CREATE_ONLY",
    "resource_timeout": 90, "scheduler_forward_port": 8786, "deploy_mode": "remote",
    "custom_cluster_spec": {"kind": "DaskCluster"}, "jupyter": True, "scheduler_jupyter": True,
    "pod_template": {"kind": "Pod"}, "scheduler_pod_template": {"kind": "Pod"},
    # dask-cloudprovider
    "scheduler_cpu": 1024, "scheduler_mem": 4096, "worker_cpu": 1024, "worker_mem": 4096,
    "cluster_arn": "arn:aws:ecs:us-east-1:1:cluster/x",
    "execution_role_arn": "arn:aws:iam::1:role/x", "task_role_arn": "arn:aws:iam::1:role/y",
    "cloudwatch_logs_group": "/x", "cloudwatch_logs_default_retention": 7, "vpc": "vpc-1",
    "subnets": ["subnet-1"], "security_groups": ["sg-1"], "tags": {"a": "b"},
    "region_name": "us-east-1", "platform_version": "1.4.0", "fargate_spot": True,
    "fargate_use_private_ip": True, "worker_nthreads": 2, "worker_gpu": 1,
    "environment": {"A": "b"}, "scheduler_timeout": "7 minutes", "cpu_architecture": "x86_64",
    "scheduler_extra_args": ["--x"], "scheduler_task_definition_arn": "arn:x",
    "worker_task_definition_arn": "arn:x", "scheduler_task_kwargs": {"a": 1},
    "worker_task_kwargs": {"a": 1}, "scheduler_address": "tls://x:8786",
    "task_role_policies": ["arn:x"], "mount_points": [{}], "volumes": [{}],
    "mount_volumes_on_scheduler": True, "aws_access_key_id": "AKIA",
    "aws_secret_access_key": "s", "cluster_name_template": "mine-{uuid}",
    "workers_name_start": 5, "workers_name_step": 2, "cloudwatch_logs_stream_prefix": "p",
    "skip_cleanup": True, "find_address_timeout": 90, "ami": "ami-1", "filesystem_size": 50,
    "key_name": "k", "use_private_ip": True, "scheduler_instance_type": "t3.small",
    "worker_instance_type": "t3.small", "gpu_instance_type": "g4dn.xlarge",
    "region": "us-east-1", "bootstrap": False, "instance_type": "t3.small",
    "subnet_id": "subnet-1", "docker_image": "example/dask:1", "env_vars": {"A": "b"},
    "iam_instance_profile": {"Name": "p"}, "instance_tags": {"a": "b"},
    "volume_tags": {"a": "b"}, "auto_shutdown": False, "debug": True,
    "availability_zone": "us-east-1a", "enable_detailed_monitoring": True,
    "docker_args": "--x", "extra_bootstrap": ["echo"],
}
#: Backend-specific samples (a value only valid on that backend).
OVERRIDES: dict[str, dict[str, Any]] = {
    "fargate": {"fargate_scheduler": True, "fargate_workers": True},
    "ecs": {"fargate_scheduler": False, "fargate_workers": False},
    "ssh": {"worker_options": {"nthreads": 2}},
    "local": {"processes": True},
    "k8s": {"resources": {"limits": {"cpu": "1"}}, "worker_command": "dask-worker"},
}
#: What a backend needs besides the option under test.
BASE: dict[str, dict[str, Any]] = {"ssh": {"hosts": ["127.0.0.1"]}}
#: Config-only sample values (anchor defaults are skipped, so these differ from them).
CONFIG_SAMPLES = {"name": "my-worker"}


@pytest.fixture(autouse=True)
def one_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests build hundreds of specs and start nothing: one TLS identity will do
    (making a key per spec would be most of their run time)."""
    from dask_deploy import TLS

    monkeypatch.setattr(TLS, "temporary", classmethod(lambda cls: _TLS))


def _tls() -> Any:
    from dask_deploy import TLS

    return TLS.temporary()


_TLS = _tls()


def _tables() -> list[tuple[str, CompatTable]]:
    out = []
    for name, info in sorted(installed_backends().items()):
        table = compat_table(name, info.options)
        if table is not None:
            out.append((name, table))
    return out


TABLES = _tables()
ENTRIES = [(b, t, e) for b, t in TABLES for e in t.entries]


def _sample(backend: str, entry: Alias) -> Any:
    overrides = OVERRIDES.get(backend, {})
    return overrides[entry.anchor] if entry.anchor in overrides else SAMPLES[entry.anchor]


def _outcome(backend: str, fn: Any) -> tuple[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except SpecError as e:
            return "refuse", e
    future = [w for w in caught if issubclass(w.category, FutureWarning)]
    return ("warn", future) if future else ("same", result)


def test_every_anchor_family_has_a_table() -> None:
    names = {b for b, _ in TABLES}
    assert {"local", "ssh", "slurm", "pbs", "sge", "lsf", "htcondor", "k8s", "ecs", "fargate",
            "ec2"} <= names


@pytest.mark.parametrize("backend,table,entry", ENTRIES,
                         ids=[f"{b}-{e.anchor}-{e.where}" for b, _, e in ENTRIES])
def test_entry_kind_holds_as_option_and_config(backend: str, table: CompatTable,
                                               entry: Alias) -> None:
    """An entry's kind is what happens, as an explicit option and in the anchor's config."""
    base = BASE.get(backend, {})
    if entry.applies("option"):
        value = _sample(backend, entry)
        options = {**base, entry.anchor: value}
        kind, detail = _outcome(backend, lambda: build_spec(backend, options))
        assert kind == entry.kind, (entry, detail)
        if kind == "refuse":
            assert detail.option == entry.anchor and "\n" not in str(detail)
            assert entry.reason.split(":")[0].split(";")[0][:20] in str(detail)
        if kind == "warn":
            assert all(str(w.message).startswith(entry.anchor) for w in detail)
    if entry.applies("config") and table.config:
        value = CONFIG_SAMPLES.get(entry.anchor, _sample(backend, entry))
        section = table.config[0].format(section=backend)
        key = entry.anchor.replace("_", "-")
        with dask.config.set({f"deploy.{backend}": {}, section: {key: value}}):
            kind, detail = _outcome(backend, lambda: build_spec(backend, dict(base)))
        # A config key this backend has no use for (e.g. job_cpu outside SLURM) is skipped,
        # as the anchor skips it; otherwise the kind holds.
        assert kind == entry.kind or (kind == "same" and entry.kind == "warn"
                                      and entry.ours is not None), (entry, detail)
        if kind == "refuse":
            assert detail.option == f"{section}.{key}"


@pytest.mark.parametrize("backend,table", TABLES, ids=[b for b, _ in TABLES])
def test_table_targets_are_options_of_the_backend(backend: str, table: CompatTable) -> None:
    """Every name an entry translates to is an option the backend accepts."""
    from dask_deploy._options import GENERIC_OPTIONS

    info = installed_backends()[backend]
    fields = {f.name for f in dataclasses.fields(info.options)} if info.options else set()
    for entry in table.entries:
        if entry.ours is not None:
            assert entry.ours in {*GENERIC_OPTIONS, *fields}, entry
        assert entry.kind == "same" or entry.reason, entry


def test_anchor_config_is_read_only_when_ours_is_absent() -> None:
    with dask.config.set({"deploy.slurm": {}, "jobqueue.slurm": {"cores": 6, "queue": "batch"}}):
        spec, _ = build_spec("slurm", {})
        assert spec.backend_options.cores == 6 and spec.backend_options.queue == "batch"
        spec, _ = build_spec("slurm", {"cores": 2})  # explicit wins
        assert spec.backend_options.cores == 2
    with dask.config.set({"deploy.slurm": {"queue": "ours"},
                          "jobqueue.slurm": {"cores": 6, "queue": "batch"}}):
        spec, _ = build_spec("slurm", {})
        assert spec.backend_options.queue == "ours" and spec.backend_options.cores is None


def test_config_name_selects_the_anchor_section() -> None:
    section = {"cores": 12, "job-extra": ["--gres=gpu:1"]}
    with dask.config.set({"deploy.slurm": {}, "jobqueue.gpu-nodes": section}), \
            pytest.warns(FutureWarning, match="deploy.slurm.job-extra-directives"):
        spec, _ = build_spec("slurm", {"config_name": "gpu-nodes"})
    assert spec.backend_options.cores == 12
    assert spec.backend_options.job_extra_directives == ("--gres=gpu:1",)


def test_our_spelling_wins_over_the_anchor_spelling() -> None:
    with pytest.warns(FutureWarning):
        spec, _ = build_spec("slurm", {"env_extra": ["old"], "job_script_prologue": ["new"]})
    assert spec.backend_options.job_script_prologue == ("new",)


def test_deploy_config_takes_anchor_names_and_hyphens() -> None:
    ours = {"threads-per-worker": 2, "cores": 4, "env-extra": ["module load x"]}
    with dask.config.set({"deploy.slurm": ours}), \
            pytest.warns(FutureWarning, match="deploy.slurm.env-extra"):
        spec, _ = build_spec("slurm", {})
    assert spec.worker.nthreads == 2
    assert spec.backend_options.job_script_prologue == ("module load x",)


def test_unknown_option_suggests_the_nearest_names_on_one_line() -> None:
    with pytest.raises(SpecError) as e:
        build_spec("slurm", {"coers": 4})
    assert "did you mean 'cores'" in str(e.value) and "\n" not in str(e.value)
    assert len(str(e.value)) < 200  # no dump of every option
    with pytest.raises(SpecError, match="did you mean 'threads_per_worker'"):
        build_spec("local", {"nthreads": 2})
    assert did_you_mean("zzzzzz", ["cores"]) == ""


def test_value_dependent_refusals() -> None:
    cases: list[tuple[str, dict[str, Any], str, str]] = [
             ("local", {"processes": False}, "processes", "cannot run workers in this process"),
             ("local", {"worker_class": "dask_cuda.CUDAWorker"}, "worker_class", "gpus="),
             ("local", {"protocol": "inproc://"}, "protocol", "tcp://"),
             ("local", {"interface": "no-such-if0"}, "interface", "network interface"),
             ("ecs", {"fargate_workers": True}, "fargate_workers", "fargate backend"),
             ("fargate", {"fargate_workers": False}, "fargate_workers", "ecs backend"),
             ("k8s", {"create_mode": "CONNECT_ONLY"}, "create_mode", "attach"),
             ("k8s", {"worker_command": "dask-cuda-worker"}, "worker_command", "gpus="),
             ("htcondor", {"submit_command_extra": ["-name", "x"]}, "submit_command_extra",
              "job_extra_directives"),
             ("ssh", {"hosts": ["h"], "worker_options": {"n_workers": 2}}, "worker_options",
              "n_workers="),
             ("ecs", {"worker_extra_args": ["--tls-cert", "x"]}, "worker_extra_args", "remove it"),
             ("lsf", {"scheduler_cls": "my.Scheduler"}, "scheduler_cls", "distributed.Scheduler")]
    for backend, options, option, why in cases:
        with pytest.raises(SpecError) as e, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            build_spec(backend, options)
        assert e.value.option == option and why in str(e.value), (backend, options, e.value)


def test_k8s_container_resources_become_worker_sizes() -> None:
    with pytest.warns(FutureWarning, match="resources is dask-kubernetes"):
        spec, _ = build_spec("k8s", {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                                   "limits": {"cpu": "2", "memory": "2Gi",
                                                              "nvidia.com/gpu": 1}}})
    assert (spec.worker.nthreads, spec.worker.memory_limit, spec.worker.gpus) == (2, 2**31, 1)
    assert spec.worker.resources == {}
    spec, _ = build_spec("k8s", {"resources": {"GPU": 1}})  # Dask resources: ours, silent
    assert spec.worker.resources == {"GPU": 1}


def test_cli_args_become_options() -> None:
    with pytest.warns(FutureWarning):
        spec, _ = build_spec("ecs", {"worker_extra_args": [
            "--nthreads", "3", "--memory-limit=2GB", "--resources", "GPU=1,FOO=2",
            "--lifetime", "1h", "--no-dashboard"]})
    assert spec.worker.nthreads == 3 and spec.worker.memory_limit == 2 * 10**9
    assert dict(spec.worker.resources) == {"GPU": 1.0, "FOO": 2.0}
    assert dict(spec.worker.options) == {"lifetime": "1h", "dashboard": False}


# --------------------------------------------------------------------------------------
# Hostile names and values: a translation or one SpecError line, never a deep traceback
# --------------------------------------------------------------------------------------

_ALL_NAMES = sorted({e.anchor for _, t in TABLES for e in t.entries})
_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=12), st.lists(st.text(max_size=6), max_size=3),
                    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2))
_names = st.one_of(st.sampled_from(_ALL_NAMES), st.text(min_size=1, max_size=20),
                   st.sampled_from(_ALL_NAMES).map(lambda n: n.replace("_", "-")))


@given(backend=st.sampled_from(["local", "slurm", "htcondor", "k8s", "ecs", "fargate", "ec2"]),
       options=st.dictionaries(_names, _values, max_size=3))
def test_arbitrary_options_translate_or_fail_in_one_line(backend: str,
                                                         options: dict[str, Any]) -> None:
    options.pop("loop", None)  # an event loop object, not data
    options.pop("asynchronous", None)  # a flag of the caller, checked by distributed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            build_spec(backend, options)
        except SpecError as e:
            assert "\n" not in str(e) and len(str(e)) < 2000
            assert isinstance(e.option, str) and e.option


@given(options=st.dictionaries(st.text(min_size=1, max_size=12), _values, max_size=4))
def test_anchor_config_sections_never_crash(options: dict[str, Any]) -> None:
    with dask.config.set({"deploy.slurm": {}, "jobqueue.slurm": options}), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            build_spec("slurm", {})
        except SpecError as e:
            assert "\n" not in str(e) and e.option


def test_translate_refuses_non_string_names() -> None:
    with pytest.raises(SpecError, match="option names are strings"):
        translate(None, {1: 2}, where="option")  # type: ignore[dict-item]


# --------------------------------------------------------------------------------------
# deploy.yaml and its schema
# --------------------------------------------------------------------------------------

PKG = Path(__file__).resolve().parents[1] / "src" / "dask_deploy"
ROOT = Path(__file__).resolve().parents[2]


def _defaults() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((PKG / "deploy.yaml").read_text())  # type: ignore[no-any-return]


def test_deploy_yaml_is_valid_against_its_schema_and_registered() -> None:
    import jsonschema

    schema = json.loads((PKG / "deploy.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_defaults(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"deploy": {"start-timeout": "soon"}}, schema)
    register_defaults()
    assert dask.config.get("deploy.max-failures") == 5
    assert dask.config.get("deploy.start-timeout") == 60


def test_every_config_key_is_documented() -> None:
    """Each deploy.* key the code reads is in deploy.yaml and described in the schema."""
    schema = json.loads((PKG / "deploy.schema.json").read_text())["properties"]["deploy"]
    props = schema["properties"]
    defaults = _defaults()["deploy"]
    assert set(defaults) == set(props)
    for key, spec in props.items():
        assert len(spec.get("description", "")) > 20, key
    read = set()
    for path in [*ROOT.glob("core/src/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")]:
        read |= set(re.findall(r'"deploy\.([a-z][a-z-]*)"', path.read_text())) - {"yaml"}
    assert read, "no deploy.* key found: the scan is broken"
    assert read <= set(props), sorted(read - set(props))


# --------------------------------------------------------------------------------------
# docs/migrating.md: its tables are generated from the data
# --------------------------------------------------------------------------------------


def test_migration_guide_tables_are_current() -> None:
    from dask_deploy._compat import render_doc

    doc = ROOT / "docs" / "migrating.md"
    text = doc.read_text()
    blocks = set(re.findall(r"<!-- compat:([a-z0-9_-]+) -->", text))
    assert {b for b, _ in TABLES} <= blocks, "a backend's table is missing from the guide"
    assert render_doc(text) == text, (
        "docs/migrating.md is stale: run `uv run python -m dask_deploy._compat docs/migrating.md`")


def test_spec_files_take_hyphenated_and_anchor_names(tmp_path: Path) -> None:
    """``up -f``: hyphens as in -o and dask.config; anchors' names go through the table;
    dask-jobqueue's adapt bounds are accepted."""
    from dask_deploy._cli import _load_spec_file

    path = tmp_path / "spec.yaml"
    path.write_text("backend: slurm\noptions:\n  threads-per-worker: 2\n  env-extra: [echo]\n"
                    "  job-extra-directives: ['--exclusive']\n"
                    "adapt:\n  minimum-jobs: 1\n  maximum_jobs: 4\n")
    spec = _load_spec_file(str(path))
    assert spec["adapt"] == {"minimum_jobs": 1, "maximum_jobs": 4}
    with pytest.warns(FutureWarning, match="env_extra"):
        built, _ = build_spec("slurm", spec["options"])
    assert built.worker.nthreads == 2
    assert built.backend_options.job_script_prologue == ("echo",)


def test_render_doc_fills_each_block_and_keeps_the_prose_between() -> None:
    from dask_deploy._compat import render_doc

    text = "a\n<!-- compat:local -->\n<!-- /compat -->\nprose\n<!-- compat:nope -->\n<!-- /compat -->\n"
    once = render_doc(text)
    assert "prose" in once and "distributed.LocalCluster" in once and "not installed" in once
    assert render_doc(once) == once
