"""Parity from compared shadows: the Clopper-Pearson bound against known values, noise learned
from A/A runs, the report's JSON shape and each group's verdict."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.parity import (
    Comparison,
    Difference,
    Parity,
    build_report,
    group_verdicts,
    learn_noise,
    parity,
    samples_needed,
    upper_bound,
)
from controller.core.shadow import ShadowKind, ShadowPlan, ShadowRecord, ShadowState, ShadowVerdict, Threshold

# One-sided 95% bounds, from the regularised incomplete beta function (mpmath, 30 digits); the
# first three are the textbook 0.2589, 0.3942 and 0.1023.
KNOWN = [
    (0, 10, 0.25886555089305224),
    (1, 10, 0.3941633024365047),
    (5, 100, 0.1022533776432745),
    (0, 100, 0.029513049607039925),
    (3, 1000, 0.007735244718479459),
    (20, 50, 0.5261197488696556),
    (0, 1, 0.95),
    (1, 2, 0.9746794344808963),
]


@pytest.mark.parametrize(("k", "n", "expected"), KNOWN, ids=[f"{k}-of-{n}" for k, n, _ in KNOWN])
def test_the_bound_matches_known_values(k: int, n: int, expected: float) -> None:
    assert upper_bound(k, n) == pytest.approx(expected, rel=1e-9)


def test_the_bound_with_no_mismatch_is_about_three_over_n() -> None:
    for n in (300, 1000, 10_000):
        assert upper_bound(0, n) == pytest.approx(3 / n, rel=0.01)
    assert upper_bound(0, 0) == 1.0
    assert upper_bound(7, 7) == 1.0


@given(n=st.integers(1, 400), data=st.data())
def test_the_bound_lies_above_the_rate_and_grows_with_mismatches(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n - 1))
    bound = upper_bound(k, n)
    assert k / n < bound <= 1
    assert upper_bound(k + 1, n) > bound


def test_samples_needed_is_the_least_that_bounds_the_rate() -> None:
    n = samples_needed(0.01)
    assert upper_bound(0, n) <= 0.01 < upper_bound(0, n - 1)
    assert n == math.ceil(math.log(0.05) / math.log(0.99))


def _record(
    cid: str,
    tenant: int,
    kind: ShadowKind = ShadowKind.NEW,
    verdict: ShadowVerdict | None = ShadowVerdict.MATCH,
    diffs: list[Difference] | None = None,
    state: ShadowState = ShadowState.COMPARED,
) -> ShadowRecord:
    found = Comparison()
    for d in diffs or []:
        found.add(d)
    return ShadowRecord(
        shadow_id=f"{kind.value}:{cid}",
        conversion_id=cid,
        tenant_id=tenant,
        params={},
        kind=kind,
        state=state,
        verdict=verdict,
        detail=found.to_json(),
        reason="worker exited with status 1" if verdict is ShadowVerdict.SHADOW_FAILED else "",
    )


STAMP = Difference("Form 1", "B2", "Generated at", "2026-01-01", "2026-01-02")
AMOUNT = Difference("Form 1", "D7", "Amount", "10.5", "10.6")
GROUPS = {1: "g1", 2: "g1", 3: "g2"}


def test_noise_is_learned_from_aa_runs_and_not_held_against_the_new_path() -> None:
    shadows = [
        _record("c1", 1, ShadowKind.AA, ShadowVerdict.DIFFERENT, [STAMP]),
        _record("c2", 1, ShadowKind.AA, ShadowVerdict.MATCH),
        _record("c1", 1, ShadowKind.NEW, ShadowVerdict.DIFFERENT, [STAMP]),
        _record("c3", 2, ShadowKind.NEW, ShadowVerdict.DIFFERENT, [STAMP, AMOUNT]),
        _record("c4", 3, ShadowKind.NEW),
    ]
    report = build_report(shadows, GROUPS.get, ShadowPlan())
    assert report["noise"] == [
        {"sheet": "Form 1", "column": "Generated at", "runs": 1, "cells": 1, "aa_samples": 2}
    ]
    g1 = report["groups"][0]
    assert (g1["name"], g1["samples"], g1["mismatches"], g1["matches"]) == ("g1", 2, 1, 1)
    t1, t2 = g1["tenants"]
    assert (t1["tenant_id"], t1["mismatches"], t1["examples"]) == (1, 0, [])
    assert t1["noisy_fields"] == [{"sheet": "Form 1", "column": "Generated at", "cells": 1}]
    assert t2["examples"] == [
        {"conversion_id": "c3", "sheet": "Form 1", "cell": "D7", "legacy": "10.5", "new": "10.6"}
    ]


def test_without_aa_runs_every_difference_is_a_mismatch() -> None:
    report = build_report(
        [_record("c1", 1, ShadowKind.NEW, ShadowVerdict.DIFFERENT, [STAMP])], GROUPS.get, ShadowPlan()
    )
    assert report["groups"][0]["mismatches"] == 1
    assert report["noise"] == []


def test_the_report_has_the_stable_shape() -> None:
    shadows = [_record(f"c{i}", 1 + i % 3) for i in range(6)]
    shadows.append(_record("c9", 3, verdict=ShadowVerdict.SHADOW_FAILED))
    shadows.append(_record("c10", 3, verdict=None, state=ShadowState.DISPATCHED))
    shadows.append(_record("c11", 3, verdict=ShadowVerdict.TOO_LARGE))
    shadows.append(_record("c12", 99))
    report = build_report(shadows, GROUPS.get, ShadowPlan())
    assert set(report) >= {"groups", "noise"}
    names = [g["name"] for g in report["groups"]]
    assert names == ["(ungrouped)", "g1", "g2"]
    for g in report["groups"]:
        assert set(g) >= {"name", "samples", "mismatches", "mismatch_rate_upper95", "tenants"}
        for t in g["tenants"]:
            assert set(t) >= {"tenant_id", "samples", "mismatches", "examples"}
            for e in t["examples"]:
                assert set(e) == {"conversion_id", "sheet", "cell", "legacy", "new"}
    g2 = report["groups"][2]
    assert (g2["samples"], g2["mismatches"], g2["pending"], g2["unreadable"]) == (3, 1, 1, 1)
    assert g2["tenants"][0]["examples"][0]["new"].startswith("failed: ")
    assert g2["mismatch_rate_upper95"] == pytest.approx(upper_bound(1, 3), abs=1e-6)


def test_filters_narrow_what_is_shown() -> None:
    shadows = [_record(f"c{i}", 1 + i % 3) for i in range(6)]
    assert [g["name"] for g in build_report(shadows, GROUPS.get, ShadowPlan(), group="g2")["groups"]] == [
        "g2"
    ]
    only = build_report(shadows, GROUPS.get, ShadowPlan(), tenant=2)["groups"]
    assert [t["tenant_id"] for g in only for t in g["tenants"]] == [2]


def test_a_groups_verdict_follows_its_threshold() -> None:
    assert parity(100, 1, 0.05)[0] is Parity.FAIL
    assert parity(10, 0, 0.05)[0] is Parity.INCONCLUSIVE
    assert parity(samples_needed(0.05), 0, 0.05)[0] is Parity.PASS
    assert parity(20, 0, 0.05, min_samples=20)[0] is Parity.PASS
    plan = ShadowPlan(thresholds={"g1": Threshold(0.5)}, default_threshold=Threshold(0.01))
    shadows = [_record(f"c{i}", 1 + i % 3) for i in range(12)]
    verdicts = group_verdicts(build_report(shadows, GROUPS.get, plan))
    assert verdicts["g1"][0] is Parity.PASS
    assert verdicts["g2"][0] is Parity.INCONCLUSIVE
    assert "samples needed" in verdicts["g2"][1]


def test_learn_noise_counts_runs_and_cells() -> None:
    a, b = Comparison(), Comparison()
    a.add(STAMP)
    a.add(Difference("Form 1", "B3", "Generated at", "x", "y"))
    b.add(STAMP)
    [field] = learn_noise([a, b, Comparison()])
    assert (field.runs, field.cells, field.aa_samples) == (2, 3, 3)
