"""dask-deploy's AWS backends: ``ecs``, ``fargate`` and ``ec2`` on aiobotocore.

>>> from dask_deploy import Cluster
>>> cluster = Cluster.from_name("fargate", image="my/dask-deploy-image", n_workers=4)  # doctest: +SKIP

Options: :class:`ECSOptions` (ecs, fargate) and :class:`EC2Options`. The tests run against
moto with a task runner that lives in the repository's unpublished ``testing/`` member.
"""

from ._options import AWSOptions, EC2Options, ECSOptions

__all__ = ["AWSOptions", "EC2Options", "ECSOptions"]
