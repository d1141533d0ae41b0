"""Collected by ``pytest -p dask_deploy_conformance --deploy-backend NAME`` (and the CLI).

It holds the one test class that runs the whole suite against the backend named on the
command line. Not meant to be imported: subclass ``ConformanceSuite`` in your own tests.
"""

from dask_deploy_conformance.suite import ConformanceSuite


class TestConformance(ConformanceSuite):
    """The conformance suite against ``--deploy-backend`` with ``--deploy-option`` options."""
