"""dask-deploy AWS backends (ECS, Fargate, EC2) on aiobotocore"""
