"""dask-deploy Kubernetes backend on kubernetes-asyncio.

``Cluster.from_name("k8s", image=..., namespace=..., n_workers=...)``; see the README for
the options, the RBAC rules it needs (``rbac.yaml``) and how it cleans up.
"""

from ._options import K8sOptions

__all__ = ["K8sOptions"]
