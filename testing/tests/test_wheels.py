"""Every published wheel ships what a user or a backend author needs, and nothing else.

The workspace's wheels are built once for this module (``uv build --all-packages``, about 10 s),
then each published one is read as a zip: no test server or installer in it (they live in the
unpublished ``testing/`` member), no import of that member or of moto, and no reference to a
file outside the wheel (direct references in its requirements, ``..`` paths, entry points that
name a module it does not contain, ``__file__`` paths that climb out of its package).
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path, PurePosixPath

import pytest

WORKSPACE = Path(__file__).resolve().parents[2]
PUBLISHED = ("dask-deploy", "dask-deploy-core", "dask-deploy-conformance", "dask-deploy-ssh",
             "dask-deploy-jobqueue", "dask-deploy-k8s", "dask-deploy-cloud", "dask-deploy-gpu",
             "dask-deploy-gateway")
UNPUBLISHED = ("dask-deploy-testing",)

#: Path pieces of test servers, installers and fakes (matched against each file's path).
FORBIDDEN_PATH = re.compile(
    r"(^|/)(testing|tests?|conftest|dask_deploy_testing)(/|\.py$)"
    r"|emulator|kubelet|apiserver|moto|sshd|harness|fake_nvml|sitecustomize|ci-setup", re.I)
#: Top-level modules a published wheel must never import.
FORBIDDEN_IMPORTS = ("dask_deploy_testing", "moto", "boto3", "dask_gateway_server")


def _dist(wheel: Path) -> str:
    return wheel.name.split("-")[0].replace("_", "-")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    uv = shutil.which("uv")
    if uv is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("uv is needed to build the wheels under CI=true")
        pytest.skip("uv is not installed")
    out = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run([uv, "build", "--all-packages", "--wheel", "-q", "-o", str(out)],
                          cwd=WORKSPACE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"uv build failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    yield {_dist(w): w for w in out.glob("*.whl")}


def test_every_distribution_is_built(wheels: dict[str, Path]) -> None:
    assert set(PUBLISHED) | set(UNPUBLISHED) == set(wheels), "a workspace member is missing from PUBLISHED"


def test_the_testing_member_cannot_be_uploaded(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["dask-deploy-testing"]) as z:
        meta = Parser().parsestr(z.read(_dist_info(z) + "/METADATA").decode())
    assert "Private :: Do Not Upload" in meta.get_all("Classifier", [])


def _dist_info(z: zipfile.ZipFile) -> str:
    (info,) = {n.split("/")[0] for n in z.namelist() if n.split("/")[0].endswith(".dist-info")}
    return info


def _imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _climbs_out(tree: ast.AST, depth: int) -> list[str]:
    """``Path(__file__).parents[k]`` or ``.parent`` chains that leave the file's top-level package.

    ``depth`` is the number of folders between the wheel's root and the file: ``parents[k]``
    (or ``k + 1`` ``.parent``) stays inside while ``k < depth``.
    """
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "parents" and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, int) and node.slice.value >= depth \
                and "__file__" in ast.unparse(node.value):
            bad.append(ast.unparse(node))
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            chain, inner = 0, node  # type: tuple[int, ast.expr]
            while isinstance(inner, ast.Attribute) and inner.attr == "parent":
                chain, inner = chain + 1, inner.value
            if chain > depth and "__file__" in ast.unparse(inner):
                bad.append(ast.unparse(node))
    return bad


@pytest.mark.parametrize("dist", PUBLISHED)
def test_published_wheel_is_self_contained(wheels: dict[str, Path], dist: str) -> None:
    with zipfile.ZipFile(wheels[dist]) as z:
        names = z.namelist()
        info = _dist_info(z)
        problems = [f"test server or installer shipped: {n}" for n in names
                    if not n.startswith(info) and FORBIDDEN_PATH.search(n)]
        problems += [f"path outside the wheel: {n}" for n in names
                     if n.startswith("/") or ".." in PurePosixPath(n).parts]

        meta = Parser().parsestr(z.read(f"{info}/METADATA").decode())
        problems += [f"direct reference in Requires-Dist (not in a published wheel): {r}"
                     for r in meta.get_all("Requires-Dist", []) if " @ " in r or "file:" in r]
        for line in z.read(f"{info}/RECORD").decode().splitlines():
            path = line.rsplit(",", 2)[0]
            if path.startswith("/") or ".." in PurePosixPath(path).parts:
                problems.append(f"RECORD names a file outside the wheel: {path}")

        modules = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")}
        if f"{info}/entry_points.txt" in names:
            eps = configparser.ConfigParser(delimiters=("=",))
            eps.optionxform = str  # type: ignore[assignment,method-assign]
            eps.read_string(z.read(f"{info}/entry_points.txt").decode())
            for group in eps.sections():
                for name, value in eps.items(group):
                    module = value.split(":")[0].strip()
                    if module not in modules:
                        problems.append(f"entry point {group}:{name} = {value} names a module "
                                        "that is not in the wheel")

        for n in names:
            if not n.endswith(".py"):
                continue
            source = z.read(n).decode()
            tree = ast.parse(source, n)
            problems += [f"{n} imports {m}" for m in _imports(tree)
                         if m.split(".")[0] in FORBIDDEN_IMPORTS]
            problems += [f"{n} reaches outside its package: {e}"
                         for e in _climbs_out(tree, len(PurePosixPath(n).parts) - 1)]
            if str(WORKSPACE) in source:
                problems.append(f"{n} names this checkout's path")
    assert not problems, f"{wheels[dist].name}:\n  " + "\n  ".join(problems)
