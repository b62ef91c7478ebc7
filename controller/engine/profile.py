"""What a simulation is fed: how long each tenant's conversions take on each path, how often they
fail, how long each path takes to provision, and when the conversions arrive.

A profile is a value. It comes from a file of distributions (``controller.engine.profile_file``)
or from the ledger's history (``controller.engine.history``); this module only holds it and
answers the simulation's questions with numbers drawn from uniforms it is given, so it never
draws randomness of its own and never reads anything.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

from controller.core.domain import Path

_Z99 = NormalDist().inv_cdf(0.99)  # a log-normal's p99 sits this many sigmas above its median
_STANDARD = NormalDist()
# Draws kept per conversion: a duration and a failure draw for each of this many attempts (a
# conversion retried more often reuses them from the start, which changes no property a run has).
ATTEMPT_DRAWS = 4


@dataclass(frozen=True, slots=True)
class Durations:
    """A duration distribution: log-normal by its median and p99, or the durations seen (sorted),
    whose empirical quantiles are used when there are any."""

    median: float
    p99: float
    samples: tuple[float, ...] = ()

    @property
    def sigma(self) -> float:
        return math.log(self.p99 / self.median) / _Z99 if self.p99 > self.median else 0.0

    def quantile(self, u: float) -> float:
        """The duration at quantile ``u`` (0 < u < 1)."""
        if self.samples:
            position = u * (len(self.samples) - 1)
            low = int(position)
            high = min(low + 1, len(self.samples) - 1)
            return self.samples[low] + (self.samples[high] - self.samples[low]) * (position - low)
        if self.sigma == 0.0:
            return self.median
        return self.median * math.exp(self.sigma * _STANDARD.inv_cdf(min(max(u, 1e-12), 1 - 1e-12)))

    def mean(self) -> float:
        if self.samples:
            return sum(self.samples) / len(self.samples)
        return self.median * math.exp(self.sigma**2 / 2)

    def scaled(self, factor: float) -> Durations:
        """The same shape, every duration multiplied by ``factor``."""
        return Durations(self.median * factor, self.p99 * factor, tuple(s * factor for s in self.samples))

    @classmethod
    def of(cls, seen: Sequence[float]) -> Durations:
        """The empirical distribution of ``seen`` (non-empty)."""
        ordered = tuple(sorted(seen))
        return cls(_at(ordered, 0.5), _at(ordered, 0.99), ordered)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"median_seconds": round(self.median, 3), "p99_seconds": round(self.p99, 3)}
        if self.samples:
            out["samples"] = len(self.samples)
        return out


def _at(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How one tenant's conversions behave on one path."""

    durations: Durations
    failure_rate: float = 0.0  # of a first attempt
    # of an attempt after a resubmit, when it differs: a conversion whose first attempt fails once
    # (a time-out) mostly succeeds the second time; one whose data is bad fails every time
    retry_failure_rate: float | None = None

    def rate(self, attempt: int) -> float:
        """The chance that attempt number ``attempt`` (1: the first) fails."""
        if attempt > 1 and self.retry_failure_rate is not None:
            return self.retry_failure_rate
        return self.failure_rate

    def describe(self) -> dict[str, Any]:
        out = {**self.durations.describe(), "failure_rate": round(self.failure_rate, 4)}
        if self.retry_failure_rate is not None:
            out["retry_failure_rate"] = round(self.retry_failure_rate, 4)
        return out


@dataclass(frozen=True, slots=True)
class Span:
    """Seconds between ``low`` and ``high`` (spread evenly); ``low == high`` is a fixed delay. With
    ``samples`` (the delays seen, sorted) it is their empirical distribution instead, and ``low``
    and ``high`` only say where its middle 80% lies. With ``by_load`` the delays are also kept by
    how many were starting at once when each began (1, 2-3, 4-7, ...: the bucket's lowest count),
    and a start at a given load draws from the delays seen at the nearest load: on one machine a
    worker's start-up grows with how many start beside it."""

    low: float
    high: float
    samples: tuple[float, ...] = ()
    by_load: tuple[tuple[int, tuple[float, ...]], ...] = ()

    def at(self, u: float, load: int = 0) -> float:
        if load > 0 and self.by_load:
            want = load_bucket(load).bit_length()
            _, near = min(self.by_load, key=lambda b: (abs(b[0].bit_length() - want), -b[0]))
            return _at(near, u)
        if self.samples:
            return _at(self.samples, u)
        return self.low + (self.high - self.low) * u

    def describe(self) -> list[float] | float:
        return self.low if self.low == self.high else [self.low, self.high]

    @classmethod
    def of(cls, seen: Sequence[float]) -> Span:
        """The empirical distribution of the delays ``seen`` (non-empty)."""
        ordered = tuple(sorted(seen))
        return cls(round(_at(ordered, 0.1), 3), round(_at(ordered, 0.9), 3), ordered)

    @classmethod
    def of_starts(
        cls,
        starts: Sequence[tuple[float, float]],
        among: Sequence[tuple[float, float]] = (),
        values: Sequence[float] | None = None,
    ) -> Span:
        """The delays of ``starts`` (each when it took its slot and when its work began; non-empty),
        or ``values``, one per start, kept by how many of ``among`` (default: ``starts``) were
        starting at once when each took its slot, itself included."""
        counted = among or starts
        slots = sorted(s for s, _ in counted)
        begun = sorted(b for _, b in counted)
        seen = [max(0.0, b - s) for s, b in starts] if values is None else list(values)
        buckets: dict[int, list[float]] = {}
        for (slot, _), value in zip(starts, seen, strict=True):
            load = bisect.bisect_right(slots, slot) - bisect.bisect_right(begun, slot)
            buckets.setdefault(load_bucket(load), []).append(value)
        span = cls.of(seen)
        by_load = tuple((k, tuple(sorted(v))) for k, v in sorted(buckets.items()))
        return replace(span, by_load=by_load) if len(by_load) > 1 else span


class _Sharing:
    """How the cores were shared over time by the phases ``among`` (each when it began and ended):
    the work one phase under way would have done by any moment (``by``), and when (``when``)."""

    def __init__(self, among: Sequence[tuple[float, float]], cores: float, overlap: float) -> None:
        events = sorted([(s, 1) for s, _ in among] + [(b, -1) for _, b in among])
        self.times: list[float] = []
        self.done: list[float] = []  # by each change in how many are under way, from the first
        self.after: list[float] = []  # the rate from each change on
        n, total, last = 0, 0.0, events[0][0] if events else 0.0
        for t, step in events:
            total += (t - last) * sharing_rate(n, cores, overlap)
            n, last = n + step, t
            self.times.append(t)
            self.done.append(total)
            self.after.append(sharing_rate(n, cores, overlap))

    def by(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t) - 1
        return 0.0 if i < 0 else self.done[i] + (t - self.times[i]) * self.after[i]

    def when(self, work: float) -> float:
        j = max(0, bisect.bisect_right(self.done, work) - 1)
        return self.times[j] + (work - self.done[j]) / self.after[j]


def shared_work(
    phases: Sequence[tuple[float, float]],
    among: Sequence[tuple[float, float]],
    cores: float,
    overlap: float = 0.0,
) -> list[float]:
    """Each of ``phases``' own CPU work (each when it began and ended: a start, from taking its
    slot to its work beginning), had every phase of ``among`` (``phases`` among them) under way
    shared the cores as ``sharing_rate`` says: the time it took, counted at its share."""
    sharing = _Sharing(among, cores, overlap)
    return [max(0.0, sharing.by(end) - sharing.by(begin)) for begin, end in phases]


def sharing_rate(n: int, cores: float, overlap: float) -> float:
    """How fast each of ``n`` phases under way moves on ``cores``: a core each while there are
    enough; beyond that an even share of the cores, plus ``overlap`` of a core for each phase beyond
    them (what a start spends waiting on something other than a core leaves the core to another)."""
    if n <= cores:
        return 1.0
    return min(1.0, (cores + overlap * (n - cores)) / n)


def start_overlap(
    by_path: Sequence[Sequence[tuple[float, float]]], cores: float, recent: int = 5000
) -> float:
    """The ``overlap`` (0 to 0.2, by hundredths) under which each path's mean own work best
    explains every start's delay, given the crowd it started in: of the delays each start would
    have had with its path's mean work under the sharing it saw, the ones nearest those seen.
    Fitted on the ``recent`` latest starts (by when they took their slots)."""
    among = sorted(s for starts in by_path for s in starts)[-recent:]
    since = among[0][0] if among else 0.0
    by_path = [[s for s in starts if s[0] >= since] for starts in by_path]
    best, best_error = 0.0, math.inf
    for k in range(21):
        overlap = k / 100
        sharing = _Sharing(among, cores, overlap)
        error = 0.0
        for starts in by_path:
            if not starts:
                continue
            mean = sum(max(0.0, sharing.by(b) - sharing.by(s)) for s, b in starts) / len(starts)
            error += sum((sharing.when(sharing.by(s) + mean) - b) ** 2 for s, b in starts)
        if error < best_error - 1e-12:
            best, best_error = overlap, error
    return best


def load_bucket(load: int) -> int:
    """The bucket of a count of starts at once: 1, 2 (2-3), 4 (4-7), 8 (8-15), ..."""
    return 1 << (max(1, load).bit_length() - 1)


# Cited in the README: Fargate tasks take about 30 s to 2 min to start; a CodeBuild build about a
# minute to provision.
DEFAULT_PROVISIONING: Mapping[Path, Span] = {Path.NEW: Span(30.0, 120.0), Path.LEGACY: Span(60.0, 60.0)}


@dataclass(frozen=True, slots=True)
class Arrival:
    """Conversions of one tenant arriving at one moment (seconds from the profile's start)."""

    at: float
    tenant_id: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class Work:
    """One conversion as a simulation knows it: who, when it arrives, and its draws (uniforms in
    (0, 1)): a duration and a failure draw per attempt, then one for each provisioning."""

    conversion_id: str
    tenant_id: int
    arrives_at: float
    draws: tuple[float, ...]

    def duration_draw(self, attempt: int) -> float:
        return self.draws[2 * ((attempt - 1) % ATTEMPT_DRAWS)]

    def failure_draw(self, attempt: int) -> float:
        return self.draws[2 * ((attempt - 1) % ATTEMPT_DRAWS) + 1]

    def provisioning_draw(self, attempt: int) -> float:
        return self.draws[2 * ATTEMPT_DRAWS + (attempt - 1) % ATTEMPT_DRAWS]


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything a simulation needs to know about the work, and where it came from."""

    name: str
    source: str
    default: Mapping[Path, Behaviour]
    arrivals: tuple[Arrival, ...]
    tenants: Mapping[int, Mapping[Path, Behaviour]] = field(default_factory=dict)
    provisioning: Mapping[Path, Span] = field(default_factory=lambda: dict(DEFAULT_PROVISIONING))
    # Seconds a new-path job keeps its slot after its work ends (its process or container
    # stopping, the path noticing) before the path reports it finished.
    release: float = 0.0
    # Seconds a build's thread spends between one conversion's end and its next one's start (taking
    # the next item, writing the last one's result): the build's own pace beyond the work itself.
    build_gap: float = 0.0
    window: tuple[float, float] | None = None  # the history it was taken from (epoch seconds)
    notes: tuple[str, ...] = ()
    # Cores every start shares (both paths' workers start on one machine: the local runners);
    # ``provisioning`` is then each start's own CPU work, not its delay. None: starts share nothing.
    cores: float | None = None
    start_overlap: float = 0.0  # with ``cores``: see ``sharing_rate``
    # With ``cores``: a new-path job's release (in place of ``release``) as the work of a core it
    # needs, moving as fast as the starts under way leave each: quick on a quiet machine, slow in a
    # crowd of starts, and no part of that crowd itself.
    release_work: Span | None = None

    def behaviour(self, tenant_id: int, path: Path) -> Behaviour:
        """How ``tenant_id`` behaves on ``path``: as seen there; else as seen on the other path,
        scaled by how the paths compare overall; else the path's default."""
        own = self.tenants.get(tenant_id, {})
        seen = own.get(path)
        if seen is not None:
            return seen
        other = Path.NEW if path is Path.LEGACY else Path.LEGACY
        elsewhere = own.get(other)
        if elsewhere is not None:
            ratio = self.default[path].durations.median / self.default[other].durations.median
            usual = self.default[path]
            return Behaviour(elsewhere.durations.scaled(ratio), usual.failure_rate, usual.retry_failure_rate)
        return self.default[path]

    def duration(self, work: Work, path: Path, attempt: int) -> float:
        return self.behaviour(work.tenant_id, path).durations.quantile(work.duration_draw(attempt))

    def fails(self, work: Work, path: Path, attempt: int) -> bool:
        return work.failure_draw(attempt) < self.behaviour(work.tenant_id, path).rate(attempt)

    def provisioning_for(self, path: Path, u: float, load: int = 0) -> float:
        """A start-up on ``path`` for draw ``u``, ``load`` starting at once (0: not counted)."""
        return self.provisioning[path].at(u, load)

    @property
    def conversions(self) -> int:
        return sum(a.count for a in self.arrivals)

    @property
    def tenant_ids(self) -> frozenset[int]:
        return frozenset(a.tenant_id for a in self.arrivals)

    def workload(self, seed: int) -> list[Work]:
        """The conversions of this profile with their draws: the same seed, the same work."""
        rng = random.Random(seed)  # noqa: S311 - a simulation's draws, not secrets
        out: list[Work] = []
        width = 3 * ATTEMPT_DRAWS
        for a in sorted(self.arrivals, key=lambda a: (a.at, a.tenant_id)):
            for _ in range(a.count):
                draws = tuple(rng.random() or 0.5 for _ in range(width))
                out.append(Work(f"sim-{len(out):07d}-t{a.tenant_id}", a.tenant_id, a.at, draws))
        return out

    def describe(self) -> dict[str, Any]:
        """The profile as ``cutover forecast --json`` shows it."""
        return {
            "name": self.name,
            "source": self.source,
            "window": list(self.window) if self.window else None,
            "conversions": self.conversions,
            "tenants": len(self.tenant_ids),
            "arrival_seconds": round(max((a.at for a in self.arrivals), default=0.0), 3),
            "defaults": {p.value: self.default[p].describe() for p in Path},
            "tenants_profiled": len(self.tenants),
            "provisioning_seconds": {p.value: self.provisioning[p].describe() for p in Path},
            "release_seconds": round(self.release, 3),
            "build_gap_seconds": round(self.build_gap, 3),
            "start_cores": self.cores,
            "start_overlap": self.start_overlap,
            "release_work_seconds": self.release_work.describe() if self.release_work else None,
            "notes": list(self.notes),
        }


def spread(conversions: int, tenants: Sequence[int], within: float, seed: int, skew: float) -> list[Arrival]:
    """``conversions`` arrivals over ``tenants`` in ``within`` seconds, deterministic in ``seed``.

    ``skew`` 0 gives every tenant the same share; above 0 the shares are log-normal with that
    sigma (a few busy tenants, many quiet ones).
    """
    if not tenants or conversions <= 0:
        return []
    rng = random.Random(seed)  # noqa: S311 - a simulation's arrivals, not secrets
    weights = [rng.lognormvariate(0.0, skew) if skew > 0 else 1.0 for _ in tenants]
    cumulative: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    out = []
    for _ in range(conversions):
        tenant = tenants[min(bisect.bisect_left(cumulative, rng.random() * total), len(tenants) - 1)]
        out.append(Arrival(round(rng.random() * within, 3), tenant))
    return sorted(out, key=lambda a: (a.at, a.tenant_id))
