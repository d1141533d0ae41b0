"""dask-deploy Kubernetes backend on kubernetes-asyncio"""
