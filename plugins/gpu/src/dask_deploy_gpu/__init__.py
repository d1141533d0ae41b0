"""dask-deploy GPU support: one worker per GPU, locally (cuda backend) and on every backend"""
