"""rbac.yaml is a namespaced Role that grants exactly what the backend asks the API for.

The emulator records every request as RBAC would see it (verb, resource, subresource,
namespace); a tour through everything the backend does must stay inside the Role.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from dask_deploy import Cluster
from dask_deploy_testing.k8s import Emulator
from distributed import Client

RBAC = Path(__file__).parent.parent / "rbac.yaml"

pytestmark = pytest.mark.timeout(300)


def test_rbac_manifest_is_a_role_covering_every_request(tmp_path: Path) -> None:
    from dask_deploy._gc import collect_garbage

    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    assert {d["kind"] for d in docs} == {"Role", "RoleBinding", "ServiceAccount"}  # no Cluster*
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])

    with Emulator(str(tmp_path / "rbac")) as emu:
        # the default: scheduler pod + port-forward + TLS; compute, logs, dashboard, scale, close
        with Cluster.from_name("k8s", **emu.backend_options(name="tour", n_workers=1)) as cluster, \
                Client(cluster) as client:
            client.wait_for_workers(1, timeout=120)
            assert client.submit(lambda: 1).result() == 1
            assert "Start worker" in cluster.get_logs()["tour-0"]
            with urllib.request.urlopen(cluster.dashboard_link, timeout=60) as resp:
                assert resp.status == 200
            cluster.scale(0)
            deadline = time.monotonic() + 120
            while client.scheduler_info()["workers"]:
                assert time.monotonic() < deadline, "scale(0) did not stop the worker"
                time.sleep(0.05)
        # detached, re-attached by another client (in-cluster addressing), left again: gc
        first = Cluster.from_name("k8s", **emu.backend_options(name="tour2", n_workers=1,
                                                               shutdown_on_close=False, port_forward=False))
        first.wait_for_workers(1, timeout=120)
        first.close()
        again = Cluster.from_name("k8s", name="tour2")
        assert again.get_logs()["tour2-0"]
        again.close()
        # its scheduler dies: nobody can use the cluster, so gc removes what is left of it
        emu.call(lambda v1: v1.delete_namespaced_pod("tour2-scheduler", "default", grace_period_seconds=0))
        found = asyncio.run(collect_garbage(["k8s"], {"k8s": {"kubeconfig": emu.kubeconfig}},
                                            echo=lambda _: None, grace=0))
        assert {h.cluster for h in found} == {"tour2"}
        requests = emu.requests()

    used = {(r["resource"] + (f"/{r['subresource']}" if r["subresource"] else ""), r["verb"])
            for r in requests}
    assert used - granted == set(), "the backend needs permissions that rbac.yaml does not grant"
    assert {r["namespace"] for r in requests} == {"default"}, "a request outside the namespace"
    # least privilege: nothing granted that the backend never uses (older API servers
    # authorize a websocket port-forward as "get", newer ones as "create")
    assert granted - used <= {("pods/portforward", "get")}, granted - used


def test_rbac_attributes_of_requests() -> None:
    from aiohttp.test_utils import make_mocked_request
    from dask_deploy_testing.k8s._apiserver import rbac_attributes

    def attrs(method: str, path: str) -> tuple[str, ...]:
        got: Any = rbac_attributes(make_mocked_request(method, path))
        return got["verb"], got["resource"], got["subresource"], got["namespace"]

    assert attrs("GET", "/api/v1/namespaces/a/pods") == ("list", "pods", "", "a")
    assert attrs("GET", "/api/v1/namespaces/a/pods?watch=True") == ("watch", "pods", "", "a")
    assert attrs("GET", "/api/v1/namespaces/a/pods/p/log") == ("get", "pods", "log", "a")
    assert attrs("GET", "/api/v1/namespaces/a/pods/p/portforward?ports=1") == (
        "create", "pods", "portforward", "a")
    assert attrs("DELETE", "/api/v1/namespaces/a/pods") == ("deletecollection", "pods", "", "a")
    assert attrs("PATCH", "/api/v1/namespaces/a/secrets/s") == ("patch", "secrets", "", "a")
    assert attrs("GET", "/api/v1/pods") == ("list", "pods", "", "")
    assert attrs("DELETE", "/api/v1/namespaces/a") == ("delete", "namespaces", "", "a")
