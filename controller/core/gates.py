"""Rollout gates: is it safe to move the next group? Judged in finished conversions, per group,
new path against old. Pure: finished conversions, thresholds and the time in; evidence, checks
and a three-way verdict (pass, fail, inconclusive) with reasons in words out. No I/O, no clock:
reading the ledger and the plan is the caller's business.

A check without data, or a group with fewer finished new-path conversions than its minimum, is
``inconclusive``, and inconclusive never passes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from controller.core.domain import ConversionState, Path
from controller.core.ports import FinishedConversion
from controller.core.stats import mann_whitney, newcombe, quantile, wilson

MAX_WINDOW_SECONDS = 7 * 86400  # evidence older than a week says little about the path today
ALPHA = 0.05  # one-sided significance of the duration test


class GateVerdict(StrEnum):
    """A check's, a group's or the whole gate's answer."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


def combine(verdicts: Iterable[GateVerdict]) -> GateVerdict:
    """Fail if any fails; else inconclusive if any is; else pass."""
    seen = set(verdicts)
    if GateVerdict.FAIL in seen:
        return GateVerdict.FAIL
    if GateVerdict.INCONCLUSIVE in seen:
        return GateVerdict.INCONCLUSIVE
    return GateVerdict.PASS


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What one group must show before the next moves. The defaults are met by a clean group with
    a modest sample: 100 successes out of 100 give a Wilson lower bound of 96.3%."""

    min_conversions: int = 100
    success_floor: float = 0.95
    max_slowdown: float = 1.5
    max_resubmit_rate: float = 0.05


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Thresholds per group (each already merged over the plan's defaults), and the optional price
    of one second of a conversion's run per path, for cost per conversion."""

    defaults: Thresholds = field(default_factory=Thresholds)
    per_group: Mapping[str, Thresholds] = field(default_factory=dict)
    price_per_second: Mapping[Path, float] = field(default_factory=dict)

    def thresholds(self, group: str) -> Thresholds:
        """The thresholds that apply to ``group``."""
        return self.per_group.get(group, self.defaults)


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One rollout group as the gate needs it."""

    name: str
    tenant_ids: frozenset[int]


# -- evidence -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathEvidence:
    """What one path did for a set of tenants over a window.

    ``failed_first_attempt`` counts conversions whose first attempt failed, rescued by a
    clone-and-resubmit or not; ``failed_after_resubmit`` those that failed for good after one.
    Of the successful ones, ``durations`` are the sorted run times by the jobs' own account,
    ``untimed`` how many gave none, and ``turnarounds`` the sorted times from dispatch to outcome
    (queueing included, known for all).
    """

    finished: int = 0
    succeeded: int = 0
    failed: int = 0
    failed_first_attempt: int = 0
    failed_after_resubmit: int = 0
    resubmitted: int = 0
    resubmits: int = 0
    durations: tuple[float, ...] = ()
    turnarounds: tuple[float, ...] = ()
    untimed: int = 0

    @classmethod
    def of(cls, rows: Iterable[FinishedConversion]) -> PathEvidence:
        """Tally finished conversions."""
        finished = succeeded = first = after = resubmitted = resubmits = 0
        durations: list[float] = []
        turnarounds: list[float] = []
        for r in rows:
            finished += 1
            extra = max(0, r.attempts - 1)
            resubmits += extra
            resubmitted += extra > 0
            if r.state is ConversionState.SUCCEEDED:
                succeeded += 1
                if r.work_seconds is not None:
                    durations.append(max(0.0, r.work_seconds))
                if r.seconds is not None:
                    turnarounds.append(max(0.0, r.seconds))
            else:
                after += extra > 0
            first += extra > 0 or r.state is ConversionState.FAILED
        return cls(
            finished,
            succeeded,
            finished - succeeded,
            first,
            after,
            resubmitted,
            resubmits,
            tuple(sorted(durations)),
            tuple(sorted(turnarounds)),
            succeeded - len(durations),
        )

    def timed(self) -> bool:
        """True when every successful conversion gave its own run time."""
        return bool(self.durations) and not self.untimed

    def times(self, own: bool) -> tuple[float, ...]:
        """The run times by the jobs' own account (``own``), or from dispatch to outcome."""
        return self.durations if own else self.turnarounds

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None

    def to_json(self, price_per_second: float | None) -> dict[str, Any]:
        rate = self.success_rate
        times = self.times(self.timed())
        p50 = quantile(times, 0.5) if times else None
        p95 = quantile(times, 0.95) if times else None
        mean = sum(times) / len(times) if times else None
        cost = None if price_per_second is None or mean is None else round(mean * price_per_second, 6)
        return {
            "finished": self.finished,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failed_first_attempt": self.failed_first_attempt,
            "failed_after_resubmit": self.failed_after_resubmit,
            "resubmitted": self.resubmitted,
            "resubmits": self.resubmits,
            "success_rate": None if rate is None else round(rate, 6),
            "duration_p50_seconds": None if p50 is None else round(p50, 3),
            "duration_p95_seconds": None if p95 is None else round(p95, 3),
            "duration_basis": "the jobs' own run times" if self.timed() else "dispatch to outcome",
            "cost_per_conversion": cost,
        }


class Baseline(StrEnum):
    """Which old-path conversions the new path of a group is compared with."""

    BEFORE = "same tenants before the move"
    STILL_LEGACY = "tenants still on the old path"
    NONE = "none"


# -- checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One comparison: its statistic, the threshold it is held to, the verdict and why."""

    name: str
    statistic: float | None
    threshold: float
    verdict: GateVerdict
    reason: str
    detail: Mapping[str, float | int | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "statistic": None if self.statistic is None else round(self.statistic, 6),
            "threshold": self.threshold,
            "verdict": self.verdict.value,
            "reason": self.reason,
            **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.detail.items()},
        }


def _pct(x: float, against: float | None = None) -> str:
    """``x`` as a percentage, with as many decimals as it takes to tell it from ``against``."""
    digits = 1
    while against is not None and digits < 4 and f"{x * 100:.{digits}f}" == f"{against * 100:.{digits}f}":
        digits += 1
    return f"{x * 100:.{digits}f}%"


def _secs(x: float) -> str:
    return f"{x:.3g} s" if x < 100 else f"{x:,.0f} s"


def _no_data(name: str, threshold: float, what: str) -> Check:
    return Check(name, None, threshold, GateVerdict.INCONCLUSIVE, f"{what}: inconclusive")


def check_minimum(new: PathEvidence, t: Thresholds) -> Check:
    """Enough finished new-path conversions to judge at all."""
    n, need = new.finished, t.min_conversions
    if n >= need:
        reason = f"new path: {n} conversions finished (at least {need}): pass"
        return Check("minimum_conversions", n, need, GateVerdict.PASS, reason)
    return Check(
        "minimum_conversions",
        n,
        need,
        GateVerdict.INCONCLUSIVE,
        f"new path: {n} of the {need} finished conversions needed: inconclusive",
    )


def check_success_floor(new: PathEvidence, t: Thresholds) -> Check:
    """Pass when the Wilson 95% lower bound of the new path's success rate reaches the floor; fail
    when even the upper bound stays under it; in between, more conversions are needed."""
    floor = t.success_floor
    if not new.finished:
        return _no_data("success_floor", floor, "new path: no finished conversions")
    low, high = wilson(new.succeeded, new.finished)
    failed = f"new path: {new.failed} of {new.finished} failed"
    if new.failed_after_resubmit:
        failed += f" ({new.failed_after_resubmit} after resubmit)"
    if low >= floor:
        verdict, words = GateVerdict.PASS, f"Wilson lower bound of success {_pct(low, floor)} ≥ {_pct(floor)}"
    elif high < floor:
        verdict, words = GateVerdict.FAIL, f"even the Wilson upper bound {_pct(high, floor)} < {_pct(floor)}"
    else:
        verdict = GateVerdict.INCONCLUSIVE
        words = f"Wilson interval of success {_pct(low)} to {_pct(high)} straddles {_pct(floor)}"
    return Check(
        "success_floor",
        low,
        floor,
        verdict,
        f"{failed}; {words}: {verdict.value}",
        {"wilson_low": low, "wilson_high": high},
    )


def check_success_vs_legacy(new: PathEvidence, old: PathEvidence, basis: Baseline) -> Check:
    """Fail when the new path's success rate is below the old path's beyond chance (the 95%
    interval of the difference lies wholly below zero)."""
    if not new.finished or not old.finished:
        which = "new" if not new.finished else "old"
        return _no_data("success_vs_legacy", 0.0, f"no finished conversions on the {which} path to compare")
    d, low, high = newcombe(new.succeeded, new.finished, old.succeeded, old.finished)
    rates = (
        f"success {_pct(new.succeeded / new.finished)} on the new path against "
        f"{_pct(old.succeeded / old.finished)} on the old ({basis.value}, {old.finished} conversions)"
    )
    interval = f"95% interval of the difference {low * 100:+.1f} to {high * 100:+.1f} points"
    if high < 0:
        verdict, words = GateVerdict.FAIL, f"worse beyond chance ({interval})"
    else:
        verdict, words = GateVerdict.PASS, f"not worse beyond chance ({interval})"
    return Check(
        "success_vs_legacy",
        d,
        0.0,
        verdict,
        f"{rates}: {words}: {verdict.value}",
        {"difference_low": low, "difference_high": high, "legacy_finished": old.finished},
    )


def check_duration(new: PathEvidence, old: PathEvidence, t: Thresholds) -> Check:
    """Median run time of the new path against the old: the jobs' own run times when every
    successful conversion on both sides gave one, else the time from dispatch to outcome on both
    (never one measure against the other). Passes within the allowed ratio; fails only when the new
    path is slower by more than that ratio and a Mann-Whitney U test of the new times against the
    old times scaled by the ratio says so beyond chance; otherwise inconclusive."""
    allowed = t.max_slowdown
    own = new.timed() and old.timed()
    new_times, old_times = new.times(own), old.times(own)
    if not new_times or not old_times:
        which = "new" if not new_times else "old"
        return _no_data("duration", allowed, f"no successful {which}-path run times")
    new_median, old_median = quantile(new_times, 0.5), quantile(old_times, 0.5)
    ratio = new_median / old_median if old_median > 0 else (1.0 if new_median <= 0 else float("inf"))
    test = mann_whitney(new_times, [d * allowed for d in old_times])
    effect = mann_whitney(new_times, old_times).effect
    what = "median run" if own else "median time from dispatch to outcome"
    medians = (
        f"{what} {_secs(new_median)} on the new path against {_secs(old_median)} on the old "
        f"({ratio:.2f}x, allowed {allowed:.2f}x)"
    )
    if ratio <= allowed:
        verdict, words = GateVerdict.PASS, ""
    elif test.p_greater < ALPHA:
        verdict = GateVerdict.FAIL
        words = (
            f"; slower than allowed beyond chance (Mann-Whitney p = {test.p_greater:.2g}; "
            f"the new path took longer in {effect:.0%} of pairs)"
        )
    else:
        verdict = GateVerdict.INCONCLUSIVE
        words = f"; not beyond chance yet (Mann-Whitney p = {test.p_greater:.2g})"
    return Check(
        "duration",
        ratio,
        allowed,
        verdict,
        f"{medians}{words}: {verdict.value}",
        {
            "p_value": test.p_greater,
            "effect_size": effect,
            "new_median": new_median,
            "old_median": old_median,
        },
    )


def check_resubmits(new: PathEvidence, t: Thresholds) -> Check:
    """Share of new-path conversions that needed a clone-and-resubmit: pass at or under the maximum,
    fail when the Wilson lower bound of the share is over it, inconclusive in between."""
    limit = t.max_resubmit_rate
    if not new.finished:
        return _no_data("resubmit_rate", limit, "new path: no finished conversions")
    rate = new.resubmitted / new.finished
    low, _ = wilson(new.resubmitted, new.finished)
    counts = f"resubmits: {new.resubmitted} of {new.finished} new-path conversions ({_pct(rate)})"
    if rate <= limit:
        verdict, words = GateVerdict.PASS, f"≤ {_pct(limit)}"
    elif low > limit:
        verdict, words = (
            GateVerdict.FAIL,
            f"> {_pct(limit)} beyond chance (Wilson lower bound {_pct(low, limit)})",
        )
    else:
        verdict, words = GateVerdict.INCONCLUSIVE, f"> {_pct(limit)}, not beyond chance yet"
    reason = f"{counts} {words}: {verdict.value}"
    return Check("resubmit_rate", rate, limit, verdict, reason, {"wilson_low": low})


# -- groups ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupGate:
    """One group's evidence, checks and verdict over its window."""

    name: str
    tenants: int
    migrated: int
    since: float
    until: float
    moved_at: float | None
    new: PathEvidence
    legacy: PathEvidence
    basis: Baseline
    checks: tuple[Check, ...]
    verdict: GateVerdict
    reasons: tuple[str, ...]

    def to_json(self, policy: GatePolicy) -> dict[str, Any]:
        return {
            "name": self.name,
            "tenants": self.tenants,
            "migrated": self.migrated,
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "window": {"since": self.since, "until": self.until, "moved_at": self.moved_at},
            "new": self.new.to_json(policy.price_per_second.get(Path.NEW)),
            "legacy": self.legacy.to_json(policy.price_per_second.get(Path.LEGACY))
            | {"basis": self.basis.value},
            "checks": [c.to_json() for c in self.checks],
        }


def judge_group(
    new: PathEvidence, legacy: PathEvidence, basis: Baseline, t: Thresholds
) -> tuple[tuple[Check, ...], GateVerdict, tuple[str, ...]]:
    """The checks of one group and its verdict. Below the minimum every check is inconclusive,
    whatever its figures say: too few conversions decide nothing either way."""
    minimum = check_minimum(new, t)
    others = [
        check_success_floor(new, t),
        check_success_vs_legacy(new, legacy, basis),
        check_duration(new, legacy, t),
        check_resubmits(new, t),
    ]
    if minimum.verdict is not GateVerdict.PASS:
        others = [
            Check(
                c.name,
                c.statistic,
                c.threshold,
                GateVerdict.INCONCLUSIVE,
                c.reason.rsplit(": ", 1)[0] + f" (judged from {t.min_conversions} conversions on)",
                c.detail,
            )
            if c.verdict is not GateVerdict.INCONCLUSIVE
            else c
            for c in others
        ]
    checks = (minimum, *others)
    verdict = combine(c.verdict for c in checks)
    if minimum.verdict is not GateVerdict.PASS:
        verdict = GateVerdict.INCONCLUSIVE
    # A passing group says what it showed first and how much of it after; any other says why.
    passed = verdict is GateVerdict.PASS
    shown = [*others, minimum] if passed else [c for c in checks if c.verdict is verdict]
    return checks, verdict, tuple(c.reason for c in shown)


def moved_at(rows: Iterable[FinishedConversion], tenants: frozenset[int]) -> float | None:
    """When the group's tenants were last moved to the new path, as the ledger shows it: per tenant,
    the first claim on the new path after its last claim on the old one; the earliest over the
    group. None when no tenant shows such a change in the rows given."""
    last_legacy: dict[int, float] = {}
    for r in rows:
        if r.tenant_id in tenants and r.path is Path.LEGACY:
            last_legacy[r.tenant_id] = max(last_legacy.get(r.tenant_id, r.claimed_at), r.claimed_at)
    first_new: dict[int, float] = {}
    for r in rows:
        if r.tenant_id in last_legacy and r.path is Path.NEW and r.claimed_at > last_legacy[r.tenant_id]:
            first_new[r.tenant_id] = min(first_new.get(r.tenant_id, r.claimed_at), r.claimed_at)
    return min(first_new.values()) if first_new else None


def _baseline(before: PathEvidence, others: PathEvidence, minimum: int) -> tuple[PathEvidence, Baseline]:
    if before.finished >= minimum or (before.finished and before.finished >= others.finished):
        return before, Baseline.BEFORE
    if others.finished:
        return others, Baseline.STILL_LEGACY
    return PathEvidence(), Baseline.NONE


@dataclass(frozen=True, slots=True)
class GateReport:
    """The gate over every group that is (partly) on the new path."""

    until: float
    window_seconds: float | None
    groups: tuple[GroupGate, ...]
    verdict: GateVerdict
    reasons: tuple[str, ...]
    policy: GatePolicy = field(default_factory=GatePolicy)

    def group(self, name: str) -> GroupGate | None:
        return next((g for g in self.groups if g.name == name), None)

    def blocking(self) -> list[GroupGate]:
        """The groups that keep the next group from moving (fail or inconclusive)."""
        return [g for g in self.groups if g.verdict is not GateVerdict.PASS]

    def to_json(self) -> dict[str, Any]:
        return {
            "window": {
                "until": self.until,
                "seconds": self.window_seconds,
                "max_seconds": MAX_WINDOW_SECONDS,
                "default": "since each group was last moved to the new path, at most 7 days",
            },
            "groups": [g.to_json(self.policy) for g in self.groups],
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
        }


def judge(
    groups: Sequence[GroupSpec],
    migrated: frozenset[int],
    rows: Sequence[FinishedConversion],
    policy: GatePolicy,
    *,
    now: float,
    window_seconds: float | None = None,
    only: str | None = None,
    parity: Mapping[str, tuple[GateVerdict, str]] | None = None,
) -> GateReport:
    """The gate for every group with tenants on the new path (or just ``only``).

    ``rows`` are the conversions finished since ``now - MAX_WINDOW_SECONDS`` (or the window, when
    longer). By default each group's window starts when it was last moved; ``window_seconds`` fixes
    it instead. The old path is judged on the same tenants before they moved, or on the tenants
    still on the old path in the window when those are too few. ``parity`` is the verdict and reason
    of each group's shadow runs (only for groups that had any): it joins that group's checks.
    """
    by_tenant: dict[int, list[FinishedConversion]] = defaultdict(list)
    for r in rows:
        by_tenant[r.tenant_id].append(r)
    judged: list[GroupGate] = []
    for spec in groups:
        moved = spec.tenant_ids & migrated
        if not moved or (only is not None and spec.name != only):
            continue
        group_gate = _judge_one(spec, moved, migrated, by_tenant, rows, policy, now, window_seconds)
        if parity is not None and spec.name in parity:
            group_gate = with_parity(group_gate, *parity[spec.name])
        judged.append(group_gate)
    verdict = combine(g.verdict for g in judged)
    if judged:
        reasons = tuple(f"{g.name}: {g.verdict.value}" for g in judged)
    else:
        reasons = ("no rollout group has tenants on the new path: nothing to judge",)
    return GateReport(now, window_seconds, tuple(judged), verdict, reasons, policy)


def _judge_one(
    spec: GroupSpec,
    moved: frozenset[int],
    migrated: frozenset[int],
    by_tenant: Mapping[int, list[FinishedConversion]],
    rows: Sequence[FinishedConversion],
    policy: GatePolicy,
    now: float,
    window_seconds: float | None,
) -> GroupGate:
    t = policy.thresholds(spec.name)
    mine = [r for tenant in moved for r in by_tenant.get(tenant, ())]
    when = moved_at(mine, moved)
    floor = now - MAX_WINDOW_SECONDS
    if window_seconds is not None:
        since = now - window_seconds
    else:
        since = max(when, floor) if when is not None else floor
    new = PathEvidence.of(
        r
        for r in mine
        if r.path is Path.NEW and r.finished_at >= since and (when is None or r.claimed_at >= when)
    )
    before = PathEvidence.of(
        r for r in mine if r.path is Path.LEGACY and when is not None and r.claimed_at < when
    )
    others = PathEvidence.of(
        r for r in rows if r.path is Path.LEGACY and r.tenant_id not in migrated and r.finished_at >= since
    )
    legacy, basis = _baseline(before, others, t.min_conversions)
    checks, verdict, reasons = judge_group(new, legacy, basis, t)
    return GroupGate(
        spec.name,
        len(spec.tenant_ids),
        len(moved),
        since,
        now,
        when,
        new,
        legacy,
        basis,
        checks,
        verdict,
        reasons,
    )


def with_parity(group: GroupGate, verdict: GateVerdict, why: str) -> GroupGate:
    """``group`` with the parity of its shadow runs as one more check. A mismatch beyond noise
    fails the group however few conversions it has finished: a changed file is a changed file."""
    check = Check("parity", None, 0.0, verdict, f"shadows: {why}: {verdict.value}")
    checks = (*group.checks, check)
    combined = combine((group.verdict, verdict))
    if combined is group.verdict:
        reasons = (*group.reasons, check.reason) if verdict is combined else group.reasons
    else:
        reasons = (check.reason,)
    return replace(group, checks=checks, verdict=combined, reasons=reasons)


def refusal(report: GateReport) -> str:
    """Why an advance is refused, naming each blocking group with its failing checks (or, when it is
    inconclusive, what it lacks first); empty when nothing blocks."""
    parts = []
    for g in report.blocking():
        why = g.reasons if g.verdict is GateVerdict.FAIL else g.reasons[:1]
        parts.append(f"{g.name} is {g.verdict.value} ({'; '.join(why)})")
    if not parts and report.verdict is not GateVerdict.PASS:
        parts = list(report.reasons)
    return "; ".join(parts)
