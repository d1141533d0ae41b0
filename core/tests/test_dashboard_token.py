"""The dashboard proxy's token: never on a command line (``ps``), never printed in a link.

The CLI takes it from ``$DASK_DEPLOY_DASHBOARD_TOKEN`` or ``--dashboard-token-file`` (a 0600
file of the user's); ``dashboard_link`` leaves it out and ``cluster.dashboard_token`` gives it
to whoever asks. The proxy still accepts it as ``?token=`` once, then as a cookie.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import click
import pytest
from dask_deploy import Cluster
from dask_deploy._cli import TOKEN_ENV, _dashboard_token, _read_token_file

CLI = [sys.executable, "-m", "dask_deploy._cli"]
SECRET = "s3cret-Token-4711"


def _cli(args: list[str], state_dir: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180,
                          env={**environ, "DASK_DEPLOY_STATE_DIR": state_dir, **env})


@pytest.mark.parametrize("args", [
    ["up", "local", "-n", "0", "-o", f"dashboard_token={SECRET}"],
    ["up", "local", "-n", "0", "-o", f"dashboard-token={SECRET}"],
    ["up", "local", "-n", "0", "--dashboard-token", SECRET],
    ["demo", "--dashboard-token", SECRET],
    ["dashboard", "x", "--dashboard-token", SECRET],
], ids=["option", "option-dashes", "up-flag", "demo-flag", "dashboard-flag"])
def test_token_on_the_command_line_is_refused_with_the_way(args: list[str], state_dir: str) -> None:
    out = _cli(args, state_dir)
    assert out.returncode != 0, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and TOKEN_ENV in last and "--dashboard-token-file" in last
    assert SECRET not in out.stdout + out.stderr  # not echoed back either
    assert not [p for p in Path(state_dir).rglob("*") if p.is_file()]


def test_token_in_a_spec_file_is_refused(state_dir: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"backend: local\nworkers: 0\noptions: {{dashboard_token: {SECRET}}}\n")
    out = _cli(["up", "-f", str(spec)], state_dir)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0 and TOKEN_ENV in last and SECRET not in out.stderr


def test_token_file_must_be_private_regular_and_ours(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "token"
    good.write_text(SECRET + "\n")
    good.chmod(0o600)
    assert _read_token_file(str(good)) == SECRET
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert _dashboard_token(str(good)) == SECRET  # the file wins over the environment
    assert _dashboard_token(None) == "from-env"
    monkeypatch.setenv(TOKEN_ENV, "")
    assert _dashboard_token(None) is None

    loose = tmp_path / "loose"
    loose.write_text(SECRET)
    loose.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(good)
    two = tmp_path / "two"
    two.write_text("a b\n")
    two.chmod(0o600)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    for path, why in [(loose, "chmod 600"), (link, "cannot open"), (tmp_path, "cannot open|not a"),
                      (two, "one token"), (empty, "one token"), (tmp_path / "none", "cannot open")]:
        with pytest.raises(click.BadParameter, match=why) as info:
            _read_token_file(str(path))
        assert SECRET not in str(info.value.message)


def test_link_has_no_token_and_the_proxy_still_asks_for_it() -> None:
    with Cluster.from_name("local", n_workers=0, scheduler="remote", name="t-token",
                           dashboard_proxy_address="127.0.0.1:0",
                           dashboard_token=SECRET) as cluster:
        link = cluster.dashboard_link
        assert "token" not in link and SECRET not in link and SECRET not in repr(cluster)
        assert cluster.dashboard_token == SECRET

        async def codes() -> list[int]:
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as s:
                out = []
                for url in (link, f"{link}?token=wrong", f"{link}?token={SECRET}", link):
                    async with s.get(url) as r:
                        out.append(r.status)
                return out

        assert asyncio.run(codes()) == [403, 403, 200, 200]  # the last one: the cookie


def test_up_detach_takes_the_token_from_a_file_and_never_prints_it(state_dir: str,
                                                                   tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET)
    token.chmod(0o600)
    out = _cli(["up", "local", "-n", "0", "--detach", "-o", "name=t-tok-cli",
                "-o", "dashboard_proxy_address=0.0.0.0:0", "--dashboard-token-file", str(token)],
               state_dir)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert SECRET not in out.stdout + out.stderr
        assert re.search(r"Dashboard: http://0\.0\.0\.0:\d+/status\n", out.stdout), out.stdout
        assert "?token=<your token>" in out.stdout
        # The same beyond loopback without any token: refused, naming the ways to give one.
        bad = _cli(["up", "local", "-n", "0", "--detach", "-o", "name=t-tok-none",
                    "-o", "dashboard_proxy_address=0.0.0.0:0"], state_dir)
        assert bad.returncode != 0 and TOKEN_ENV in bad.stderr.strip().splitlines()[-1]
    finally:
        down = _cli(["down", "t-tok-cli"], state_dir)
        assert down.returncode == 0, down.stdout + down.stderr
