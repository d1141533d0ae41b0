"""dask-deploy's AWS backends: ``ecs``, ``fargate`` and ``ec2`` on aiobotocore.

>>> from dask_deploy import Cluster
>>> cluster = Cluster.from_name("fargate", image="my/dask-deploy-image", n_workers=4)  # doctest: +SKIP

Options: :class:`ECSOptions` (ecs, fargate) and :class:`EC2Options`; the test harness that
runs emulated tasks as local processes is :mod:`dask_deploy_cloud.testing`.
"""

from ._options import AWSOptions, EC2Options, ECSOptions

__all__ = ["AWSOptions", "EC2Options", "ECSOptions"]
