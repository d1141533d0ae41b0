"""The ``dask-deploy`` command line."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from ._errors import DeployError


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as YAML scalars/lists (``4``, ``true``, ``[a, b]``)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--option")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dask-deploy-core")
def main() -> None:
    """Start, inspect and clean up Dask clusters on any backend.

    Backends are plugins: `dask-deploy backends` lists those installed.
    """


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
@click.option("--backend", default="local", show_default=True, help="backend to run the demo on")
@click.option("--workers", "n_workers", default=4, show_default=True, help="number of workers")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="backend option (repeatable), e.g. -o threads_per_worker=2")
def demo(backend: str, n_workers: int, options: tuple[str, ...]) -> None:
    """Start a cluster, run a small computation, print timings and shut down."""
    from distributed import Client

    from ._cluster import from_name

    t0 = time.perf_counter()
    click.echo(f"Starting {n_workers} workers on {backend!r} ...")
    try:
        cluster = from_name(backend, n_workers=n_workers, **_parse_options(options))
    except DeployError as e:
        raise click.ClickException(str(e)) from e
    with cluster, Client(cluster) as client:
        cluster.wait_for_workers(n_workers, timeout=300)
        ready = time.perf_counter() - t0
        click.echo(f"Cluster {cluster.name}: {n_workers} workers ready in {ready:.2f} s")
        click.echo(f"Dashboard: {cluster.dashboard_link}")
        t1 = time.perf_counter()
        total = client.submit(sum, client.map(lambda x: x * x, range(1000))).result()
        click.echo(f"sum of squares 0..999 = {total} in {time.perf_counter() - t1:.2f} s "
                   f"on {len(client.scheduler_info()['workers'])} workers")
        t2 = time.perf_counter()
    click.echo(f"Closed in {time.perf_counter() - t2:.2f} s")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
