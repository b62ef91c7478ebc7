"""Recent routing history from the ledger's per-minute decision totals: the share of work per path
over the last hour, and which flag versions decisions were made under lately (version skew).

Pure: takes the rows of ``Ledger.decisions_since`` and a time, returns values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controller.core.domain import Path

DecisionRow = tuple[int, Path, str, int]  # epoch minute, path, flag version ('' = none), claims


@dataclass(frozen=True, slots=True)
class MinuteShare:
    """Decisions made in one minute, per path."""

    minute: int
    legacy: int = 0
    new: int = 0

    @property
    def total(self) -> int:
        return self.legacy + self.new

    @property
    def new_share(self) -> float | None:
        """Fraction of the minute's decisions that went to the new path (None when there were none)."""
        return self.new / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class VersionUse:
    """Decisions made under one flag version inside the window (``None`` = no flag)."""

    flag_version: str | None
    legacy: int
    new: int
    first_minute: int
    last_minute: int


@dataclass(frozen=True, slots=True)
class VersionSkew:
    """The flag versions decisions were made under in the window, most recent first."""

    window_seconds: int
    versions: tuple[VersionUse, ...]

    @property
    def skewed(self) -> bool:
        """More than one version in the window: a rollout, a rollback, or replicas that disagree."""
        return len(self.versions) > 1


def minute_series(rows: Iterable[DecisionRow], now: float, minutes: int = 60) -> list[MinuteShare]:
    """One entry per minute of the last ``minutes`` (the current one last), zeros where none."""
    last = int(now // 60)
    first = last - minutes + 1
    legacy: dict[int, int] = {}
    new: dict[int, int] = {}
    for minute, path, _version, n in rows:
        if first <= minute <= last:
            bucket = new if path is Path.NEW else legacy
            bucket[minute] = bucket.get(minute, 0) + n
    return [MinuteShare(m, legacy.get(m, 0), new.get(m, 0)) for m in range(first, last + 1)]


def version_skew(rows: Iterable[DecisionRow], now: float, window_seconds: int = 600) -> VersionSkew:
    """Which flag versions routed work in the last ``window_seconds``."""
    since = int((now - window_seconds) // 60)
    seen: dict[str, list[int]] = {}  # version -> [legacy, new, first, last]
    for minute, path, version, n in rows:
        if minute < since:
            continue
        use = seen.setdefault(version, [0, 0, minute, minute])
        use[1 if path is Path.NEW else 0] += n
        use[2] = min(use[2], minute)
        use[3] = max(use[3], minute)
    versions = sorted(
        (VersionUse(v or None, u[0], u[1], u[2], u[3]) for v, u in seen.items()),
        key=lambda u: (u.last_minute, u.first_minute),
        reverse=True,
    )
    return VersionSkew(window_seconds, tuple(versions))


def from_first_activity(series: Sequence[MinuteShare], keep_at_least: int = 10) -> list[MinuteShare]:
    """``series`` from its first busy minute on (at least its last ``keep_at_least`` minutes), so
    a service started a few minutes ago fills the chart instead of three bars at its right edge."""
    first = next((i for i, m in enumerate(series) if m.total), len(series))
    return list(series[min(first, max(0, len(series) - keep_at_least)) :])
