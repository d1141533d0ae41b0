"""Backend plugin (work in progress): provides no backend yet."""

from dask_deploy import hookimpl


@hookimpl
def deploy_backends() -> list:
    return []
