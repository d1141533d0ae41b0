"""Adaptive scaling that never closes a worker which is still starting, and never acts
after it was stopped."""

from __future__ import annotations

from typing import Any

from distributed.deploy.adaptive import Adaptive as _DistributedAdaptive

__all__ = ["Adaptive"]


class Adaptive(_DistributedAdaptive):  # type: ignore[misc]
    """``distributed.deploy.Adaptive`` with one change to scaling down.

    distributed closes workers that were requested but have not connected yet *first*,
    so a batch job waiting in the queue or a pod pulling its image is cancelled as soon as
    the load dips, and started again when it rises (the flapping users of dask-jobqueue and
    dask-kubernetes report). Here, scaling down drops units that were never started, then
    idle connected workers; a worker that is still starting is left alone (the reconciler
    fails it if it does not connect within ``start_timeout``). ``wait_count`` still applies.
    """

    async def recommendations(self, target: int) -> dict[str, Any]:
        plan, requested, observed = set(self.plan), set(self.requested), set(self.observed)
        if target >= len(plan):
            return await super().recommendations(target)  # type: ignore[no-any-return]
        excess = len(plan) - target
        to_close = set(sorted(plan - requested)[:excess])  # nothing runs for these yet
        starting = requested - observed
        if len(to_close) < excess:
            keep_observed = max(0, target - len(starting))
            if keep_observed < len(observed):
                to_close.update(await self.workers_to_close(target=keep_observed))
        firmly = set()
        for w in to_close:
            self.close_counts[w] += 1
            if self.close_counts[w] >= self.wait_count:
                firmly.add(w)
        for w in list(self.close_counts):
            if w in firmly or w not in to_close:
                del self.close_counts[w]
        return {"status": "down", "workers": sorted(firmly)} if firmly else {"status": "same"}

    # distributed's adapt() step awaits the scheduler, then scales, without looking again
    # whether stop() came in between: a user's cluster.scale(n) right after adapt was turned
    # off was then overridden by the step that was in flight. A stopped Adaptive does nothing.

    async def scale_up(self, n: Any) -> None:
        if self.state != "stopped":
            await super().scale_up(n)

    async def scale_down(self, workers: Any) -> None:
        # distributed's own scale_down awaits the scheduler's retirement of the workers and
        # then drops their units: a stop() and a user's scale(n) during that await were
        # undone afterwards (state machine: adapt, load, scale(3), scale(4) -> plan of 2).
        if self.state == "stopped" or not workers:
            return
        await self.scheduler.retire_workers(names=workers, remove=True, close_workers=True)
        if self._stopped():
            return  # the user took over meanwhile: the plan is theirs (retired units restart)
        await self.cluster.scale_down(workers)  # type: ignore[attr-defined]

    def _stopped(self) -> bool:
        return str(self.state) == "stopped"  # read again after an await (mypy narrows it)
