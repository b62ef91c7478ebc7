"""Admission against the one budget: how much work each path may be doing at once. Pure.

Only work being done counts (a legacy build's worker threads, a new-path job that runs); work
waiting in a queue does not load the shared database. Each cycle the budget is shared between the
paths in proportion to what each has to do, and a legacy build takes only its part of the old
path's backlog (see ``build_items``).
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
    """The decision: threads for a legacy build started now (0 = none), the new path's cap, and how
    many of the waiting legacy conversions that build takes (None: all of them)."""

    legacy_threads: int
    new_capacity: int
    legacy_items: int | None = None


def split_budget(budget: int, load: Load, max_build_threads: int) -> Split:
    """Split ``budget`` so that legacy threads + new jobs running can never exceed it.

    The old path's share of the whole budget is in proportion to the work it holds and has
    waiting, against the new path's. Below that share, a legacy build starts when it can have the
    threads it is due without stopping a running new-path job; until then the new path's cap is
    lowered so that the capacity frees up as its jobs finish (it is never asked to stop running
    work). At or above its share, the old path only gets budget the new path leaves idle: lowering
    the new path's cap for it there would hand the old path one more thread every cycle, until it
    held everything and the new path's queue stood still.
    """
    if budget < 1:
        raise ValueError("budget must be at least 1")
    free = max(0, budget - load.legacy_in_use)
    want_legacy = max(0, load.legacy_waiting)
    if want_legacy == 0 or free == 0:
        return Split(0, free)
    want_new = max(0, load.new_running) + max(0, load.new_waiting)
    held = max(0, load.legacy_in_use)
    share = math.ceil(budget * (held + want_legacy) / (held + want_legacy + want_new))
    due = share - held
    room = free - max(0, load.new_running)
    if due >= 1:
        target = min(want_legacy, max_build_threads, due)
        if room >= target:
            return Split(target, free - target, build_items(target, want_legacy, held))
        return Split(0, free - target)
    if room >= 1 and (load.new_waiting <= 0 or load.new_running <= 0):
        threads = min(want_legacy, max_build_threads, room)
        return Split(threads, free - threads, build_items(threads, want_legacy, held))
    return Split(0, free)


# A build is never given more than this many conversions per thread: the local build runner gives
# a build 32 job timeouts to finish, and a manifest of hundreds per thread would outlast
# CodeBuild's (8 hours) long before the controller could see it coming.
MAX_ROUNDS = 32


def build_items(threads: int, waiting: int, held: int) -> int:
    """How many of ``waiting`` legacy conversions a build of ``threads`` threads takes.

    A build's threads are fixed for its life. One that took the whole backlog with a few threads
    would work through it alone long after every other thread had gone idle, so a build takes
    its threads' part of the backlog as if it were spread over every thread the old path holds
    (guided self-scheduling): early builds take large parts, later ones smaller, and they end
    together. The rest waits for the next build, which gets the threads freed meanwhile.
    """
    per_thread = min(MAX_ROUNDS, math.ceil(max(0, waiting) / max(1, held + threads)))
    return max(0, min(waiting, threads * per_thread))


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
