"""Rollout gates: the checks, a group's verdict and the whole gate, from finished conversions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.domain import ConversionState, Path
from controller.core.gates import (
    Baseline,
    GatePolicy,
    GateVerdict,
    GroupSpec,
    PathEvidence,
    Thresholds,
    check_duration,
    check_resubmits,
    check_success_floor,
    check_success_vs_legacy,
    judge,
    judge_group,
    moved_at,
    refusal,
)
from controller.core.ports import FinishedConversion
from controller.core.stats import wilson

P, F, INC = GateVerdict.PASS, GateVerdict.FAIL, GateVerdict.INCONCLUSIVE
T = Thresholds()
NOW = 10_000_000.0


def evidence(ok: int, failed: int = 0, *, resubmitted: int = 0, seconds: float = 10.0) -> PathEvidence:
    return PathEvidence(
        finished=ok + failed,
        succeeded=ok,
        failed=failed,
        failed_first_attempt=failed + resubmitted,
        failed_after_resubmit=min(failed, resubmitted),
        resubmitted=resubmitted,
        resubmits=resubmitted,
        durations=(seconds,) * ok,
    )


def row(
    tenant: int,
    path: Path,
    *,
    ok: bool = True,
    at: float,
    attempts: int = 1,
    seconds: float = 10.0,
    work: float | None = 8.0,
):
    state = ConversionState.SUCCEEDED if ok else ConversionState.FAILED
    return FinishedConversion(tenant, path, state, attempts, at, at + seconds, seconds, work)


# -- the checks, as decision tables ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "failed", "verdict"),
    [
        pytest.param(100, 0, P, id="100-of-100-lower-bound-96.3"),
        pytest.param(99, 1, INC, id="one-failure-in-100-straddles"),
        pytest.param(990, 10, P, id="one-percent-of-1000"),
        pytest.param(70, 30, F, id="thirty-percent-failing"),
        pytest.param(0, 0, INC, id="no-data"),
    ],
)
def test_success_floor(ok, failed, verdict):
    check = check_success_floor(evidence(ok, failed), T)
    assert check.verdict is verdict
    assert check.reason.endswith(verdict.value)


def test_success_floor_speaks_like_an_on_call_engineer():
    check = check_success_floor(evidence(997, 3, resubmitted=3), Thresholds(success_floor=0.98))
    assert check.reason == (
        "new path: 3 of 1000 failed (3 after resubmit); Wilson lower bound of success 99.1% ≥ 98.0%: pass"
    )
    assert check.statistic == pytest.approx(wilson(997, 1000)[0])


@pytest.mark.parametrize(
    ("new", "old", "verdict"),
    [
        pytest.param(evidence(100), evidence(500), P, id="both-clean"),
        pytest.param(evidence(97, 3), evidence(995, 5), F, id="three-points-worse-beyond-chance"),
        pytest.param(evidence(99, 1), evidence(99, 1), P, id="equal"),
        pytest.param(evidence(100), PathEvidence(), INC, id="no-old-path-data"),
        pytest.param(PathEvidence(), evidence(100), INC, id="no-new-path-data"),
    ],
)
def test_success_against_the_old_path(new, old, verdict):
    assert check_success_vs_legacy(new, old, Baseline.BEFORE).verdict is verdict


def spread(values: list[float]) -> PathEvidence:
    return PathEvidence(len(values), len(values), durations=tuple(sorted(values)))


@pytest.mark.parametrize(
    ("new", "old", "verdict"),
    [
        pytest.param([10.0 + i % 5 for i in range(50)], [10.0 + i % 5 for i in range(50)], P, id="same"),
        pytest.param(
            [14.0 + i % 5 for i in range(50)], [10.0 + i % 5 for i in range(50)], P, id="1.3x-allowed"
        ),
        pytest.param(
            [30.0 + i % 5 for i in range(50)], [10.0 + i % 5 for i in range(50)], F, id="2.7x-slower"
        ),
        pytest.param([30.0, 8.0, 31.0], [10.0, 40.0, 12.0], INC, id="slower-median-not-beyond-chance"),
        pytest.param([], [10.0], INC, id="no-new-run-times"),
        pytest.param([10.0], [], INC, id="no-old-run-times"),
    ],
)
def test_duration(new, old, verdict):
    check = check_duration(spread(new), spread(old), T)
    assert check.verdict is verdict
    if verdict is F:
        assert check.detail["effect_size"] == pytest.approx(1.0)
        assert "Mann-Whitney" in check.reason


@pytest.mark.parametrize(
    ("finished", "resubmitted", "verdict"),
    [(100, 0, P), (100, 5, P), (100, 8, INC), (100, 20, F), (0, 0, INC)],
)
def test_resubmit_rate(finished, resubmitted, verdict):
    assert check_resubmits(evidence(finished, resubmitted=resubmitted), T).verdict is verdict


# -- a group's verdict ---------------------------------------------------------------------------


def test_a_clean_group_with_a_modest_sample_passes_the_defaults():
    checks, verdict, reasons = judge_group(evidence(100), evidence(400), Baseline.BEFORE, T)
    assert verdict is P
    assert [c.name for c in checks] == [
        "minimum_conversions",
        "success_floor",
        "success_vs_legacy",
        "duration",
        "resubmit_rate",
    ]
    assert len(reasons) == len(checks)


def test_below_the_minimum_even_a_glaring_failure_is_inconclusive():
    checks, verdict, reasons = judge_group(evidence(20, 30), evidence(400), Baseline.BEFORE, T)
    assert verdict is INC
    assert all(c.verdict is INC for c in checks)
    assert reasons[0] == "new path: 50 of the 100 finished conversions needed: inconclusive"
    assert any("30 of 50 failed" in r and "judged from 100 conversions on" in r for r in reasons)


def run_times(n: int) -> st.SearchStrategy[tuple[float, ...]]:
    """``n`` run times: a short drawn pattern repeated (drawing hundreds of floats one by one is slow)."""
    pattern = st.lists(st.floats(1, 100), min_size=1, max_size=8)
    return pattern.map(lambda p: tuple(sorted(p[i % len(p)] for i in range(n))))


@st.composite
def group_evidence(draw):
    """A group's new and old path figures and thresholds; about a quarter of the draws pass."""
    ok = draw(st.integers(0, 400))
    failed = draw(st.integers(0, 12))
    resubmitted = draw(st.integers(0, min(ok + failed, 20)))
    old_ok = draw(st.integers(0, 400))
    old_times = draw(run_times(old_ok))
    old = PathEvidence(old_ok + 3, old_ok, 3, durations=old_times)
    same_speed = draw(st.booleans()) and old_times
    new_times = (
        tuple(sorted(old_times[i % len(old_times)] for i in range(ok))) if same_speed else draw(run_times(ok))
    )
    new = PathEvidence(
        ok + failed, ok, failed, resubmitted, min(failed, resubmitted), resubmitted, resubmitted, new_times
    )
    t = Thresholds(
        min_conversions=draw(st.integers(1, 300)),
        success_floor=draw(st.floats(0.5, 0.99)),
        max_slowdown=draw(st.floats(1, 3)),
        max_resubmit_rate=draw(st.floats(0, 0.2)),
    )
    return new, old, t


def plus_successes(e: PathEvidence, count: int, seconds: float) -> PathEvidence:
    durations = tuple(sorted([*e.durations, *([seconds] * count)]))
    return PathEvidence(
        e.finished + count,
        e.succeeded + count,
        e.failed,
        e.failed_first_attempt,
        e.failed_after_resubmit,
        e.resubmitted,
        e.resubmits,
        durations,
    )


@given(group_evidence(), st.integers(1, 300))
def test_adding_successes_never_turns_pass_into_fail(case, more):
    """More first-attempt successes (no slower than any old-path run) never fail a passing group."""
    new, old, t = case
    _, before, _ = judge_group(new, old, Baseline.BEFORE, t)
    fastest = min(old.durations, default=1.0)
    _, after, _ = judge_group(plus_successes(new, more, fastest), old, Baseline.BEFORE, t)
    if before is P:
        assert after is not F


@given(group_evidence())
def test_below_the_minimum_is_always_inconclusive(case):
    new, old, t = case
    _, verdict, _ = judge_group(new, old, Baseline.BEFORE, t)
    if new.finished < t.min_conversions:
        assert verdict is INC


@given(group_evidence())
def test_a_check_without_data_is_inconclusive_never_pass(case):
    new, old, t = case
    empty = PathEvidence()
    for check in (
        check_success_floor(empty, t),
        check_resubmits(empty, t),
        check_success_vs_legacy(new, empty, Baseline.NONE),
        check_success_vs_legacy(empty, old, Baseline.BEFORE),
        check_duration(new, empty, t),
        check_duration(empty, old, t),
    ):
        assert check.verdict is INC
    _, verdict, _ = judge_group(new, empty, Baseline.NONE, t)
    assert verdict is not P


@given(group_evidence())
def test_inconclusive_never_passes(case):
    new, old, t = case
    checks, verdict, _ = judge_group(new, old, Baseline.BEFORE, t)
    if any(c.verdict is INC for c in checks):
        assert verdict is not P


# -- evidence and the whole gate -----------------------------------------------------------------


def test_evidence_counts_first_attempt_failures_and_failures_after_resubmit_apart():
    e = PathEvidence.of(
        [
            row(1, Path.NEW, at=0),
            row(1, Path.NEW, at=0, attempts=2),  # failed once, then succeeded on its clone
            row(1, Path.NEW, ok=False, at=0, attempts=2),  # failed on its clone too
            row(1, Path.NEW, ok=False, at=0),  # failed with no resubmit left
            row(1, Path.NEW, at=0, seconds=30.0, work=None),  # the job gave no run time of its own
        ]
    )
    assert (e.finished, e.succeeded, e.failed) == (5, 3, 2)
    assert (e.failed_first_attempt, e.failed_after_resubmit, e.resubmitted, e.resubmits) == (3, 1, 2, 2)
    assert (e.durations, e.turnarounds, e.untimed) == ((8.0, 8.0), (10.0, 10.0, 30.0), 1)
    assert not e.timed()
    assert e.to_json(None)["duration_basis"] == "dispatch to outcome"
    assert e.to_json(None)["duration_p50_seconds"] == 10.0


def test_duration_compares_the_jobs_own_run_times_and_never_one_measure_with_the_other():
    """Queueing counts in dispatch-to-outcome, and it depends on the budget, not the path: the
    jobs' own times are used when both paths give them, else dispatch-to-outcome on both."""
    queued_new = PathEvidence(50, 50, durations=(10.0,) * 50, turnarounds=(60.0,) * 50)
    old = PathEvidence(50, 50, durations=(10.0,) * 50, turnarounds=(12.0,) * 50)
    check = check_duration(queued_new, old, T)
    assert check.verdict is P
    assert check.reason.startswith("median run 10 s on the new path against 10 s on the old (1.00x")
    untimed_old = PathEvidence(50, 50, turnarounds=(12.0,) * 50, untimed=50)
    check = check_duration(queued_new, untimed_old, T)
    assert check.verdict is F
    assert check.reason.startswith("median time from dispatch to outcome 60 s on the new path against 12 s")


def test_moved_at_is_the_first_new_claim_after_the_last_old_one():
    rows = [
        row(1, Path.LEGACY, at=100),
        row(1, Path.NEW, at=200),  # moved
        row(1, Path.LEGACY, at=300),  # rolled back
        row(1, Path.NEW, at=400),  # moved again
        row(1, Path.NEW, at=500),
        row(2, Path.LEGACY, at=350),
        row(2, Path.NEW, at=450),
        row(3, Path.NEW, at=50),  # no old-path claim in the rows: not known
    ]
    assert moved_at(rows, frozenset({1, 2, 3})) == 400
    assert moved_at(rows, frozenset({3})) is None


GROUPS = [
    GroupSpec("g1", frozenset({1, 2})),
    GroupSpec("g2", frozenset({3, 4})),
    GroupSpec("g3", frozenset({5})),
]


def history(new_fail_every: int = 0) -> list[FinishedConversion]:
    """Old path for everyone until NOW - 3600, then g1 (tenants 1, 2) on the new path."""
    rows = []
    for i in range(120):
        for tenant in (1, 2, 3, 4, 5):
            rows.append(row(tenant, Path.LEGACY, at=NOW - 7200 + i))
    for i in range(60):
        for tenant in (1, 2):
            fails = new_fail_every and i % new_fail_every == 0
            rows.append(row(tenant, Path.NEW, ok=not fails, at=NOW - 3600 + i, attempts=2 if fails else 1))
        for tenant in (3, 4, 5):
            rows.append(row(tenant, Path.LEGACY, at=NOW - 3600 + i))
    return rows


def test_the_gate_judges_only_groups_on_the_new_path_since_they_moved():
    report = judge(GROUPS, frozenset({1, 2}), history(), GatePolicy(), now=NOW)
    assert [g.name for g in report.groups] == ["g1"]
    g1 = report.groups[0]
    assert g1.moved_at == NOW - 3600
    assert (g1.new.finished, g1.legacy.finished, g1.basis) == (120, 240, Baseline.BEFORE)
    assert report.verdict is P
    doc = report.to_json()
    assert set(doc) >= {"window", "groups", "verdict"}
    group = doc["groups"][0]
    assert set(group) >= {"name", "tenants", "migrated", "verdict", "reasons", "new", "legacy", "checks"}
    assert (group["tenants"], group["migrated"], group["legacy"]["basis"]) == (2, 2, Baseline.BEFORE.value)
    assert all(set(c) >= {"name", "statistic", "threshold", "verdict"} for c in group["checks"])


def test_a_group_failing_on_the_new_path_fails_the_gate_and_names_itself():
    report = judge(GROUPS, frozenset({1, 2}), history(new_fail_every=3), GatePolicy(), now=NOW)
    assert report.verdict is F
    assert refusal(report).startswith("g1 is fail (new path: 40 of 120 failed (40 after resubmit)")


def test_without_the_tenants_own_history_the_old_path_still_running_is_the_baseline():
    rows = [r for r in history() if not (r.tenant_id in (1, 2) and r.path is Path.LEGACY)]
    report = judge(GROUPS, frozenset({1, 2}), rows, GatePolicy(), now=NOW)
    g1 = report.groups[0]
    assert g1.basis is Baseline.STILL_LEGACY
    assert g1.legacy.finished == 540  # tenants 3, 4 and 5 over the week (the move is not in the rows)


def test_a_fixed_window_and_one_group():
    report = judge(
        GROUPS, frozenset({1, 2, 3}), history(), GatePolicy(), now=NOW, window_seconds=600, only="g1"
    )
    assert [g.name for g in report.groups] == ["g1"]
    assert report.groups[0].since == NOW - 600
    assert report.groups[0].new.finished == 0


def test_nothing_on_the_new_path_passes_with_a_reason():
    report = judge(GROUPS, frozenset(), history(), GatePolicy(), now=NOW)
    assert (report.verdict, report.groups) == (P, ())
    assert "nothing to judge" in report.reasons[0]


def test_prices_give_cost_per_conversion():
    policy = GatePolicy(price_per_second={Path.NEW: 0.01})
    doc = judge(GROUPS, frozenset({1, 2}), history(), policy, now=NOW).to_json()
    assert doc["groups"][0]["new"]["cost_per_conversion"] == pytest.approx(0.08)  # 8 s of run at 0.01/s
    assert doc["groups"][0]["legacy"]["cost_per_conversion"] is None


# -- the shadows' parity as one more check ---------------------------------------------------------


@pytest.mark.parametrize(
    ("parity", "verdict", "first_reason"),
    [
        pytest.param(P, P, "new path: 0 of 120 failed", id="matching-shadows-keep-a-pass"),
        pytest.param(F, F, "shadows: 2 of 30 differ: fail", id="a-mismatch-fails-a-clean-group"),
        pytest.param(INC, INC, "shadows: 3 of 14 samples: inconclusive", id="too-few-samples-never-pass"),
    ],
)
def test_parity_joins_a_moved_groups_checks(parity, verdict, first_reason):
    why = {P: "30 shadows match", F: "2 of 30 differ", INC: "3 of 14 samples"}[parity]
    report = judge(GROUPS, frozenset({1, 2}), history(), GatePolicy(), now=NOW, parity={"g1": (parity, why)})
    g1 = report.groups[0]
    assert [c.name for c in g1.checks][-1] == "parity"
    assert (g1.verdict, report.verdict) == (verdict, verdict)
    assert g1.reasons[0].startswith(first_reason)
    assert any(r == f"shadows: {why}: {parity.value}" for r in g1.reasons)


def test_a_parity_mismatch_fails_a_group_below_the_minimum_of_conversions():
    """Too few conversions decide nothing, but a changed file is a changed file."""
    few = [r for r in history() if not (r.path is Path.NEW and r.finished_at > NOW - 3590)]
    clean = judge(GROUPS, frozenset({1, 2}), few, GatePolicy(), now=NOW)
    assert clean.verdict is INC
    report = judge(
        GROUPS, frozenset({1, 2}), few, GatePolicy(), now=NOW, parity={"g1": (F, "1 of 20 differ")}
    )
    assert report.verdict is F
    assert report.groups[0].reasons == ("shadows: 1 of 20 differ: fail",)


def test_parity_of_a_group_not_on_the_new_path_is_not_judged():
    report = judge(GROUPS, frozenset({1, 2}), history(), GatePolicy(), now=NOW, parity={"g2": (F, "x")})
    assert [g.name for g in report.groups] == ["g1"]
    assert report.verdict is P
