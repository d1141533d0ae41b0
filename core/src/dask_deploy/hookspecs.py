"""The contract between the core and every backend, as pluggy hook specifications.

How async hooks work here (see ``docs/architecture.md`` for the reasoning): pluggy has no
async support, and a ``firstresult`` hook stops at the first non-``None`` result, which a
coroutine always is. So every cluster gets **its own plugin manager holding exactly one
backend plugin** (the object the backend's ``BackendInfo.factory`` builds) plus the
composable plugins (resource expansion). Backend hooks are ``firstresult`` and are
implemented as ``async def``; the core calls the hook and awaits what it returns. A backend
hook that no plugin implements returns ``None``, which the core reads as "not supported".
Composable plugins may implement only the two plain (non-async) hooks below, and the core
refuses one that implements a backend hook.

Every hook takes keyword arguments; implementations may accept any subset of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._specs import (
        BackendInfo,
        ClusterSpec,
        Handle,
        SchedulerInfo,
        Status,
        Unit,
        WorkerSpec,
    )

__all__ = ["BACKEND_HOOKS", "BACKEND_PLAIN_HOOKS", "PROJECT", "hookimpl", "hookspec"]

PROJECT = "dask_deploy"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate implementations with this: ``@hookimpl async def deploy_start_workers(...)``.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Hooks that only the cluster's one backend plugin may implement (all ``async``).
BACKEND_HOOKS = (
    "deploy_prepare",
    "deploy_start_scheduler",
    "deploy_stop_scheduler",
    "deploy_start_workers",
    "deploy_stop_workers",
    "deploy_poll",
    "deploy_get_logs",
    "deploy_dashboard_route",
    "deploy_discover",
    "deploy_reattach",
    "deploy_teardown",
)

#: Backend-only hooks that are plain functions (called where the core cannot await).
BACKEND_PLAIN_HOOKS = ("deploy_worker_name",)


# --------------------------------------------------------------------------------------
# Description and expansion (plain functions, any number of plugins)
# --------------------------------------------------------------------------------------


@hookspec
def deploy_backends() -> Sequence[BackendInfo]:
    """Describe the backends this plugin provides.

    Collected: every registered plugin contributes a list of
    :class:`~dask_deploy.BackendInfo`; one distribution may provide several backends
    (jobqueue: ``slurm``, ``pbs``, ...). Called when a backend is looked up by name and by
    ``dask-deploy backends``. Must be cheap and must not import the backend's client library
    (that happens in ``BackendInfo.factory``). Raise nothing.
    """


@hookspec
def deploy_expand_resources(cluster: ClusterSpec, workers: list[WorkerSpec]) -> None:
    """Turn the workers of one requested unit into the workers it should really run.

    ``workers`` is a draft, ``[cluster.worker]`` at first, that each implementation edits
    in place (``workers[:] = [...]``), the way ``pytest_collection_modifyitems`` edits its
    items; return nothing. pluggy calls the implementations in its usual order:
    ``tryfirst`` ones first, then the backend plugin, then the composable plugins in the
    order they were loaded, then ``trylast`` ones; each sees the edits of those before it.
    Every worker needs a distinct ``suffix`` when there is more than one. Examples: the
    gpu plugin turns one worker with ``gpus=4`` into four workers with ``gpus=1`` and
    ``CUDA_VISIBLE_DEVICES`` rotated; jobqueue turns one job with
    ``processes=2`` into two workers sharing its cores and memory. Called once per cluster
    when it starts. Raise :class:`~dask_deploy.SpecError` when the request cannot be met
    (e.g. GPUs asked for and none found).
    """


# --------------------------------------------------------------------------------------
# Scheduler (backend, async, firstresult)
# --------------------------------------------------------------------------------------


@hookspec(firstresult=True)
async def deploy_prepare(cluster: ClusterSpec) -> None:
    """Get ready to start things: open connections, boot agents, create shared resources.

    Called once when the cluster starts, concurrently with the scheduler's start, so that
    slow set-up is off the critical path. Optional. Like every creating hook (this one,
    ``deploy_start_scheduler``, ``deploy_start_workers``) it is never cancelled by
    ``close()``: the core waits for it, keeps what it returns, stops that, and only then
    calls ``deploy_teardown``. So no creating hook runs after teardown began, and a
    backend needs no "closing" flag of its own. Raise
    :class:`~dask_deploy.BackendError` if the backend cannot be used (unreachable host,
    bad credentials); the cluster then fails to start and is torn down.
    """


@hookspec(firstresult=True)
async def deploy_start_scheduler(cluster: ClusterSpec) -> SchedulerInfo:
    """Start the scheduler as a process, job, pod, task or host of the backend.

    Called once, when ``cluster.scheduler.placement == "remote"`` (the core runs a
    ``"local"`` scheduler itself). Return only once the scheduler accepts connections, with
    an address this client can dial. Tag what you start with ``cluster.name``. Raise
    :class:`~dask_deploy.StartTimeout` if it does not come up within
    ``cluster.start_timeout`` (counted once it left the backend's queue, where
    ``cluster.queue_timeout``, if set, bounds the wait) and :class:`~dask_deploy.BackendError`
    for any other failure; clean up whatever you started before raising (also on
    ``CancelledError``: a close waits ``cluster.start_timeout`` for this call, then cancels
    it). Leave it unimplemented if the backend cannot place the scheduler: the core then
    refuses ``scheduler="remote"`` (the ``remote_scheduler`` capability is derived from it).
    """


@hookspec(firstresult=True)
async def deploy_stop_scheduler(cluster: ClusterSpec, handle: Handle) -> None:
    """Stop a scheduler that ``deploy_start_scheduler`` started, and wait until it is gone.

    Called on close (unless the cluster is detached). Idempotent: stopping what is already
    gone is not an error. Raise :class:`~dask_deploy.BackendError` only if it may still run.
    """


# --------------------------------------------------------------------------------------
# Workers (backend, async, firstresult, batched)
# --------------------------------------------------------------------------------------


@hookspec(firstresult=True)
async def deploy_start_workers(
    cluster: ClusterSpec, scheduler_address: str, units: Sequence[Unit]
) -> Sequence[Handle]:
    """Start many units at once; return one :class:`~dask_deploy.Handle` per unit, in order.

    Called by the reconciler whenever desired units have nothing started for them (scale up,
    replacement of a failed unit), with all such units of that round in one batch, so that
    a backend can use one job array, one agent per host or one API call for all of them.
    Each unit's workers must join ``scheduler_address`` with the names ``unit.worker_names``.
    Return as soon as the units are *accepted* (submitted, created,
    forked): readiness is observed through ``deploy_poll`` and the scheduler, and the core
    fails a unit that has not connected ``cluster.start_timeout`` seconds after ``deploy_poll``
    first reported it past PENDING (or that stayed PENDING longer than
    ``cluster.queue_timeout``, when set). Tag everything with
    ``cluster.name``. Raise :class:`~dask_deploy.BackendError` if the batch was refused (the
    core counts it as one failure per unit and backs off); clean up partial starts first.
    """


@hookspec(firstresult=True)
async def deploy_stop_workers(cluster: ClusterSpec, handles: Sequence[Handle]) -> None:
    """Stop these units and wait until they are gone.

    Graceful first (SIGTERM or the system's equivalent, so batch systems record the job as
    completed), forceful after a short grace period. Idempotent: handles of units that are
    already gone are fine. Called on scale-down, when a unit failed and is replaced, and on
    close. Raise :class:`~dask_deploy.BackendError` only if something may still run.
    """


@hookspec(firstresult=True)
def deploy_worker_name(cluster: ClusterSpec, address: str, name: str) -> str | None:
    """Say which planned worker a worker that joined the scheduler is, when its name differs.

    For backends whose system names the workers itself (a dask-gateway server calls each
    worker by a uuid of its own and offers only a worker *count*): the core knows workers by
    ``unit.worker_names``, so it asks, for every worker the scheduler reports joining
    (``address``, and the ``name`` it registered with), which of those names it stands for,
    and uses the answer wherever it reads the scheduler's worker names. Return ``None`` to
    keep ``name`` (a worker you do not know stays unplanned and the core retires it).
    Called on the event loop for every worker that joins, so answer from memory, without
    I/O, and never block; answer the same for the same ``address``. Plain ``def``, not
    async, and only the backend plugin may implement it. Leave it unimplemented when your
    workers register with the names ``deploy_start_workers`` gave them (every other backend).
    """


@hookspec(firstresult=True)
async def deploy_poll(cluster: ClusterSpec, handles: Sequence[Handle]) -> Sequence[Status]:
    """Report the :class:`~dask_deploy.Status` of each handle, in order, in one batch.

    ``PENDING`` (accepted, not running: queued job, unscheduled pod), ``RUNNING`` (its
    process runs; it may not have connected yet), ``FAILED`` with the backend's reason
    (non-zero exit, image pull error, out of memory, cancelled by the system), or ``GONE``
    (ended cleanly, or unknown to the backend). Called every reconcile round, so keep it to
    one cheap query. The batch includes the remote scheduler's handle (the one
    ``deploy_start_scheduler`` returned), so that a scheduler that died or ran out of
    walltime is noticed in the same round; the core then sets ``cluster.error``
    (:class:`~dask_deploy.SchedulerLost`) with the end of its log. Raise
    :class:`~dask_deploy.BackendError` if the backend cannot be reached; the core retries
    next round.
    """


@hookspec(firstresult=True)
async def deploy_get_logs(cluster: ClusterSpec, handle: Handle) -> str:
    """Return the log text of a scheduler or unit, **also after it has died**.

    Called by ``cluster.get_logs()`` and ``cluster.logs_of(name)``, for live and for
    stopped units. Read it from where the backend keeps it (a log file, the job's output
    file, the pod log, the task's log stream), not from the live process. Return ``""`` if nothing was
    written yet; raise :class:`~dask_deploy.BackendError` if the log is lost.
    """


@hookspec(firstresult=True)
async def deploy_dashboard_route(cluster: ClusterSpec, scheduler: SchedulerInfo) -> str:
    """Return an ``http://`` base URL at which this client reaches the scheduler's dashboard.

    The core's dashboard proxy forwards to it, so it may be the direct address, a local end
    of an SSH forward or a Kubernetes port-forward that the backend opened (and closes in
    ``deploy_teardown``). Called once after a remote scheduler started. Leave unimplemented
    when the dashboard address is directly reachable.
    """


@hookspec(firstresult=True)
async def deploy_discover(cluster: ClusterSpec, cluster_id: str | None) -> Sequence[Handle]:
    """List what this backend still runs that is tagged with ``cluster_id``.

    With ``cluster_id=None``, everything tagged by dask-deploy that this backend can see
    (for ``dask-deploy gc``). Include schedulers and units, running or pending, and also
    whatever else you created for the cluster and must not leak (a Secret, a Service, a
    security group, a log group): mark those with ``handle.data["kind"]`` naming what it
    is. Called to re-attach, to sweep orphans and by the conformance suite's leak checks,
    so it must ask the backend itself, not the core's records. ``dask-deploy gc`` removes
    what it finds by passing these handles to ``deploy_stop_workers`` (with
    ``cluster.name`` set to the handle's cluster), so that hook must accept every handle
    this one returns, whatever its kind. Leave unimplemented if the backend cannot
    enumerate what it runs.

    Ownership and liveness, which ``gc`` judges from these handles alone (never from the
    core's records, which may live in another state directory): tag what you create with
    :func:`dask_deploy.owner_tag` and :func:`dask_deploy.created_tag` and return them as
    ``handle.data["owner"]`` (``user@host`` of the creating client) and
    ``handle.data["created"]`` (epoch seconds); ``gc`` leaves other users' and untagged
    resources alone, and anything younger than ``deploy.gc-grace``. Add what you can tell
    of liveness: ``owner_pid`` (the creating client's pid, checked when its host is this
    one), ``owner_alive`` (bool), ``detached`` (bool: ``shutdown_on_close=False``),
    ``scheduler`` (an address ``gc`` asks which cluster it is) or ``scheduler_running``
    (bool). Raise if the backend cannot be reached: ``gc`` reports that, it never guesses.
    """


@hookspec(firstresult=True)
async def deploy_reattach(cluster: ClusterSpec, scheduler: SchedulerInfo) -> str | None:
    """Reopen what this process needs to reach a recorded remote scheduler; return its address.

    Called when a process attaches to a cluster started elsewhere (``attach()``,
    ``from_name(name=...)``, the CLI's ``scale``/``logs``/``down``), before the core dials
    ``scheduler.address``. Open a Kubernetes port-forward or an SSH tunnel here and return
    the address to dial instead (e.g. ``tls://127.0.0.1:PORT``; close it in
    ``deploy_teardown``), or return ``None`` when ``scheduler.address`` is reachable as it
    is. Raise :class:`~dask_deploy.BackendError` if it cannot be reached.
    """


@hookspec(firstresult=True)
async def deploy_teardown(cluster: ClusterSpec) -> None:
    """Release what the backend plugin holds for this cluster (connections, forwards, agents).

    Called last on close, after workers and scheduler were stopped (or left running, for a
    detached cluster), and also when the cluster failed to start. Close connections, stop
    port forwards, end agents' input streams; do not stop what a detached cluster should
    keep. Must not raise: log and carry on.
    """
