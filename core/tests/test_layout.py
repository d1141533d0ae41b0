"""The core's module layout: no import cycles, leaves that stay leaves, no plugin imported.

The graph is read from the source with ``ast``, function-level imports included (a lazy
import is still a dependency; only ``if TYPE_CHECKING:`` blocks are left out), so a cycle
that Python would tolerate at run time (one side importing inside a function) still fails
here. Then every module is imported alone, in a fresh interpreter, in dependency order.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import dask_deploy
import pytest

PACKAGE = "dask_deploy"
SRC = Path(dask_deploy.__file__).parent
MODULES = {p.stem: p for p in sorted(SRC.glob("*.py"))}  # "__init__" is the package itself


def _module(name: str) -> str:
    return PACKAGE if name == "__init__" else f"{PACKAGE}.{name}"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _targets(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The modules of this package (stems, ``__init__`` for the package) ``node`` imports,
    and the top-level names of other packages (prefixed with ``!``)."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == PACKAGE:
                found.add(parts[1] if len(parts) > 1 else "__init__")
            else:
                found.add("!" + parts[0])
        return found
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != PACKAGE:
            return {"!" + parts[0]}
        rest = parts[1:]
    elif node.level == 1:
        rest = (node.module or "").split(".") if node.module else []
    else:  # pragma: no cover - the package is flat
        raise AssertionError(f"import beyond the package at line {node.lineno}")
    if rest:
        return {rest[0]}
    # ``from . import x``: a module when there is one, else a name of the package
    for alias in node.names:
        found.add(alias.name if alias.name in MODULES else "__init__")
    return found


def graph() -> dict[str, set[str]]:
    """Module stem -> the stems it imports (and ``!other`` packages)."""
    deps: dict[str, set[str]] = {}
    for stem, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps[stem] = {t for node in _imports(tree) for t in _targets(node)} - {stem}
    return deps


def internal(deps: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {d for d in ds if not d.startswith("!")} for m, ds in deps.items()}


def dependency_order() -> list[str]:
    return list(TopologicalSorter(internal(graph())).static_order())


def test_the_module_graph_is_acyclic() -> None:
    deps = internal(graph())
    assert set(deps) >= {"_state", "_statedir", "_discovery", "_options", "_cluster", "_plugins",
                         "_local", "_cli"}
    try:
        order = list(TopologicalSorter(deps).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle among the core's modules: {' -> '.join(e.args[1])}")
    assert set(order) == set(deps)


def test_layers() -> None:
    deps = internal(graph())
    # The state directory is a leaf: it needs only private-directory handling.
    assert deps["_statedir"] <= {"_private", "_errors"}
    # The records know nothing of clusters, discovery or any backend.
    assert not deps["_state"] & {"_cluster", "_discovery", "_local", "_cli", "_gc"}
    # Plugins are found through entry points, the core's own local backend included.
    assert "_local" not in deps["_plugins"]
    assert not deps["_options"] & {"_cluster", "_state", "_local"}
    # Nothing below the cluster imports it (discovery and the CLI are above it).
    above = {"_cluster", "_discovery", "_cli", "__init__"}
    for module, imported in deps.items():
        if module not in above:
            assert "_cluster" not in imported, f"{module} imports _cluster"


def test_the_core_imports_no_plugin_package() -> None:
    for module, imported in graph().items():
        others = {d[1:] for d in imported if d.startswith("!")}
        plugins = {d for d in others if d.startswith("dask_deploy_")}
        assert not plugins, f"{module} imports {sorted(plugins)}: use an entry point"


@pytest.mark.parametrize("stem", dependency_order())
def test_each_module_imports_alone(stem: str) -> None:
    module = _module(stem)
    code = f"import importlib; importlib.import_module({module!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"import {module} alone failed:\n{out.stderr[-3000:]}"


def test_the_local_backend_loads_through_its_entry_point_alone() -> None:
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "(ep,) = [e for e in entry_points(group='dask_deploy') if e.name == 'local']\n"
        "assert ep.value == 'dask_deploy._local', ep.value\n"
        "from dask_deploy._plugins import backend_info\n"
        "assert backend_info('local').name == 'local'\n"
        "heavy = {'dask_deploy._cluster', 'dask_deploy._state', 'distributed.deploy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
