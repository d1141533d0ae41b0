"""dask-deploy-gateway: clusters on an existing dask-gateway server (``Cluster.from_name("gateway")``)."""

from ._options import GatewayOptions

__all__ = ["GatewayOptions"]
