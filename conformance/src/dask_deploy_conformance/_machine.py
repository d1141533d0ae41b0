"""The hypothesis ``RuleBasedStateMachine``: scale, adapt, load, kill, inject, close.

Its model is small on purpose: a fixed target (after ``scale``) or bounds (after ``adapt``),
the tasks submitted so far, and whether the cluster is closed. After every step the real
cluster must converge to the model: exactly the target of connected workers (or a number
within the bounds), every submitted task done once workers exist, no crash loop, and after
``close`` nothing left running. Hypothesis stateful tests are synchronous, so the machine
drives the cluster through its sync wrapper.
"""

from __future__ import annotations

import time
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ._support import (
    ClusterFactory,
    Faults,
    connected,
    converged,
    describe,
    expected_workers,
    plan,
    wait_for,
)
from .strategies import DURATIONS, adapt_bounds

__all__ = ["machine_for"]

#: Kills and injected start failures per example: few enough that backoff stays short and
#: the crash-loop limit (max_failures=20 here) is never reached.
FAULT_BUDGET = 3


def machine_for(factory: ClusterFactory, faults: Faults, max_workers: int, timeout: float,
                ) -> type[RuleBasedStateMachine]:
    """A state machine class bound to one backend (its factory, faults and limits)."""

    class DeployMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            from distributed import Client

            super().__init__()
            self.cluster = factory(max_failures=20)
            self.client = Client(self.cluster, set_as_default=False)
            self.target = 0
            self.bounds: tuple[int, int] | None = None
            self.adaptive: Any = None
            self.futures: list[Any] = []
            self.faults = 0
            self.closed = False

        # -- rules ------------------------------------------------------------------------

        @precondition(lambda self: not self.closed)
        @rule(n=st.integers(0, max_workers))
        def scale(self, n: int) -> None:
            if self.adaptive is not None:
                self.adaptive.stop()
                self.adaptive, self.bounds = None, None
            self.cluster.scale(n)
            self.target = n

        @precondition(lambda self: not self.closed)
        @rule(bounds=adapt_bounds(max_workers))
        def adapt(self, bounds: tuple[int, int]) -> None:
            lo, hi = bounds
            self.adaptive = self.cluster.adapt(minimum=lo, maximum=hi, interval="100ms", wait_count=2,
                                               target_duration="10ms")
            self.bounds = bounds

        @precondition(lambda self: not self.closed)
        @rule(n=st.integers(1, 8), seconds=st.sampled_from(DURATIONS))
        def load(self, n: int, seconds: float) -> None:
            self.futures += self.client.map(time.sleep, [seconds] * n, pure=False)

        @precondition(lambda self: not self.closed and faults.kill is not None
                      and self.faults < FAULT_BUDGET and bool(connected(self.cluster)))
        @rule(data=st.data())
        def kill_worker(self, data: st.DataObject) -> None:
            assert faults.kill is not None
            names = sorted(connected(self.cluster))
            if names:
                victim = data.draw(st.sampled_from(names), label="victim")
                faults.kill(self.cluster, victim)
                self.faults += 1

        @precondition(lambda self: not self.closed and faults.inject_start_failure is not None
                      and self.faults < FAULT_BUDGET)
        @rule()
        def inject_start_failure(self) -> None:
            assert faults.inject_start_failure is not None
            faults.inject_start_failure(self.cluster)
            self.faults += 1

        @precondition(lambda self: not self.closed)
        @rule()
        def close(self) -> None:
            self.client.close()
            self.cluster.close(timeout=timeout)
            self.closed = True
            assert str(self.cluster.status.name) == "closed"
            leaks = factory.leaks(self.cluster.name, self.cluster.spec)
            assert not leaks, "still running after close:\n  " + "\n  ".join(leaks)

        @precondition(lambda self: self.closed)
        @rule()
        def close_again(self) -> None:
            self.cluster.close(timeout=timeout)  # closing twice is fine
            assert str(self.cluster.status.name) == "closed"

        # -- the model check after every step -------------------------------------------------

        @invariant()
        def converges_to_model(self) -> None:
            if self.closed:
                return
            cluster = self.cluster

            def ok() -> bool:
                if cluster.error is not None:
                    raise AssertionError(f"crash loop: {cluster.error}\n{describe(cluster)}")
                size = len(plan(cluster))
                if self.bounds is None:  # scale(n) asks for whole units: n rounded up
                    return converged(cluster, expected_workers(cluster, self.target))
                lo, hi = self.bounds
                return lo <= size <= expected_workers(cluster, hi) and converged(cluster, size)

            model = f"target {self.target}" if self.bounds is None else f"bounds {self.bounds}"
            wait_for(ok, timeout, f"the cluster converged to the model ({model})", cluster)
            if self.futures and (self.bounds is not None or self.target > 0):
                wait_for(lambda: all(f.done() for f in self.futures), timeout,
                         f"all {len(self.futures)} submitted tasks finished", cluster)
                errors = [f for f in self.futures if f.status == "error"]
                assert not errors, f"tasks failed: {[f.exception() for f in errors[:3]]}"
                self.futures.clear()  # release the results: held data keeps workers alive

        def teardown(self) -> None:
            if not self.closed:
                self.client.close()
                self.cluster.close(timeout=timeout)

    DeployMachine.__name__ = DeployMachine.__qualname__ = f"DeployMachine_{factory.backend}"
    return DeployMachine
