"""The error hierarchy: every message says what failed, where, and how to fix it."""

from __future__ import annotations

__all__ = ["BackendError", "BackendNotFound", "CrashLoopError", "DeployError", "SchedulerLost", "SpecError",
           "StartTimeout"]


class DeployError(Exception):
    """Base class of every error dask-deploy raises on purpose."""


class SpecError(DeployError, ValueError):
    """A cluster, scheduler or worker option was given a value we cannot use.

    The message names the option, repeats the value that was given and says what is accepted.
    """

    def __init__(self, option: str, value: object, accepted: str) -> None:
        self.option, self.value, self.accepted = option, value, accepted
        super().__init__(f"invalid {option}={value!r}: {accepted}")


class BackendNotFound(DeployError, LookupError):
    """No installed plugin provides the backend that was asked for."""


class BackendError(DeployError, RuntimeError):
    """A backend failed to do what a hook asked (submit, start, stop, poll, read logs)."""


class StartTimeout(DeployError, TimeoutError):
    """A scheduler or worker did not come up within its start timeout."""


class CrashLoopError(DeployError, RuntimeError):
    """Workers kept failing to start or kept dying, so the cluster stopped starting new ones.

    Call ``cluster.retry()`` once the cause is fixed; ``cluster.get_logs()`` has the details.
    """


class SchedulerLost(DeployError, RuntimeError):
    """The cluster's remote scheduler ended (failed, killed, out of walltime) or vanished.

    Set as ``cluster.error`` with the end of the scheduler's log; the cluster starts no more
    workers into it. Close the cluster and start a new one.
    """
