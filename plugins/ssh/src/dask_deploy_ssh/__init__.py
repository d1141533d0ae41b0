"""dask-deploy SSH backend: one agent per host over asyncssh.

>>> from dask_deploy import Cluster
>>> cluster = Cluster.from_name("ssh", hosts=["node1", "node2"], scheduler="remote")  # doctest: +SKIP
"""

from ._options import SSHOptions

__all__ = ["SSHOptions"]
