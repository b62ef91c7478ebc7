"""Sampling: deterministic per conversion id (replicas agree, a restart does not resample) and
accurate to its rate; the plan's ``shadow:`` section is validated whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.domain import CONVERSION_ID_CHARS
from controller.core.errors import InputError
from controller.core.shadow import (
    ShadowKind,
    ShadowPlan,
    ShadowScope,
    ShadowWhen,
    parse_shadow_section,
    sampled,
    sampled_for_noise,
)

ids = st.from_regex(rf"\A{CONVERSION_ID_CHARS}\Z")


@given(cid=ids, rate=st.floats(0, 1))
def test_sampling_is_a_function_of_the_id(cid: str, rate: float) -> None:
    assert sampled(cid, rate) == sampled(cid, rate)
    assert not sampled(cid, 0.0)
    assert sampled(cid, 1.0)


@given(cid=ids, low=st.floats(0, 1), high=st.floats(0, 1))
def test_a_higher_rate_keeps_every_id_a_lower_one_took(cid: str, low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    assert not sampled(cid, low) or sampled(cid, high)


@settings(max_examples=20, deadline=None)
@given(rate=st.sampled_from([0.01, 0.1, 0.25, 0.5, 0.9]), prefix=st.text("abcxyz", min_size=1, max_size=4))
def test_sampling_is_rate_accurate(rate: float, prefix: str) -> None:
    n = 20_000
    taken = sum(sampled(f"{prefix}-{i}", rate) for i in range(n))
    sd = (n * rate * (1 - rate)) ** 0.5
    assert abs(taken - n * rate) < 5 * sd, (taken, n * rate)


def test_noise_sampling_is_independent_of_shadow_sampling() -> None:
    n = 20_000
    both = sum(sampled(f"c{i}", 0.5) and sampled_for_noise(f"c{i}", 0.5) for i in range(n))
    assert abs(both - n / 4) < 5 * (n * 0.25 * 0.75) ** 0.5


def test_scope_takes_the_plan_groups_and_the_global_rate() -> None:
    scope = ShadowScope(ShadowPlan(groups=("g",), rate=1.0, aa_rate=1.0), frozenset({7}), global_rate=0.0)
    assert scope.kinds("c1", 7) == (ShadowKind.NEW, ShadowKind.AA)
    assert scope.kinds("c1", 8) == ()
    everyone = ShadowScope(global_rate=1.0)
    assert everyone.kinds("c1", 8) == (ShadowKind.NEW,)
    assert not ShadowScope().enabled


GROUPS = ["g1", "g2"]


def test_a_full_section_is_read() -> None:
    plan = parse_shadow_section(
        {
            "groups": ["g2"],
            "rate": 0.2,
            "max_per_tenant_per_day": 5,
            "aa_rate": 0.1,
            "max_mismatch_rate": 0.02,
            "thresholds": {"g2": {"min_samples": 50}},
            "ignore": [{"sheet": "Form *", "column": "Generated at"}, {"cells": "A1:B2"}],
            "compare_styles": True,
            "when": "idle",
        },
        GROUPS,
        "plan.yaml",
    )
    assert plan.groups == ("g2",)
    assert plan.when is ShadowWhen.IDLE
    assert parse_shadow_section({}, GROUPS, "plan.yaml").when is ShadowWhen.SPARE
    assert plan.threshold("g2").min_samples == 50
    assert plan.threshold("g2").max_mismatch_rate == 0.02
    assert plan.threshold("g1").min_samples is None
    assert plan.ignore[1].covers("Any", "x", 2, 2)
    assert not plan.ignore[1].covers("Any", "x", 3, 2)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be a mapping"),
        ({"grups": []}, "unknown keys"),
        ({"groups": ["g9"]}, "no group 'g9'"),
        ({"groups": "g1"}, "list of group names"),
        ({"rate": 1.5}, "rate must be from 0 to 1"),
        ({"rate": True}, "rate must be a number"),
        ({"max_per_tenant_per_day": 0}, "max_per_tenant_per_day must be a whole number"),
        ({"max_mismatch_rate": 0}, "must be above 0"),
        ({"thresholds": {"g9": {}}}, "no group 'g9'"),
        ({"thresholds": {"g1": {"min": 3}}}, "unknown keys"),
        ({"ignore": [{"sheet": "x"}]}, "needs a column header pattern or a cell range"),
        ({"ignore": [{"cells": "B2:A1"}]}, "runs backwards"),
        ({"ignore": [{"cells": "1A"}]}, "not a cell or range"),
        ({"compare_styles": "yes"}, "true or false"),
        ({"when": "quiet"}, r"when must be one of spare, idle \(got 'quiet'\)"),
        ({"when": ["idle"]}, "when must be one of spare, idle"),
    ],
)
def test_a_bad_section_is_refused_naming_the_key(raw: object, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        parse_shadow_section(raw, GROUPS, "plan.yaml")
    assert str(info.value).startswith("plan.yaml: shadow")


def test_the_rollout_plan_carries_its_shadow_section(tmp_path: Path) -> None:
    from flags.rollout import load_plan

    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "groups:\n  - {name: g1, tenant_ids: [1, 2]}\n  - {name: g2, tenant_ids: ['3-5']}\n"
        "shadow: {groups: [g2], rate: 0.5, ignore: [{column: 'Generated at'}]}\n"
    )
    plan = load_plan(plan_file)
    assert plan.shadow.groups == ("g2",)
    assert plan.shadow.ignore[0].column == "Generated at"
    plan_file.write_text("groups:\n  - {name: g1, tenant_ids: [1]}\nshadow: {groups: [g3]}\n")
    with pytest.raises(InputError, match=r"plan.yaml: shadow.groups: no group 'g3'"):
        load_plan(plan_file)
    plan_file.write_text("groups:\n  - {name: g1, tenant_ids: [1]}\n")
    assert load_plan(plan_file).shadow == ShadowPlan()
