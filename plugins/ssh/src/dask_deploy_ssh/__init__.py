"""dask-deploy SSH backend: one agent per host over asyncssh"""
