"""dask-deploy GPU support: one worker per GPU, locally (``cuda`` backend) and on every backend.

Nothing here is imported eagerly: the ``gpu`` extension (:mod:`dask_deploy_gpu.expand`) is
loaded into every cluster and must stay light, and NVML loads only when GPUs are looked for.

- ``Cluster.from_name("cuda", ...)``: ``LocalCUDACluster`` on dask-deploy (:mod:`.plugin`).
- ``Cluster.from_name(any_backend, gpus=N, ...)``: each unit becomes N one-GPU workers.
- ``worker_options={"preload": ["dask_deploy_gpu.affinity"]}``: pin a worker to its GPU's CPUs.
"""

__all__: list[str] = []
