"""Parity of the new path with the old, from compared shadows: the comparator's answer, noise
learned from A/A runs, the Clopper-Pearson bound, the report and each group's verdict. Pure.

A comparator (``controller.shadow``, or a pluggable one) reads two outputs and returns a
``Comparison``; everything after that — what is noise, what is a mismatch, how sure the numbers
are — is decided here from values. No I/O, no clock, no SciPy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from controller.core.shadow import (
    IgnoreRule,
    ShadowKind,
    ShadowPlan,
    ShadowRecord,
    ShadowState,
    ShadowVerdict,
)

# What one comparison keeps: enough to show and to learn noise from, bounded whatever the outputs.
EXAMPLES_PER_FIELD = 3
MAX_FIELDS = 200
MAX_TEXT = 200
CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class CompareOptions:
    """How outputs are compared: rules for cells known to differ, styles, the numeric tolerance."""

    ignore: tuple[IgnoreRule, ...] = ()
    compare_styles: bool = False
    rel_tol: float = 1e-9


@dataclass(frozen=True, slots=True)
class Difference:
    """One cell (or sheet, or property) that differs; values are shown as short text."""

    sheet: str
    cell: str
    column: str  # the column's header (or letter) that noise is learned by
    legacy: str
    new: str


@dataclass
class Comparison:
    """What a comparator found: differing cells counted per (sheet, column), a few shown each."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: list[Difference] = field(default_factory=list)
    truncated: bool = False  # more distinct fields differed than are kept

    @property
    def equal(self) -> bool:
        return not self.counts and not self.truncated

    def add(self, diff: Difference) -> None:
        key = (diff.sheet, diff.column)
        seen = self.counts.get(key)
        if seen is None and len(self.counts) >= MAX_FIELDS:
            self.truncated = True
            return
        self.counts[key] = (seen or 0) + 1
        if (seen or 0) < EXAMPLES_PER_FIELD:
            self.examples.append(diff)

    def to_json(self) -> str:
        """The findings as the ledger keeps them (``ShadowRecord.detail``)."""
        return json.dumps(
            {
                "fields": [[s, c, n] for (s, c), n in self.counts.items()],
                "examples": [
                    {"sheet": d.sheet, "cell": d.cell, "column": d.column, "legacy": d.legacy, "new": d.new}
                    for d in self.examples
                ],
                "truncated": self.truncated,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Comparison:
        if not text:
            return cls()
        doc = json.loads(text)
        return cls(
            counts={(str(s), str(c)): int(n) for s, c, n in doc.get("fields", [])},
            examples=[Difference(**e) for e in doc.get("examples", [])],
            truncated=bool(doc.get("truncated", False)),
        )


# A pluggable comparator: ``CUTOVER_SHADOW_COMPARATOR=package.module:callable`` names one.
Comparator = Callable[[Any, Any, CompareOptions], Comparison]


def shown(value: object) -> str:
    """A value as a report shows it: type-faithful and short."""
    if value is None:
        return "(empty)"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


# -- statistics ----------------------------------------------------------------------------------


def _log_choose(n: int, k: int) -> list[float]:
    """log C(n, i) for i = 0..k, by the recurrence C(n, i) = C(n, i - 1) * (n - i + 1) / i."""
    out = [0.0]
    for i in range(1, k + 1):
        out.append(out[-1] + math.log(n - i + 1) - math.log(i))
    return out


def _binomial_cdf(k: int, n: int, p: float, log_choose: Sequence[float]) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space so large n neither over- nor underflows."""
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = sum(math.exp(log_choose[i] + i * log_p + (n - i) * log_q) for i in range(k + 1))
    return min(1.0, total)


def upper_bound(mismatches: int, samples: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen as ``mismatches`` in ``samples``.

    The p at which seeing ``mismatches`` or fewer has probability ``1 - confidence``; with none in
    n samples that is ``1 - (1 - confidence) ** (1 / n)``, about 3/n at 95%. Found by bisection on
    the binomial distribution (the Beta quantile, without SciPy).
    """
    if samples <= 0:
        return 1.0
    if not 0 <= mismatches <= samples:
        raise ValueError(f"{mismatches} mismatches in {samples} samples")
    if mismatches == samples:
        return 1.0
    alpha = 1 - confidence
    if mismatches == 0:
        return 1.0 - math.pow(alpha, 1 / samples)
    log_choose = _log_choose(samples, mismatches)
    low, high = mismatches / samples, 1.0
    for _ in range(60):  # halves the interval to below 1e-18
        mid = (low + high) / 2
        if _binomial_cdf(mismatches, samples, mid, log_choose) > alpha:
            low = mid
        else:
            high = mid
    return high


def samples_needed(max_rate: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples whose bound, with no mismatch, is at most ``max_rate``."""
    if not 0 < max_rate < 1:
        return 1
    return max(1, math.ceil(math.log(1 - confidence) / math.log1p(-max_rate)))


# -- noise ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoisyField:
    """A (sheet, column) that differed between two old-path runs of the same conversion."""

    sheet: str
    column: str
    runs: int  # A/A runs in which it differed
    cells: int  # differing cells over those runs
    aa_samples: int  # A/A runs compared in all

    def as_json(self) -> dict[str, Any]:
        return {
            "sheet": self.sheet,
            "column": self.column,
            "runs": self.runs,
            "cells": self.cells,
            "aa_samples": self.aa_samples,
        }


def learn_noise(aa: Iterable[Comparison]) -> list[NoisyField]:
    """Fields that differed in any A/A comparison, most often first."""
    runs: dict[tuple[str, str], int] = {}
    cells: dict[tuple[str, str], int] = {}
    total = 0
    for comparison in aa:
        total += 1
        for key, n in comparison.counts.items():
            runs[key] = runs.get(key, 0) + 1
            cells[key] = cells.get(key, 0) + n
    ordered = sorted(runs, key=lambda k: (-runs[k], k))
    return [NoisyField(s, c, runs[(s, c)], cells[(s, c)], total) for s, c in ordered]


def beyond_noise(comparison: Comparison, noisy: frozenset[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields of a comparison that are not known noise."""
    return [key for key in comparison.counts if key not in noisy]


# -- the report ----------------------------------------------------------------------------------

UNGROUPED = "(ungrouped)"
MAX_EXAMPLES = 10  # per tenant


class Parity(StrEnum):
    """A group's parity verdict, as the gate reads it."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass
class _Tally:
    samples: int = 0
    mismatches: int = 0
    matches: int = 0
    unreadable: int = 0
    pending: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    noisy: dict[tuple[str, str], int] = field(default_factory=dict)


def _judge(
    record: ShadowRecord, noisy: frozenset[tuple[str, str]]
) -> tuple[bool, list[dict[str, Any]], dict[tuple[str, str], int]]:
    """Whether a compared new-path shadow is a mismatch, its examples, and its noisy fields."""
    if record.verdict is ShadowVerdict.SHADOW_FAILED:
        example = {"sheet": "", "cell": "", "legacy": "succeeded", "new": f"failed: {record.reason}"}
        return True, [{"conversion_id": record.conversion_id, **example}], {}
    comparison = Comparison.from_json(record.detail)
    real = beyond_noise(comparison, noisy)
    examples = [
        {
            "conversion_id": record.conversion_id,
            "sheet": d.sheet,
            "cell": d.cell,
            "legacy": d.legacy,
            "new": d.new,
        }
        for d in comparison.examples
        if (d.sheet, d.column) in real
    ]
    noise = {k: n for k, n in comparison.counts.items() if k in noisy}
    return bool(real) or comparison.truncated, examples, noise


def build_report(
    shadows: Sequence[ShadowRecord],
    group_of: Callable[[int], str | None],
    plan: ShadowPlan,
    *,
    group: str | None = None,
    tenant: int | None = None,
    include: Sequence[str] = (),
) -> dict[str, Any]:
    """The parity report (``cutover shadow``, ``GET /shadow``).

    ``{"groups": [{"name", "samples", "mismatches", "mismatch_rate_upper95", "tenants":
    [{"tenant_id", "samples", "mismatches", "examples": [{"conversion_id", "sheet", "cell",
    "legacy", "new"}]}]}], "noise": [...]}``, plus counts of matches, pending and unreadable
    shadows, noisy fields and each group's verdict. Noise is learned from every A/A shadow, so a
    filter narrows what is shown, never what is learned. Groups named in ``include`` are shown
    (inconclusive) even without a shadow.
    """
    aa = [
        Comparison.from_json(r.detail)
        for r in shadows
        if r.kind is ShadowKind.AA
        and r.state is ShadowState.COMPARED
        and r.verdict in (ShadowVerdict.MATCH, ShadowVerdict.DIFFERENT)
    ]
    noise = learn_noise(aa)
    noisy = frozenset((n.sheet, n.column) for n in noise)
    tallies: dict[str, dict[int, _Tally]] = {}
    for r in shadows:
        if r.kind is not ShadowKind.NEW or (tenant is not None and r.tenant_id != tenant):
            continue
        name = group_of(r.tenant_id) or UNGROUPED
        if group is not None and name != group:
            continue
        t = tallies.setdefault(name, {}).setdefault(r.tenant_id, _Tally())
        _count(t, r, noisy)
    for name in include:
        if group is None or name == group:
            tallies.setdefault(name, {})
    groups = [_group_doc(name, per_tenant, plan) for name, per_tenant in sorted(tallies.items())]
    return {
        "groups": groups,
        "noise": [n.as_json() for n in noise],
        "aa_samples": len(aa),
    }


def _count(t: _Tally, r: ShadowRecord, noisy: frozenset[tuple[str, str]]) -> None:
    if r.state.live or r.state.ran:
        t.pending += 1
        return
    if r.state is not ShadowState.COMPARED or r.verdict is None:
        return
    if not r.verdict.counts:
        t.unreadable += r.verdict in (ShadowVerdict.TOO_LARGE, ShadowVerdict.UNREADABLE)
        return
    t.samples += 1
    mismatch, examples, noise = _judge(r, noisy)
    if mismatch:
        t.mismatches += 1
        room = MAX_EXAMPLES - len(t.examples)
        t.examples.extend(examples[: max(0, room)])
    else:
        t.matches += 1
    for key, n in noise.items():
        t.noisy[key] = t.noisy.get(key, 0) + n


def _group_doc(name: str, per_tenant: Mapping[int, _Tally], plan: ShadowPlan) -> dict[str, Any]:
    samples = sum(t.samples for t in per_tenant.values())
    mismatches = sum(t.mismatches for t in per_tenant.values())
    threshold = plan.threshold(name)
    verdict, why = parity(samples, mismatches, threshold.max_mismatch_rate, threshold.min_samples)
    return {
        "name": name,
        "samples": samples,
        "mismatches": mismatches,
        "mismatch_rate_upper95": round(upper_bound(mismatches, samples), 6),
        "matches": sum(t.matches for t in per_tenant.values()),
        "pending": sum(t.pending for t in per_tenant.values()),
        "unreadable": sum(t.unreadable for t in per_tenant.values()),
        "parity": verdict.value,
        "parity_reason": why,
        "max_mismatch_rate": threshold.max_mismatch_rate,
        "tenants": [
            {
                "tenant_id": tenant_id,
                "samples": t.samples,
                "mismatches": t.mismatches,
                "mismatch_rate_upper95": round(upper_bound(t.mismatches, t.samples), 6),
                "matches": t.matches,
                "pending": t.pending,
                "unreadable": t.unreadable,
                "noisy_fields": [
                    {"sheet": s, "column": c, "cells": n} for (s, c), n in sorted(t.noisy.items())
                ],
                "examples": t.examples,
            }
            for tenant_id, t in sorted(per_tenant.items())
        ],
    }


def parity(
    samples: int, mismatches: int, max_rate: float, min_samples: int | None = None
) -> tuple[Parity, str]:
    """A group's verdict: any mismatch beyond noise fails it; too few samples to bound the rate
    under ``max_rate`` leave it inconclusive; otherwise it passes."""
    if mismatches > 0:
        return Parity.FAIL, f"{mismatches} of {samples} shadows differ beyond noise"
    needed = min_samples if min_samples is not None else samples_needed(max_rate)
    if samples < needed:
        return (
            Parity.INCONCLUSIVE,
            f"{samples} of {needed} samples needed to bound the mismatch rate under {max_rate:g}",
        )
    bound = upper_bound(0, samples)
    return Parity.PASS, f"{samples} shadows match; mismatch rate under {bound:.4f} (95%)"


def group_verdicts(report: Mapping[str, Any]) -> dict[str, tuple[Parity, str]]:
    """Each group's parity verdict, from a report ``build_report`` made."""
    return {g["name"]: (Parity(g["parity"]), str(g["parity_reason"])) for g in report["groups"]}
