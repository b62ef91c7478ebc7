"""Admission against the one budget: how much work each path may be doing at once. Pure.

Only work being done counts (a legacy build's worker threads, a new-path job that runs); work
waiting in a queue does not load the shared database. Each cycle the free part of the budget is
shared between the paths in proportion to what each has to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Load:
    """What the paths hold and want at the start of a dispatch step."""

    legacy_in_use: int  # worker threads held by legacy builds still working
    new_running: int  # new-path jobs running now
    legacy_waiting: int  # conversions owned by the old path, not yet in a build
    new_waiting: int  # conversions owned by the new path, not yet running (claimed or queued)


@dataclass(frozen=True, slots=True)
class Split:
    """The decision: threads for a legacy build started now (0 = none), and the new path's cap."""

    legacy_threads: int
    new_capacity: int


def split_budget(budget: int, load: Load, max_build_threads: int) -> Split:
    """Split ``budget`` so that legacy threads + new jobs running can never exceed it.

    A legacy build starts only when it can have its fair share of threads without stopping a
    running new-path job; until then the new path's cap is lowered to that share so that the
    capacity frees up as its jobs finish (it is never asked to stop running work).
    """
    if budget < 1:
        raise ValueError("budget must be at least 1")
    free = max(0, budget - load.legacy_in_use)
    want_legacy = max(0, load.legacy_waiting)
    if want_legacy == 0 or free == 0:
        return Split(0, free)
    want_new = max(0, load.new_running) + max(0, load.new_waiting)
    fair = math.ceil(free * want_legacy / (want_legacy + want_new))
    target = max(1, min(want_legacy, max_build_threads, fair))
    room = free - max(0, load.new_running)
    if room >= target:
        return Split(target, free - target)
    return Split(0, free - target)


def clamp_threads(threads: int, budget: int, legacy_in_use: int, new_capacity_in_force: int) -> int:
    """Threads a legacy build may really have once the new path's cap in force is known."""
    return max(0, min(threads, budget - legacy_in_use - new_capacity_in_force))


def spare(budget: int, load: Load, split: Split) -> int:
    """Budget that real work leaves free this cycle, for shadow runs.

    Real work is counted as the split grants it: legacy threads held and about to start, and the
    new path's running and waiting work up to its cap. Legacy work that must wait for its build
    to get room holds the rest of the budget back, so nothing is spare then.
    """
    if load.legacy_waiting > 0 and split.legacy_threads == 0:
        return 0
    new = min(max(0, split.new_capacity), max(0, load.new_running) + max(0, load.new_waiting))
    return max(0, budget - load.legacy_in_use - split.legacy_threads - new)
