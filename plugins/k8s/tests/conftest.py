"""Fixtures: the API-server emulator (a subprocess, real HTTPS), the real client, kubectl."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dask_deploy_conformance import wait_for as wait_until
from dask_deploy_testing.k8s import ApiServer, Emulator, kubeconfig
from kubernetes_asyncio import client, config

HERE = Path(__file__).parent
CI = os.environ.get("CI") == "true"


async def async_wait_until(cond: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Like :func:`wait_until` for an async ``cond`` (awaited each round); returns its value."""
    deadline = time.monotonic() + timeout
    while not (value := await cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


@pytest.fixture(name="wait_until")
def _wait_until_fixture() -> Callable[..., None]:
    return wait_until


@pytest.fixture(name="async_wait_until")
def _async_wait_until_fixture() -> Callable[..., Any]:
    return async_wait_until


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Cluster records (and `gc`) stay inside this test.
    monkeypatch.setenv("DASK_DEPLOY_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulated API server for the session (HTTPS, bearer token), in its own process."""
    with Emulator(str(tmp_path_factory.mktemp("k8s-emulator"))) as emu:
        yield emu


@pytest.fixture
async def core(emulator: Emulator) -> AsyncIterator[Any]:
    """A kubernetes-asyncio ``CoreV1Api`` configured from the emulator's kubeconfig."""
    cfg = type.__call__(client.Configuration)
    await config.load_kube_config(config_file=emulator.kubeconfig, client_configuration=cfg,
                                  persist_config=False)
    async with client.ApiClient(cfg) as api:
        yield client.CoreV1Api(api)


@pytest.fixture
async def local_api() -> AsyncIterator[tuple[ApiServer, Any]]:
    """An in-process emulator without a kubelet (plain HTTP) and a client for it."""
    async with ApiServer(kubelet=False, tls=False, history=50) as server:
        cfg = type.__call__(client.Configuration)
        await config.load_kube_config_from_dict(kubeconfig(server.url), client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            yield server, client.CoreV1Api(api)


def _kubectl_path() -> str | None:
    path = shutil.which("kubectl")
    if path is None and os.geteuid() == 0:
        subprocess.run(["bash", str(HERE.parent / "ci-setup.sh")], check=False, capture_output=True)
        path = shutil.which("kubectl")
    return path


@pytest.fixture(scope="session")
def kubectl(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
            ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``kubectl --kubeconfig <emulator>``; returns the completed process."""
    path = _kubectl_path()
    if path is None:
        if CI:
            pytest.fail("kubectl is missing (plugins/k8s/ci-setup.sh installs it)")
        pytest.skip("kubectl is not installed")
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([path, "--kubeconfig", emulator.kubeconfig, "--cache-dir", str(cache), *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def objects(emulator: Emulator) -> Callable[[str], dict[str, list[dict[str, Any]]]]:
    """``objects(selector[, other_emulator])``: pods, services and secrets matching ``selector``."""
    return lambda selector, emu=emulator: list_objects(emu, selector)


@pytest.fixture
def k8s(emulator: Emulator) -> Callable[[Callable[[Any], Any]], Any]:
    """``k8s(async_fn)``: run ``async_fn(CoreV1Api)`` against the emulator from a sync test."""
    return emulator.call


def list_objects(emulator: Emulator, selector: str) -> dict[str, list[dict[str, Any]]]:
    """Pods, services and secrets matching ``selector`` (from a test's own thread)."""
    async def go(v1: Any) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for kind, call in (("pods", v1.list_namespaced_pod), ("services", v1.list_namespaced_service),
                           ("secrets", v1.list_namespaced_secret)):
            resp = await call("default", label_selector=selector, _preload_content=False)
            out[kind] = json.loads(await resp.read())["items"]
        return out

    return emulator.call(go)
