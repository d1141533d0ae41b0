"""``dask-deploy conformance NAME [--option KEY=VALUE ...]``: the suite from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._profiles import SIZES

__all__ = ["command", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dask-deploy conformance",
        description="Run the dask-deploy conformance suite against an installed backend.",
        epilog="Arguments after `--` go to pytest unchanged, e.g. `-- -k scale -x`.")
    p.add_argument("backend", metavar="NAME", help="the backend's name, e.g. local or fake")
    p.add_argument("-o", "--option", metavar="KEY=VALUE", action="append", default=[],
                   help="a backend option (repeatable); VALUE is JSON if it parses, else a string")
    p.add_argument("--profile", choices=sorted(SIZES), default=None,
                   help="hypothesis profile: ci (small), dev, thorough (default: ci if CI=true, else dev)")
    p.add_argument("--timeout", "--deploy-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long a check waits for the cluster to converge (default 60)")
    p.add_argument("-q", "--quiet", action="store_true", help="less output")
    return p


def pytest_args(argv: Sequence[str]) -> list[str]:
    """The pytest command line that :func:`main` runs for ``argv`` (for tests and tooling)."""
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ns = _parser().parse_args(argv)
    from .plugin import SUITE_ENTRY

    args = [str(SUITE_ENTRY),
            # Independent of the current directory's pytest configuration (addopts, plugins
            # options it may not have, its rootdir): an empty ini file and no cache files.
            "-c", os.devnull, "--rootdir", str(SUITE_ENTRY.parent), "-p", "no:cacheprovider",
            # main() imported this package before pytest could mark it for rewriting.
            "-W", "ignore::pytest.PytestAssertRewriteWarning",
            "-p", "dask_deploy_conformance", "--deploy-backend", ns.backend,
            "-q" if ns.quiet else "-v", "-rfEs"]
    for opt in ns.option:
        args += ["--deploy-option", opt]
    if ns.profile:
        args += ["--deploy-profile", ns.profile]
    if ns.timeout:
        args += ["--deploy-timeout", str(ns.timeout)]
    return args + extra


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite against backend ``argv[0]``; return pytest's exit code (0: it passed).

    ``argv`` is what follows ``dask-deploy conformance`` on the command line, e.g.
    ``["local", "--option", "stop_grace=1"]``; ``None`` reads ``sys.argv[1:]``.
    """
    import pytest

    args = pytest_args(sys.argv[1:] if argv is None else argv)
    return int(pytest.main(args))


def command(argv: Sequence[str]) -> int:
    """Run the conformance suite against backend NAME.

    The ``dask-deploy conformance`` command: this package registers it in the core's
    ``dask_deploy.cli`` entry point group, and every argument after the command's name
    comes here (``--help`` too); arguments after ``--`` go to pytest.
    """
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
