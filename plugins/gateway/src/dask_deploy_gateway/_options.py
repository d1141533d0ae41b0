"""The gateway backend's own options (importable without the dask-gateway client)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dask_deploy import SpecError

__all__ = ["GatewayOptions"]


def _auth_name(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class GatewayOptions:
    """Where the dask-gateway server is and what to ask it for.

    ``address``, ``proxy_address``, ``public_address`` and ``auth`` are those of
    ``dask_gateway.Gateway`` (``None``: dask's ``gateway.*`` configuration). ``auth`` is a
    ``dask_gateway.auth.GatewayAuth`` or its name (``"basic"``, ``"kerberos"``,
    ``"jupyterhub"``), whose arguments then come from dask's ``gateway.auth.kwargs`` (no
    credential in the options). ``cluster_options`` are the server's cluster options (its
    ``c.Backend.cluster_options``: worker cores, memory, image, environment, ...), sent as
    they are; the server validates them.
    """

    address: str | None = None
    proxy_address: str | None = None
    public_address: str | None = None
    #: A ``GatewayAuth`` object holds credentials: a record keeps only an auth *name*
    #: (a re-attaching process authenticates through dask's ``gateway.auth`` config).
    auth: Any = field(default=None, metadata={"persist": _auth_name})
    cluster_options: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds a stopped worker may take to leave before the stop fails.
    stop_grace: float = 30.0

    def __post_init__(self) -> None:
        if self.address is not None and not (isinstance(self.address, str)
                                             and self.address.startswith(("http://", "https://"))):
            raise SpecError("address", self.address, "the gateway's http(s):// address")
        if not isinstance(self.cluster_options, Mapping):
            raise SpecError("cluster_options", self.cluster_options,
                            "a mapping of the gateway server's cluster options")
        if not isinstance(self.stop_grace, (int, float)) or self.stop_grace <= 0:
            raise SpecError("stop_grace", self.stop_grace, "a positive number of seconds")
        object.__setattr__(self, "cluster_options", MappingProxyType(dict(self.cluster_options)))
