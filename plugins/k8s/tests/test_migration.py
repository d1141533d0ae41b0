"""dask-kubernetes' documented ``KubeCluster`` examples, with only the class name changed,
give the worker pods they ask for (image, env, container requests/limits), built by the
backend's own manifest functions without a cluster; refused ones say why in one line."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from dask_deploy import SpecError, Unit
from dask_deploy._options import build_spec
from dask_deploy_k8s._manifests import worker_pod

#: (origin, code, expected facts of the worker pod, or the refusal's words).
EXAMPLES: list[tuple[str, str, dict[str, Any] | str]] = [
    # docs/source/operator_kubecluster.rst, "Getting started"
    ("operator_kubecluster.rst", 'KubeCluster(name="my-dask-cluster", '
                                 'image="ghcr.io/dask/dask:latest")',
     {"image": "ghcr.io/dask/dask:latest", "name": "my-dask-cluster"}),
    # operator_kubecluster.rst, scaling at creation
    ("operator_kubecluster.rst (n_workers)", 'KubeCluster(name="foo", n_workers=2, '
                                             'env={"FOO": "bar"})',
     {"n_workers": 2, "env": {"FOO": "bar"}}),
    # operator_kubecluster.rst, "Resources": memory requests and limits
    ("operator_kubecluster.rst (resources)",
     'KubeCluster(name="foo", resources={"requests": {"memory": "2Gi"}, '
     '"limits": {"memory": "64Gi"}})', {"limits": {"memory": str(64 * 2**30)}}),
    # operator_kubecluster.rst, CPU and memory limits together
    ("operator_kubecluster.rst (cpu)",
     'KubeCluster(name="foo", image="ghcr.io/dask/dask:latest", n_workers=3, '
     'resources={"limits": {"cpu": "2", "memory": "4Gi"}})',
     {"requests": {"cpu": "2", "memory": str(4 * 2**30)}, "n_workers": 3}),
    # operator_kubecluster.rst, env as Kubernetes EnvVar list
    ("operator_kubecluster.rst (env list)",
     'KubeCluster(name="foo", env=[{"name": "FOO", "value": "bar"}])', {"env": {"FOO": "bar"}}),
    # operator_kubecluster.rst, namespace
    ("operator_kubecluster.rst (namespace)", 'KubeCluster(name="foo", namespace="dask")',
     {"namespace": "dask"}),
    # operator_kubecluster.rst, lifetime: keep the cluster after the client ends
    ("operator_kubecluster.rst (shutdown_on_close)",
     'KubeCluster(name="foo", shutdown_on_close=False, idle_timeout=300)',
     {"shutdown_on_close": False, "idle_timeout": 300}),
    # operator_kubecluster.rst, exposing the scheduler
    ("operator_kubecluster.rst (service type)",
     'KubeCluster(name="foo", scheduler_service_type="LoadBalancer")',
     {"service_type": "LoadBalancer"}),
    # operator_kubecluster.rst, waiting for resources
    ("operator_kubecluster.rst (resource_timeout)", 'KubeCluster(name="foo", resource_timeout=120)',
     {"start_timeout": 120}),
    # operator_kubecluster.rst, port-forwarding
    ("operator_kubecluster.rst (port forward)",
     'KubeCluster(name="foo", port_forward_cluster_ip=True)', {"port_forward": True}),
    # operator_kubecluster.rst, "Custom cluster spec" (needs the operator's CRDs)
    ("operator_kubecluster.rst (custom spec)",
     'KubeCluster(custom_cluster_spec={"kind": "DaskCluster"})', "DaskCluster resources"),
    # docs GPU example: dask-cuda-worker command
    ("operator_kubecluster.rst (GPUs)",
     'KubeCluster(name="foo", worker_command="dask-cuda-worker", '
     'resources={"limits": {"nvidia.com/gpu": 1}})', "gpus="),
    # classic KubeCluster (removed in dask-kubernetes 2024.1): pod templates
    ("kubecluster.rst (classic)", 'KubeCluster(pod_template={"kind": "Pod"})', "classic"),
]


def _build(code: str) -> Any:
    def build(**options: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return build_spec("k8s", options)[0]

    return eval(code.replace("KubeCluster(", "build(", 1), {"build": build})


@pytest.mark.parametrize("origin,code,expected", EXAMPLES, ids=[o for o, _, _ in EXAMPLES])
def test_kubecluster_example(origin: str, code: str, expected: dict[str, Any] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(SpecError, match=expected) as e:
            _build(code)
        assert "\n" not in str(e.value)
        return
    spec = _build(code)
    o = spec.backend_options
    owner = {"apiVersion": "v1", "kind": "Secret", "name": spec.name, "uid": "u"}
    pod = worker_pod(spec, o.namespace or "default", owner,
                     Unit(f"{spec.name}-0", (spec.worker,)), "tls://scheduler:8786")
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    facts = {"image": container["image"], "name": spec.name, "n_workers": spec.n_workers,
             "env": {k: env[k] for k in expected.get("env", {})},
             "limits": container["resources"].get("limits"),
             "requests": container["resources"].get("requests"),
             "namespace": pod["metadata"]["namespace"],
             "shutdown_on_close": spec.shutdown_on_close,
             "idle_timeout": spec.scheduler.idle_timeout, "service_type": o.service_type,
             "start_timeout": spec.start_timeout, "port_forward": o.port_forward}
    for key, value in expected.items():
        assert facts[key] == value, (key, facts[key], origin)
