"""The ``dask-deploy`` command line (also ``dask deploy`` through distributed's ``dask_cli``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import click

from ._errors import DeployError, SpecError


def _yaml_problem(e: Exception) -> str:
    """A YAML error as one line: what is wrong and where."""
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or type(e).__name__}{where}"


def _option_name(key: object, where: str) -> str:
    """``threads-per-worker`` and ``threads_per_worker`` are the same option, as in dask.config."""
    if not isinstance(key, str) or not key.strip():
        raise click.BadParameter(f"option name {key!r}: expected a name such as n_workers",
                                 param_hint=where)
    return key.strip().replace("-", "_")


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as YAML (``4``, ``true``, ``[a, b]``, ``{x: 1}``)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--option")
        name = _option_name(key, "--option")
        if name == "dashboard_token":
            raise click.BadParameter(_TOKEN_NOT_IN_ARGV, param_hint="--option")
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise click.BadParameter(f"{name}: the value {value!r} is not valid YAML: "
                                     f"{_yaml_problem(e)}", param_hint="--option") from None
    return out


#: The dashboard token comes from here or --dashboard-token-file, never from argv (``ps``).
TOKEN_ENV = "DASK_DEPLOY_DASHBOARD_TOKEN"
_TOKEN_HOW = f"set {TOKEN_ENV} or pass --dashboard-token-file PATH (a 0600 file of yours)"
_TOKEN_NOT_IN_ARGV = f"dashboard_token: not on the command line (others see it in `ps`); {_TOKEN_HOW}"


def _refuse_token_value(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        raise click.BadParameter(_TOKEN_NOT_IN_ARGV, ctx=ctx, param=param)


def _read_token_file(path: str) -> str:
    """The token in ``path``: a regular file of this user, not readable by anyone else."""
    import os
    import stat

    hint = "--dashboard-token-file"
    try:
        # O_NONBLOCK: a FIFO planted there must not hang us; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise click.BadParameter(f"{path}: cannot open: {e.strerror}", param_hint=hint) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise click.BadParameter(f"{path}: not a regular file", param_hint=hint)
        if st.st_uid != os.getuid():
            raise click.BadParameter(f"{path}: owned by uid {st.st_uid}, not by you",
                                     param_hint=hint)
        if st.st_mode & 0o077:
            raise click.BadParameter(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others "
                                     f"read it; chmod 600 {path}", param_hint=hint)
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path}: not UTF-8 text", param_hint=hint) from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise click.BadParameter(f"{path}: expected one token on one line", param_hint=hint)
    return token


def _dashboard_token(token_file: str | None) -> str | None:
    """The dashboard token from --dashboard-token-file, else from $DASK_DEPLOY_DASHBOARD_TOKEN."""
    import os

    if token_file is not None:
        return _read_token_file(token_file)
    return os.environ.get(TOKEN_ENV, "").strip() or None


def token_flags(f: Any) -> Any:
    """``--dashboard-token-file PATH``; ``--dashboard-token VALUE`` is refused with the way."""
    f = click.option("--dashboard-token", "refused_token", hidden=True, expose_value=False,
                     callback=_refuse_token_value)(f)
    return click.option(
        "--dashboard-token-file", "token_file", metavar="PATH",
        help=f"the dashboard proxy's token, in a 0600 file of yours (or set {TOKEN_ENV}); "
             "needed when the proxy binds beyond loopback")(f)


def _echo_dashboard(cluster: Any, prefix: str = "Dashboard: ") -> None:
    """The link, never the token; how to use the token when the proxy asks for one."""
    click.echo(f"{prefix}{cluster.dashboard_link}")
    if getattr(cluster, "dashboard_token", None):
        click.echo("  (the proxy asks for the token: open the link once with ?token=<your token> "
                   "appended; the browser then keeps a cookie)")


_SPEC_KEYS = ("backend", "options", "workers", "adapt", "detach")
_ADAPT_KEYS = ("minimum", "maximum", "pool", "wait_count", "interval", "target_duration",
               "cooldown", "min_lifetime",  # seconds or "10s" (cooldown also "auto")
               # dask-jobqueue's and distributed's bounds (SpecCluster.adapt converts them)
               "minimum_jobs", "maximum_jobs", "minimum_memory", "maximum_memory",
               "minimum_cores", "maximum_cores")


def _count(value: object, what: str, hint: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise click.BadParameter(f"{what}={value!r}: expected a whole number >= {minimum}",
                                 param_hint=hint)
    return value


def _duration(value: object, what: str, hint: str) -> float:
    """Seconds from a number or a dask time string ("10s", "2 minutes"), never negative."""
    from dask.utils import parse_timedelta

    try:
        seconds = parse_timedelta(value, "seconds")  # type: ignore[call-overload]
    except Exception:
        seconds = None
    if isinstance(value, bool) or seconds is None or seconds < 0:
        raise click.BadParameter(f"{what}={value!r}: expected seconds >= 0 or a time such as '10s'",
                                 param_hint=hint)
    return float(seconds)


def _check_adapt(minimum: object, maximum: object, hint: str) -> None:
    low = _count(minimum, "minimum", hint)
    high = _count(maximum, "maximum", hint)
    if low > high:
        raise click.BadParameter(f"minimum={low} is above maximum={high}", param_hint=hint)


def _load_spec_file(path: str) -> dict[str, Any]:
    """The ``up -f`` file, checked before anything starts: every mistake is one line."""
    import yaml

    hint = "--file"
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise click.BadParameter(f"{path} is not valid YAML: {_yaml_problem(e)}",
                                 param_hint=hint) from None
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint=hint) from None
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise click.BadParameter(f"{path} holds a {type(spec).__name__}, expected a mapping with "
                                 f"keys {', '.join(_SPEC_KEYS)}", param_hint=hint)
    unknown = sorted(map(str, set(spec) - set(_SPEC_KEYS)))
    if unknown:
        raise click.BadParameter(f"unknown keys {unknown}; accepted: {', '.join(_SPEC_KEYS)}",
                                 param_hint=hint)
    if "backend" in spec and not (isinstance(spec["backend"], str) and spec["backend"]):
        raise click.BadParameter(f"backend={spec['backend']!r}: expected a backend name such as "
                                 "local (`dask-deploy backends` lists them)", param_hint=hint)
    options = spec.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise click.BadParameter(f"options={options!r}: expected a mapping of option names to "
                                 "values, e.g. {threads_per_worker: 2}", param_hint=hint)
    spec["options"] = {_option_name(k, f"{hint} options"): v for k, v in options.items()}
    if "dashboard_token" in spec["options"]:  # a spec file is shared and committed
        raise click.BadParameter(f"dashboard_token: not in a spec file; {_TOKEN_HOW}",
                                 param_hint=f"{hint} options")
    if "workers" in spec:
        _count(spec["workers"], "workers", hint)
    if "detach" in spec and not isinstance(spec["detach"], bool):
        raise click.BadParameter(f"detach={spec['detach']!r}: expected true or false", param_hint=hint)
    adapt = spec.get("adapt")
    if adapt is True:
        adapt = {}
    if adapt is not None and adapt is not False:
        if not isinstance(adapt, dict):
            raise click.BadParameter(f"adapt={adapt!r}: expected a mapping such as "
                                     "{minimum: 0, maximum: 10}", param_hint=hint)
        adapt = {_option_name(k, f"{hint} adapt"): v for k, v in adapt.items()}
        bad = sorted(map(str, set(adapt) - set(_ADAPT_KEYS)))
        if bad:
            raise click.BadParameter(f"adapt has unknown keys {bad}; accepted: "
                                     f"{', '.join(_ADAPT_KEYS)}", param_hint=hint)
        low = _count(adapt.get("minimum", 0), "adapt.minimum", hint)
        _check_adapt(low, adapt.get("maximum", max(low, 1)), f"{hint} adapt")
        if "wait_count" in adapt:
            _count(adapt["wait_count"], "adapt.wait_count", hint, minimum=1)
        for key in ("cooldown", "min_lifetime", "interval", "target_duration"):
            if key in adapt and not (key == "cooldown" and adapt[key] == "auto"):
                _duration(adapt[key], f"adapt.{key}", hint)
        spec["adapt"] = adapt
    return spec


option_flag = click.option(
    "--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
    help="cluster or backend option (repeatable), e.g. -o threads_per_worker=2")


#: Entry points that add a command to ``dask-deploy``: the entry point's name is the
#: command's; its object is a ``click.Command``, or a function that takes the arguments
#: after the command's name (a list of strings, ``--help`` included) and returns an exit
#: code. Loaded only when the command runs or ``--help`` lists it.
CLI_GROUP = "dask_deploy.cli"

# Commands that an optional package adds: what the user installs when it is missing.
_PLUGIN_COMMANDS = {
    "conformance": ("Run the conformance suite against a backend.",
                    'the conformance suite is not installed: pip install "dask-deploy[conformance]"'),
}


def _cli_entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=CLI_GROUP)}


class _PassThrough(click.Command):
    """A plugin's command that parses its own arguments: every one goes to ``run``."""

    def __init__(self, name: str, run: Any, help: str | None) -> None:
        super().__init__(name, help=help, add_help_option=False,
                         context_settings={"ignore_unknown_options": True})
        self._run = run

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.args = list(args)
        return ctx.args

    def invoke(self, ctx: click.Context) -> Any:
        sys.exit(self._run(list(ctx.args)))


def _failing_command(name: str, help: str, message: str) -> click.Command:
    def fail() -> None:
        raise click.ClickException(message)

    return _PassThrough(name, lambda argv: fail(), help)


def _plugin_command(name: str) -> click.Command | None:
    """The command ``name`` that a ``dask_deploy.cli`` entry point adds (None: there is none)."""
    ep = _cli_entry_points().get(name)
    if ep is None:
        if name in _PLUGIN_COMMANDS:
            return _failing_command(name, *_PLUGIN_COMMANDS[name])
        return None
    try:
        obj = ep.load()
    except Exception as e:
        return _failing_command(name, f"(failed to import: {ep.value})",
                                f"the command {name!r} ({ep.value}) failed to import: {e}")
    if isinstance(obj, click.Command):
        obj.name = name
        return obj
    return _PassThrough(name, obj, getattr(obj, "__doc__", None))


class _Group(click.Group):
    """Errors of ours print as one line (the message says what to do), unless --debug.

    Commands of other packages come from the ``dask_deploy.cli`` entry point group
    (:data:`CLI_GROUP`), loaded by name: the core imports none of those packages.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_PLUGIN_COMMANDS, *_cli_entry_points()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or _plugin_command(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DeployError, TimeoutError) as e:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a bug of ours: still one line, the traceback on --debug
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(f"unexpected {type(e).__name__}: {e} (run with --debug for "
                                       "the traceback, and please report it)") from None


@click.group(name="deploy", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="show full tracebacks")
@click.version_option(package_name="dask-deploy-core")
def main(debug: bool) -> None:
    """Start, inspect and clean up Dask clusters on any backend.

    Backends are plugins: `dask-deploy backends` lists those installed.
    """


def _wait(cluster: Any, n: int, timeout: float) -> None:
    """Wait for n workers, showing progress on stderr: a bar on a terminal, else one line
    per change (the count or a reason)."""
    from ._progress import WaitProgress, waiting_line

    deadline = time.monotonic() + timeout
    last = ""
    with WaitProgress(n) as bar:
        while True:
            have = len(cluster.scheduler_info["workers"])
            report = cluster.status()
            if bar.active:
                bar.update(report, have)
            elif (line := waiting_line(report, have, n)) != last:
                click.echo(line, err=True)
                last = line
            if have >= n:
                break
            if cluster.error is not None:
                raise cluster.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {have} of {n} workers connected within {timeout:g}s; "
                                   f"`dask-deploy logs {cluster.name}` shows why")
            time.sleep(0.2)


def _attach(name: str) -> Any:
    from ._cluster import attach

    return attach(name, quiet=True)


def _block_until_interrupted(cluster: Any, message: str) -> None:
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C may come as soon as the line shows
        click.echo(message)
        while cluster.status.name not in ("closing", "closed"):
            time.sleep(0.5)


@main.command()
def backends() -> None:
    """List the installed backends and what they do."""
    from ._plugins import installed_backends

    infos = installed_backends()
    width = max(len(n) for n in infos)
    for name, info in infos.items():
        caps = ", ".join(sorted(info.capabilities))
        click.echo(f"{name:<{width}}  {info.summary}" + (f"  [{caps}]" if caps else ""))


@main.command()
@click.argument("backend", required=False)
@option_flag
@click.option("--workers", "-n", "n_workers", type=int, help="number of workers to start")
@click.option("--detach", is_flag=True,
              help="leave the cluster running after this command (scheduler placed remotely)")
@click.option("--file", "-f", "spec_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML spec: {backend, options: {...}, workers: N, adapt: {minimum, maximum}, detach}")
@click.option("--timeout", default=600.0, show_default=True, help="seconds to wait for the workers")
@token_flags
def up(backend: str | None, options: tuple[str, ...], n_workers: int | None, detach: bool,
       spec_file: str | None, timeout: float, token_file: str | None) -> None:
    """Start a cluster on BACKEND.

    Without --detach it runs until Ctrl-C; with --detach it keeps running and this command
    prints its name for `list`, `scale`, `logs`, `dashboard` and `down`.
    """
    from ._cluster import from_name

    spec = _load_spec_file(spec_file) if spec_file else {}
    backend = backend or spec.get("backend")
    if not backend:
        raise click.UsageError("name a BACKEND or give --file with a 'backend' key")
    if n_workers is not None:
        _count(n_workers, "--workers", "--workers")
    opts = {**spec.get("options", {}), **_parse_options(options)}
    token = _dashboard_token(token_file)
    if token is not None:
        opts["dashboard_token"] = token
    n = n_workers if n_workers is not None else spec.get("workers", opts.pop("n_workers", 1))
    detach = detach or bool(spec.get("detach"))
    if detach:
        opts.setdefault("scheduler", "remote")
        opts["shutdown_on_close"] = False
    cluster = from_name(backend, n_workers=n, quiet=True, **opts)
    try:
        click.echo(f"Cluster {cluster.name} on {backend}: scheduler {cluster.scheduler_address}")
        if spec.get("adapt"):
            cluster.adapt(**spec["adapt"])
        if n:
            _wait(cluster, n, timeout)
        _echo_dashboard(cluster)
        if detach and cluster.dashboard_link:
            # This command's proxy ends with it: name the one that lasts.
            click.echo(f"  (this link ends with this command; `dask-deploy dashboard {cluster.name}` "
                       "serves a lasting one)")
        if detach:
            click.echo(f"Detached. Attach with dask_deploy.attach({cluster.name!r}); "
                       f"stop with `dask-deploy down {cluster.name}`.")
        else:
            _block_until_interrupted(cluster, "Running; press Ctrl-C to stop.")
    finally:
        cluster.close()


@main.command("list")
def list_() -> None:
    """List recorded clusters of this user (detached ones and those of running programs)."""
    from ._state import list_clusters

    records = list_clusters()
    if not records:
        click.echo("no clusters")
        return
    click.echo(f"{'NAME':<24} {'BACKEND':<9} {'UNITS':>5} {'STATE':<9} SCHEDULER")
    for r in records:
        state = ("attached" if r.owner_alive() else "detached" if r.detached else "orphaned")
        if state != "attached" and not r.scheduler_answers(1.0):
            state = "dead"
        click.echo(f"{r.name:<24} {r.backend:<9} {len(r.handles):>5} {state:<9} {r.scheduler_address}")


@main.command()
@click.argument("name")
@click.argument("n", type=int)
@click.option("--timeout", default=600.0, show_default=True, help="seconds to wait for the workers")
@click.option("--pool", default=None, help="the pool to scale (default: the first pool)")
def scale(name: str, n: int, timeout: float, pool: str | None) -> None:
    """Scale detached cluster NAME (one POOL of it) to N workers and wait for them."""
    _count(n, "N", "N")
    cluster = _attach(name)
    try:
        try:
            cluster.scale(n, pool=pool)
        except SpecError as e:
            raise click.BadParameter(str(e), param_hint="--pool/N") from None
        if n:
            _wait(cluster, len(cluster.plan), timeout)
        else:
            while cluster.handles:
                time.sleep(0.2)
        click.echo(f"{name}: {len(cluster.scheduler_info['workers'])} workers")
    finally:
        cluster.close()


@main.command()
@click.argument("name")
@click.option("--minimum", default=0, show_default=True, help="fewest workers")
@click.option("--maximum", default=10, show_default=True, help="most workers")
@click.option("--interval", default="1s", show_default=True, help="how often to decide")
@click.option("--pool", default=None, help="the pool to adapt (default: the first pool)")
@click.option("--cooldown", default="auto", show_default=True,
              help="idle time before a worker is retired ('auto': learned from how long idle "
                   "spells lasted, at most the units' boot time)")
@click.option("--min-lifetime", default=None, help="no unit is retired younger (default: the cooldown)")
def adapt(name: str, minimum: int, maximum: int, interval: str, pool: str | None, cooldown: str,
          min_lifetime: str | None) -> None:
    """Scale detached cluster NAME with the load, while this command runs (Ctrl-C stops)."""
    _check_adapt(minimum, maximum, "--minimum/--maximum")
    if cooldown != "auto":
        _duration(cooldown, "cooldown", "--cooldown")
    if min_lifetime is not None:
        _duration(min_lifetime, "min_lifetime", "--min-lifetime")
    cluster = _attach(name)
    try:
        try:
            cluster.adapt(minimum=minimum, maximum=maximum, interval=interval, cooldown=cooldown,
                          min_lifetime=min_lifetime, pool=pool or next(iter(cluster._pools)))
        except SpecError as e:
            raise click.BadParameter(str(e), param_hint="--pool") from None
        _block_until_interrupted(cluster, f"Adapting {name} between {minimum} and {maximum} "
                                          "workers; press Ctrl-C to stop adapting.")
    finally:
        cluster.close()


@main.command()
@click.argument("name")
@click.option("--worker", "-w", help="only this worker (or unit) name")
def logs(name: str, worker: str | None) -> None:
    """Print the logs of cluster NAME: cluster, scheduler and every worker, also dead ones."""
    cluster = _attach(name)
    try:
        if worker:
            unit = next((u for u in cluster.units.values() if worker in u.worker_names), None)
            click.echo(cluster.sync(cluster.logs_of, unit.name if unit else worker))
            return
        for title, text in cluster.get_logs().items():
            click.echo(f"==> {title} <==\n{text}\n")
    finally:
        cluster.close()


@main.command()
@click.argument("name")
@click.option("--watch", "-w", is_flag=True, help="keep showing it, reprinted on each change, until Ctrl-C")
@click.option("--interval", default=2.0, show_default=True, help="seconds between polls with --watch")
def status(name: str, watch: bool, interval: float) -> None:
    """Show each unit of detached cluster NAME: workers, state, age and the backend's reason
    (e.g. SLURM's `PENDING (Priority)`)."""
    if not interval > 0:
        raise click.BadParameter(f"{interval!r}: give a positive number of seconds", param_hint="--interval")
    cluster = _attach(name)
    try:
        last = None
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                report = cluster.sync(cluster._refresh_status)
                # Compare without the ages, which change every poll.
                key = [(r.unit, r.state, r.reason) for r in report] + [report.summary()]
                if key != last:
                    click.echo(report.text())
                    last = key
                if not watch or cluster.status.name in ("closing", "closed"):
                    break
                time.sleep(interval)
    finally:
        cluster.close()


@main.command()
@click.argument("name")
@click.option("--address", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="where the proxy listens; beyond loopback it needs a token")
@token_flags
def dashboard(name: str, address: str, token_file: str | None) -> None:
    """Serve the dashboard of cluster NAME through a local proxy until Ctrl-C."""
    from ._cluster import attach
    from ._specs import check_address

    address = check_address(address, "dashboard_proxy_address") or "127.0.0.1:0"
    cluster = attach(name, quiet=True, dashboard_proxy_address=address,
                     dashboard_token=_dashboard_token(token_file))
    try:
        _echo_dashboard(cluster, f"Dashboard of {name}: ")
        _block_until_interrupted(cluster, "Press Ctrl-C to stop.")
    finally:
        cluster.close()


@main.command()
@click.argument("name")
def down(name: str) -> None:
    """Stop cluster NAME and everything it runs."""
    cluster = _attach(name)
    cluster.shutdown()
    click.echo(f"{name}: stopped")


@main.command()
@click.option("--yes", "-y", is_flag=True, help="remove what is judged dead without asking")
@click.option("--dry-run", is_flag=True,
              help="only list what would be removed (the default without --yes)")
@click.option("--backend", "-b", "backend_names", multiple=True,
              help="only this backend (repeatable); default: every installed one")
@click.option("--all-users", is_flag=True,
              help="also other users' resources, where the backend can tell whose they are")
@click.option("--grace", type=float, default=None, metavar="SECONDS",
              help="leave clusters younger than this alone (default: deploy.gc-grace, 60)")
@click.option("--cluster", "cluster_names", multiple=True, metavar="NAME",
              help="only this cluster (repeatable); default: every cluster found")
@option_flag
def gc(yes: bool, dry_run: bool, backend_names: tuple[str, ...], all_users: bool,
       grace: float | None, cluster_names: tuple[str, ...], options: tuple[str, ...]) -> None:
    """Remove what crashed or killed clients left behind; asks first.

    Each backend is asked what it runs for dask-deploy and each cluster is judged from
    the backend side: it is kept while it is younger than the grace period, while its
    client runs, or while its scheduler answers as that cluster. Only your own resources
    are considered unless --all-users. What would be removed is printed; nothing is
    removed without --yes (or a "y" on a terminal). Options (-o) reach the backends named
    with --backend.
    """
    from ._gc import collect_garbage

    opts = _parse_options(options)
    per_backend = {b: opts for b in backend_names}
    interactive = not yes and not dry_run and sys.stdin.isatty()

    act = (yes and not dry_run) or interactive

    def confirm(dead: list[Any]) -> bool:
        nonlocal act
        clusters = sorted({f"{v.backend} {v.cluster}" for v in dead})
        act = click.confirm(f"Remove {len(dead)} resources of {', '.join(clusters)}?", default=False)
        return act

    found = asyncio.run(collect_garbage(backend_names or None, per_backend, dry_run=not act,
                                        echo=click.echo, all_users=all_users, grace=grace,
                                        confirm=confirm if interactive else None,
                                        clusters=cluster_names or None))
    if not act:
        clusters = len({(v.backend, v.cluster) for v in found})
        click.echo(f"{len(found)} found in {clusters} clusters; nothing removed "
                   f"(run with --yes to remove them)")
    else:
        click.echo(f"{len(found)} removed" if found else "0 removed")


@main.command()
@click.option("--backend", default="local", show_default=True, help="backend to run the demo on")
@click.option("--workers", "n_workers", default=4, show_default=True, help="number of workers")
@option_flag
@token_flags
def demo(backend: str, n_workers: int, options: tuple[str, ...], token_file: str | None) -> None:
    """Start a cluster, run a small computation, print timings and shut down."""
    from distributed import Client

    from ._cluster import from_name

    t0 = time.perf_counter()
    click.echo(f"Starting {n_workers} workers on {backend!r} ...")
    opts = _parse_options(options)
    if (token := _dashboard_token(token_file)) is not None:
        opts["dashboard_token"] = token
    cluster = from_name(backend, n_workers=n_workers, quiet=True, **opts)
    with cluster, Client(cluster) as client:
        _wait(cluster, n_workers, 300)
        click.echo(f"Cluster {cluster.name}: {n_workers} workers ready in "
                   f"{time.perf_counter() - t0:.2f} s")
        _echo_dashboard(cluster)
        t1 = time.perf_counter()
        total = client.submit(sum, client.map(lambda x: x * x, range(1000))).result()
        click.echo(f"sum of squares 0..999 = {total} in {time.perf_counter() - t1:.2f} s "
                   f"on {len(client.scheduler_info()['workers'])} workers")
        t2 = time.perf_counter()
    click.echo(f"Closed in {time.perf_counter() - t2:.2f} s")


if __name__ == "__main__":  # pragma: no cover
    main()
