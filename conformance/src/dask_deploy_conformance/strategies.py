"""Hypothesis strategies of the suite, for backends' own property tests too."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

__all__ = ["adapt_bounds", "load_sequences", "scale_sequences"]

#: Task durations of generated load, in seconds.
DURATIONS = (0.0, 0.05, 0.2)


def scale_sequences(max_workers: int = 4, max_size: int = 4) -> Any:
    """Lists of ``(n, settle)``: call ``scale(n)``, then wait for convergence if ``settle``."""
    return st.lists(st.tuples(st.integers(0, max_workers), st.booleans()), min_size=1, max_size=max_size)


def load_sequences(max_tasks: int = 12, max_size: int = 3) -> Any:
    """Lists of ``(n_tasks, seconds_each)``: bursts of load, each run to completion."""
    return st.lists(st.tuples(st.integers(0, max_tasks), st.sampled_from(DURATIONS)),
                    min_size=1, max_size=max_size)


def adapt_bounds(max_workers: int = 4) -> Any:
    """``(minimum, maximum)`` with ``0 <= minimum <= maximum``, ``1 <= maximum <= max_workers``."""
    return st.integers(0, max_workers).flatmap(
        lambda lo: st.tuples(st.just(lo), st.integers(max(lo, 1), max_workers)))
