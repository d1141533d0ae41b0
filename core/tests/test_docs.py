"""The documentation: generated pages are current, the site builds strictly, and what the
README and the docs tell a user to type is a command and an extra that exist."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest
import tomllib
import yaml
from dask_deploy._cli import main

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_current() -> None:
    # In a fresh interpreter, as the command a user runs: this process's state (backends
    # and config that earlier tests registered or set) must not leak into the pages.
    assert {"cli.md", "configuration.md", "hooks.md", "index.md"} <= set(_generator().pages())
    check = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr


def test_generated_reference_covers_every_command_and_key() -> None:
    """What the pages must hold, so that a generator that drops a part fails here."""
    cli = (ROOT / "docs" / "cli.md").read_text()
    ctx = click.Context(main, info_name="dask-deploy")
    for name in main.list_commands(ctx):
        assert f"## dask-deploy {name}\n" in cli, name
    assert "--workers" in cli and "--detach" in cli
    config = (ROOT / "docs" / "configuration.md").read_text()
    schema = yaml.safe_load((ROOT / "core/src/dask_deploy/deploy.schema.json").read_text())
    for key in schema["properties"]["deploy"]["properties"]:
        assert f"`deploy.{key}`" in config, key
    assert "### `slurm`" in config and "| `queue` |" in config
    assert str(ROOT) not in config and str(Path.home()) not in config, "a machine's path leaked"


def test_links_to_files_outside_the_site_become_paths() -> None:
    gen = _generator()
    text = ("[guide](../docs/writing-a-backend.md), [t](template/), "
            "![i](../docs/img/dashboard-through-proxy.png), "
            "[web](https://example.org/a.md), [ssh](../plugins/ssh/README.md#install)\n"
            "```\n[kept](template/)\n```\n")
    out = gen.rewrite_links(text, "conformance/README.md", "conformance.md")
    assert "[guide](writing-a-backend.md)" in out
    assert "t (`conformance/template/`)" in out
    assert "[ssh](backends/ssh.md#install)" in out
    assert "[web](https://example.org/a.md)" in out
    assert "[kept](template/)" in out  # code blocks are left as they are
    assert "![i](img/dashboard-through-proxy.png)" in out
    with pytest.raises(ValueError, match="not under docs/"):
        gen.rewrite_links("![shot](shot.png)", "plugins/k8s/README.md", "backends/k8s.md")


def test_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link, a missing anchor or a page left out of the
    nav fails it (mkdocs.yml raises those checks to warnings, which strict makes errors)."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    assert set(config["validation"].values()) == {"warn"}
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    site = tmp_path / "site"
    # In this process (no second interpreter importing mkdocs and markdown); the search
    # index is left out: it only indexes, it warns about nothing.
    cfg = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(site), strict=True)
    cfg.plugins.pop("search", None)
    try:
        build(cfg)
    except Abort as e:
        pytest.fail(f"mkdocs build --strict: {e} (the warnings are logged above)")
    for page in ("index.html", "cli/index.html", "configuration/index.html",
                 "backends/ssh/index.html", "migrating/index.html", "img/dashboard-through-proxy.png"):
        assert (site / page).is_file(), page


def test_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The site's own settings, on a one-page site with a link to a page that is not there."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    ours = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\nSee [the guide](guide.md).\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(
        {"site_name": "t", "strict": ours["strict"], "validation": ours["validation"],
         "theme": ours["theme"], "nav": ["index.md"]}))
    cfg = load_config(str(tmp_path / "mkdocs.yml"), site_dir=str(tmp_path / "site"))
    cfg.plugins.pop("search", None)
    with pytest.raises(Abort, match="warning"):
        build(cfg)


# --------------------------------------------------------------------------------------
# What the README and the docs tell a user to type
# --------------------------------------------------------------------------------------

#: What people write (the generated pages copy the READMEs or come from code).
_HAND_WRITTEN = [ROOT / "README.md", ROOT / "conformance" / "README.md",
                 *sorted(ROOT.glob("plugins/*/README.md")), ROOT / "core" / "README.md",
                 *(p for p in sorted((ROOT / "docs").glob("*.md"))
                   if not p.read_text().startswith("<!-- generated"))]


def _shell_lines() -> list[tuple[str, str]]:
    """(file, line) for each line of the fenced blocks that runs a command (not Python)."""
    out = []
    for path in _HAND_WRITTEN:
        for lang, block in re.findall(r"^```([a-z]*)\n(.*?)^```", path.read_text(), re.S | re.M):
            if lang in ("python", "pycon", "yaml", "toml", "json", "text"):
                continue
            for line in block.splitlines():
                line = line.split(" #")[0].strip().removeprefix("$ ")
                if line and "..." not in line:  # "..." : a synopsis, not a command
                    out.append((str(path.relative_to(ROOT)), line))
    return out


def test_documented_commands_exist() -> None:
    """Each ``dask-deploy ...`` line parses: the command exists, its options and arguments are
    right (parsing only, nothing runs)."""
    seen = 0
    for where, line in _shell_lines():
        if line.split()[0] not in ("dask-deploy", "uv", "uvx"):
            continue  # output, or another program
        words = shlex.split(line)
        if "dask-deploy" not in words:
            continue
        args = words[words.index("dask-deploy") + 1:]
        if not args or args[0].startswith("-"):
            continue
        ctx = click.Context(main, info_name="dask-deploy")
        cmd = main.get_command(ctx, args[0])
        assert cmd is not None, f"{where}: {line!r}: no command {args[0]!r}"
        if cmd.add_help_option:  # a pass-through command (a plugin's) parses its own
            try:
                cmd.make_context(args[0], args[1:], parent=ctx)
            except click.UsageError as e:
                pytest.fail(f"{where}: {line!r}: {e.format_message()}")
        seen += 1
    assert seen >= 5, "the docs show (almost) no dask-deploy command: the scan is broken"


def test_documented_extras_exist() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set()
    for path in _HAND_WRITTEN:
        where = str(path.relative_to(ROOT))
        named |= {(where, e) for e in re.findall(r"dask-deploy\[([a-z0-9_-]+)\]", path.read_text())}
    assert named, "no extra named anywhere: the scan is broken"
    for where, extra in named:
        assert extra in extras, f"{where} names the extra dask-deploy[{extra}], which does not exist"
