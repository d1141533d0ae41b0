"""Hostile input: no option becomes shell in a job script, and keys are fresh per start.

The property test renders a job script for every system from generated option values
(arbitrary text plus shell payloads: newlines, quotes, ``$()``, backticks, ``;``, ``&&``,
spaces) and either sees the spec refused with a :class:`SpecError` that names the option,
or runs the script with bash in a sandbox where ``python`` is a stub that records its argv:
no payload may have run (no marker file) and each stub call must get exactly the intended
argv. The header lines are checked too: every one is a comment to bash, and SLURM's own
reading of the quoted values (a port of sbatch's ``_get_argument``) gives back the value.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from dask_deploy import TLS, ClusterSpec, SpecError, Unit, WorkerSpec
from dask_deploy_jobqueue._backend import OPTIONS, JobqueueBackend
from dask_deploy_jobqueue._options import OAROptions, field_names
from dask_deploy_jobqueue._script import NAME
from dask_deploy_jobqueue._systems import SYSTEMS, HTCondor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: Shell payloads: each one runs `touch` if any part of a value reaches bash unquoted.
PAYLOADS = [
    '; touch "$SANDBOX/pwned";', "$(touch pwned)", "`touch pwned`", "\ntouch pwned\n",
    "&& touch pwned", "|| touch pwned", "| touch pwned", "' ; touch pwned ; '",
    '" ; touch pwned ; "', "\\", "\\'", "\\\"", " ", "#", "%", "%j", "$HOME", "${IFS}",
    "$(", ")", "'", '"', "\r", "\t", "\0", "\x85", "\u2028", "*", "?", "~", "-", "--x",
    "=", ":", ",", "!", "<", ">pwned", "{a,b}", "[", "]", "é", "\\\ntouch pwned",
    "if", "X=1", "--output=/tmp/x", "\n#SBATCH --wrap=touch pwned\n",
]
hostile = st.lists(st.one_of(st.sampled_from(PAYLOADS), st.text(max_size=6)),
                   min_size=1, max_size=4).map("".join)

#: Written into the header (checked, quoted for the system's parser).
HEADER = ["queue", "account", "project", "resource_spec", "walltime", "log_directory",
          "shebang", "job_extra_directives"]
#: Written into the body (always quoted; only NUL is refused).
BODY = ["python", "interface", "local_directory", "worker_command", "worker_extra_args",
        "worker_options", "env_value", "env_key", "name"]
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Variables bash itself reads: setting them is the user's own choice, not an injection,
#: and would only change how the test's bash behaves (IFS splits the script's pid list).
BASH_OWN = {"IFS", "PATH", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "CDPATH",
            "GLOBIGNORE", "POSIXLY_CORRECT", "BASH_XTRACEFD", "HOME", "SANDBOX",
            "UNIT"}  # UNIT: the script's own variable (a known limit, see the README)
ADDRESS = "tcp://SCHEDULER-ADDRESS"
EXAMPLES = {"count": 0, "refused": 0, "ran": 0}


def may_refuse(system: str, option: str, value: str) -> bool:
    """Whether the policy allows refusing ``value`` (anything else must be accepted)."""
    cls = OPTIONS[system]
    if option in ("env_key",):
        return not ENV_KEY.fullmatch(value) or "\0" in value
    if option == "name":
        return True  # core's rule: lowercase letters, digits and "-"
    if option in BODY:
        return "\0" in value or value == ""
    special = cls.directive_unquotable
    if option == "log_directory":
        special += cls.log_dir_special
    return bool(CONTROL.search(value) or set(value) & set(special) or value.strip() == ""
                or option in ("walltime", "shebang"))


def build(system: str, option: str, value: str, sandbox: Path) -> tuple[ClusterSpec, tuple[WorkerSpec, ...]]:
    """A spec with ``value`` in ``option`` (and two workers per job, with their own env)."""
    opts: dict[str, Any] = {"cores": 2, "processes": 2, "log_directory": str(sandbox / "logs"),
                            "python": str(sandbox / "bin" / "python"), "walltime": None}
    env = {"COMMON": "x y", "OWN": "0"}
    name = "hostile"
    worker_options: dict[str, Any] = {}
    if option in ("job_extra_directives", "worker_extra_args"):
        opts[option] = [value, "plain"]
    elif option == "log_directory":
        opts[option] = f"{sandbox}/logs/{value}"
    elif option == "python":
        opts[option] = f"{sandbox}/{value}/python"
    elif option == "env_key":
        env[value] = "v"
    elif option == "env_value":
        env["COMMON"] = value
    elif option == "worker_options":
        worker_options = {"lifetime": value, value.replace("\0", "") or "k": True}
    elif option == "name":
        name = value
    else:
        opts[option] = value
    options = OPTIONS[system](**opts)
    workers = (WorkerSpec(env=env, options=worker_options, suffix="-0"),
               WorkerSpec(env={**env, "OWN": "1"}, options=worker_options, suffix="-1"))
    return ClusterSpec(backend=system, name=name, backend_options=options, worker=workers[0]), workers


def stub(sandbox: Path, python: str) -> None:
    """``python``: records its argv (NUL-separated, one file per call), with builtins only."""
    calls = sandbox / "calls"
    calls.mkdir(exist_ok=True)
    path = Path(python)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\nprintf '%s\\0' \"$0\" \"$@\" > " + f"'{calls}'/$$\n")
    path.chmod(0o755)


def slurm_argument(line: str) -> str:
    """How sbatch reads the option of one ``#SBATCH`` line (its ``_get_argument``):
    quotes and backslash escapes are removed, an unquoted ``#`` ends it."""
    out: list[str] = []
    quote, escape = "", False
    for c in line[len("#SBATCH"):].lstrip():
        if not quote and c.isspace():
            break
        if escape:
            escape = False
        elif c == "\\":
            escape = True
            continue
        elif quote:
            if c == quote:
                quote = ""
                continue
        elif c in "\"'":
            quote = c
            continue
        elif c == "#":
            break
        out.append(c)
    assert not quote, f"unmatched quote in {line!r}"
    return "".join(out)


def check_header(system: str, option: str, value: str, spec: ClusterSpec, script: str) -> None:
    body = script.index("\n# dask-deploy: cluster")
    header = [line for line in script[:body].split("\n") if line not in SYSTEMS[system].prologue()]
    assert all(line.startswith("#") for line in header), header  # comments to bash
    if system == "slurm" and option in ("queue", "account", "log_directory"):
        flag = {"queue": "--partition", "account": "--account", "log_directory": "--output"}[option]
        line = next(line for line in header if line.startswith(f"#SBATCH {flag}="))
        if option == "log_directory":  # %% is sbatch's escape for % in file names
            value = JobqueueBackend(spec).log_dir.replace("%", "%%") + "/%j.out"
        assert slurm_argument(line) == f"{flag}={value}", (line, value)
    elif option in ("queue", "account", "project", "resource_spec") and system != "htcondor":
        assert any(value in line for line in header), (value, header)


def run(system: str, script: str, sandbox: Path) -> subprocess.CompletedProcess[str]:
    path = sandbox / "job.sh"
    path.write_text(script)
    # the first variable the index expression reads (Moab's falls back to Torque's)
    index = re.match(r"\$\{?(\w+)", SYSTEMS[system].index_var).group(1)  # type: ignore[union-attr]
    env = {"PATH": os.environ["PATH"], "SANDBOX": str(sandbox), "HOME": str(sandbox)}
    args = ["bash", str(path)]
    if index.isdigit():
        args.append("0")  # HTCondor passes $(Process) as the first argument
    else:
        env[index] = str(SYSTEMS[system].first_index)
    return subprocess.run(args, cwd=sandbox, env=env, capture_output=True, text=True, timeout=30,
                          check=False)


def calls(sandbox: Path) -> list[list[str]]:
    return sorted(f.read_bytes().decode().split("\0")[:-1] for f in (sandbox / "calls").iterdir())


@pytest.mark.parametrize("system", sorted(SYSTEMS))
@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option=st.sampled_from(HEADER + BODY), value=hostile)
def test_no_option_becomes_shell(system: str, option: str, value: str) -> None:
    if option in ("project", "resource_spec") and option not in field_names(OPTIONS[system]):
        option = "queue"  # this system has no such option
    if option == "env_key" and value in BASH_OWN:
        value = "X" + value
    if option == "python":  # a directory name: no "/" ("." and ".." would leave the sandbox)
        value = value.replace("/", "_")
        value = "d" + value if value in ("", ".", "..") else value
    EXAMPLES["count"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        try:
            spec, workers = build(system, option, value, sandbox)
            backend = JobqueueBackend(spec)
            units = [Unit(f"{spec.name}-0", workers)]
            req, script = backend._worker_script(ADDRESS, units)
            condor = SYSTEMS[system]
            if isinstance(condor, HTCondor):  # each line a command of its own
                for line in condor.submit_description(req, str(sandbox / "job.sh")).splitlines():
                    assert re.match(r"^(\+?\w+ = |queue \d+$)", line) or \
                        line in spec.backend_options.job_extra_directives, line
        except SpecError as e:
            EXAMPLES["refused"] += 1
            assert may_refuse(system, option, value), f"{option}={value!r} refused: {e}"
            named: dict[str, tuple[str, ...]] = {
                "env_key": ("env[",), "env_value": ("env[",),
                "worker_options": ("lifetime", value.replace("\0", "") or "k")}
            assert e.option.startswith(named.get(option, (option,))), (option, e.option)
            assert "\n" not in str(e)  # one line
            return
        EXAMPLES["ran"] += 1
        check_header(system, option, value, spec, script)
        stub(sandbox, backend.python)
        proc = run(system, script, sandbox)
        assert not list(sandbox.rglob("pwned*")), (option, value, script)
        assert proc.returncode == 0, (proc.stdout, proc.stderr, script)
        expected = sorted([f"{spec.name}-0{w.suffix}" if a == NAME else a
                           for a in backend.worker_argv(ADDRESS, w)] for w in workers)
        assert calls(sandbox) == expected, script
        if option in ("worker_extra_args",):
            assert all(c[-2:] == [value, "plain"] for c in expected)


def test_examples_were_run() -> None:
    """Runs after the property test (file order): both outcomes were exercised."""
    if EXAMPLES["count"]:
        print(f"hostile examples: {EXAMPLES}")
        assert EXAMPLES["refused"] and EXAMPLES["ran"]


# --------------------------------------------------------------------------------------
# Named cases: each class of hostile input and its answer
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("queue", "regular\ntouch /tmp/pwned"), ("account", "a\rb"), ("log_directory", "/x\n/y"),
    ("job_extra_directives", ["--x\ntouch pwned"]), ("shebang", "#!/bin/bash\ntouch pwned"),
    ("shebang", "touch pwned"), ("walltime", "01:00:00\n"), ("python", "/x\0y"),
    ("job_script_prologue", ["module load x\0"]), ("worker_extra_args", ["a\0"]),
])
def test_refused_with_the_option_named(option: str, value: object) -> None:
    with pytest.raises(SpecError) as e:
        OPTIONS["slurm"](**{option: value})  # type: ignore[arg-type]
    assert e.value.option == option and "\n" not in str(e.value)


def test_env_keys_must_be_plain_names() -> None:
    with pytest.raises(SpecError, match=r"env\['X=1; touch /tmp/pwned; Y'\]"):
        WorkerSpec(env={"X=1; touch /tmp/pwned; Y": "v"})
    with pytest.raises(SpecError, match=r"env\['A'\]"):
        WorkerSpec(env={"A": "a\0b"})
    assert WorkerSpec(env={"_A1": "$(touch x)\n`y`"}).env["_A1"] == "$(touch x)\n`y`"


@pytest.mark.parametrize("system", ["pbs", "sge", "lsf", "moab", "oar"])
def test_systems_without_escapes_refuse_what_they_cannot_quote(system: str) -> None:
    with pytest.raises(SpecError, match="queue"):
        OPTIONS[system](queue='a"b')
    special = {"pbs": "/a:b", "sge": "/a/$USER", "lsf": "/a/%J", "moab": "/a:b",
               "oar": "/a/%jobid%"}[system]
    with pytest.raises(SpecError, match="log_directory"):
        OPTIONS[system](log_directory=special)


@pytest.mark.parametrize("value", ["memcore>=1", "mem core", "memcore;touch x", "m\nx", "", "1a"])
def test_oar_memory_property_must_be_a_name(value: str) -> None:
    with pytest.raises(SpecError) as e:
        OAROptions(memory_per_core_property_name=value)
    assert e.value.option == "memory_per_core_property_name" and "\n" not in str(e.value)


@given(value=hostile)
@settings(max_examples=50, deadline=None)
def test_oar_memory_property_is_refused_or_a_plain_name(value: str) -> None:
    """The property name lands inside a ``-p`` SQL clause: only a plain name gets there."""
    try:
        options = OAROptions(memory_per_core_property_name=value, memory="1GiB", cores=1)
    except SpecError as e:
        assert e.option == "memory_per_core_property_name"
        return
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value)
    spec = ClusterSpec(backend="oar", name="hostile", backend_options=options)
    assert f'#OAR -p "{value}>=1024"' in JobqueueBackend(spec).job_script().splitlines()


def script_lines(system: str, **options: Any) -> list[str]:
    spec = ClusterSpec(backend=system, name="hostile", backend_options=OPTIONS[system](**options))
    return JobqueueBackend(spec).job_script().splitlines()


def test_directive_values_are_quoted(tmp_path: Path) -> None:
    logs = tmp_path / "my logs; $(x)"
    assert f'#SBATCH --output="{logs}/hostile/%j.out"' in script_lines("slurm", log_directory=str(logs))
    assert f'#PBS -o "{logs}/hostile/"' in script_lines("pbs", log_directory=str(logs))
    assert "#BSUB -q \"a b's\"" in script_lines("lsf", queue="a b's")
    assert f'#PBS -o "{logs}/hostile/"' in script_lines("moab", log_directory=str(logs))
    assert f'#OAR -O "{logs}/hostile/%jobid%.out"' in script_lines("oar", log_directory=str(logs))
    assert "#OAR -q \"a b's\"" in script_lines("oar", queue="a b's")
    spec = ClusterSpec(backend="slurm", name="hostile",
                       backend_options=OPTIONS["slurm"](account='a "b" \\c', log_directory="/l/50%"))
    lines = JobqueueBackend(spec).job_script().splitlines()
    assert '#SBATCH --account="a \\"b\\" \\\\c"' in lines
    assert slurm_argument('#SBATCH --account="a \\"b\\" \\\\c"') == '--account=a "b" \\c'
    assert "#SBATCH --output=/l/50%%/hostile/%j.out" in lines


def test_prologue_is_shell_and_written_as_given(tmp_path: Path) -> None:
    """job_script_prologue is shell by definition (as in dask-jobqueue): lines as given."""
    spec = ClusterSpec(backend="slurm", name="hostile", backend_options=OPTIONS["slurm"](
        job_script_prologue=["module load 'py 3'", "export X=$(hostname)"]))
    assert "\nmodule load 'py 3'\nexport X=$(hostname)\n" in JobqueueBackend(spec).job_script()


def test_program_word_is_never_a_keyword_or_assignment(tmp_path: Path) -> None:
    spec = ClusterSpec(backend="slurm", name="hostile",
                       backend_options=OPTIONS["slurm"](python="X=1", walltime=None))
    backend = JobqueueBackend(spec)
    _, script = backend._worker_script(ADDRESS, [Unit("hostile-0", (WorkerSpec(env={"A": "1"}),))])
    assert "\n$SETSID 'X=1' -m distributed.cli.dask_worker " in script


# --------------------------------------------------------------------------------------
# Stale keys: every start writes the cluster's own key material
# --------------------------------------------------------------------------------------


def tls_spec(tmp_path: Path) -> ClusterSpec:
    return ClusterSpec(backend="slurm", name="again", tls=TLS.temporary(),
                       backend_options=OPTIONS["slurm"](log_directory=str(tmp_path)))


def test_a_name_reused_gets_fresh_keys(tmp_path: Path) -> None:
    first = JobqueueBackend(tls_spec(tmp_path))
    first._ensure_dirs()
    key = Path(first.tls_dir, "key.pem")
    old = key.read_text()
    os.chmod(key, 0o644)  # as if left by an older version, or tampered with
    second = JobqueueBackend(tls_spec(tmp_path))  # same name, a new cluster
    assert second.tls_dir == first.tls_dir
    second._ensure_dirs()
    assert key.read_text() == second.spec.tls.key != old  # type: ignore[union-attr]
    assert Path(second.tls_dir, "cert.pem").read_text() == second.spec.tls.cert  # type: ignore[union-attr]
    assert stat.S_IMODE(os.stat(second.tls_dir).st_mode) == 0o700
    for name in ("cert.pem", "key.pem"):
        assert stat.S_IMODE(os.stat(Path(second.tls_dir, name)).st_mode) == 0o600
    assert sorted(os.listdir(second.tls_dir)) == ["cert.pem", "key.pem"]  # no temporary left


def test_key_files_are_replaced_not_written_through(tmp_path: Path) -> None:
    """A link planted at key.pem is replaced; the file it pointed to is left alone."""
    backend = JobqueueBackend(tls_spec(tmp_path))
    os.makedirs(backend.tls_dir, mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("mine")
    os.symlink(victim, Path(backend.tls_dir, "key.pem"))
    backend._ensure_dirs()
    assert victim.read_text() == "mine"
    assert not Path(backend.tls_dir, "key.pem").is_symlink()


def test_a_linked_tls_directory_is_refused(tmp_path: Path) -> None:
    backend = JobqueueBackend(tls_spec(tmp_path))
    os.makedirs(backend.log_dir)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", backend.tls_dir)
    with pytest.raises(Exception, match="not a directory of this user"):
        backend._ensure_dirs()
    assert not list((tmp_path / "elsewhere").iterdir())


# --------------------------------------------------------------------------------------
# Real SLURM: quoted values reach sbatch and the job as they were given
# --------------------------------------------------------------------------------------


def test_real_slurm_takes_quoted_values(slurm: object, log_dir: str) -> None:
    """A log_directory with a space, quotes and ``$()``, and an env value with shell in it:
    sbatch writes the output file there, and the worker sees the value unchanged."""
    from dask_deploy import Cluster
    from distributed import Client

    logs = os.path.join(log_dir, "my logs; $(touch pwned) 'q' 50%")
    value = "a b; $(touch pwned) `touch pwned` \"q\" 'r'\nline"
    with Cluster.from_name("slurm", name="quoted", cores=1, memory="512MiB", n_workers=1,
                           log_directory=logs, env={"HOSTILE": value}, poll_interval=0.5,
                           start_timeout=120) as c:
        c.wait_for_workers(1, timeout=120)
        with Client(c) as client:
            assert client.submit(_worker_env, "HOSTILE").result(timeout=120) == value
        outputs = list(Path(logs, "quoted").glob("*.out"))
        assert outputs, os.listdir(Path(logs, "quoted"))
    assert not list(Path(log_dir).rglob("pwned")) and not Path("pwned").exists()


def _worker_env(name: str) -> str | None:
    import os  # the worker's environment, not a copy of this one

    return os.environ.get(name)
