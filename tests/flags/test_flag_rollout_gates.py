"""The rollout plan's ``gates:`` and ``auto:`` sections: defaults, per-group thresholds, and errors
that name the group and the key at fault."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from controller.core.autoadvance import OnFail
from controller.core.domain import Path as ExecPath
from controller.core.errors import InputError
from controller.core.gates import Thresholds
from flags.rollout import load_plan, parse_plan

PLAN = """
gates:
  min_conversions: 200
  success_floor: 97%
  price: {new: 0.00005}
auto:
  bake: 24h
  blackout: [{cron: "0 0 1 * *", for: 72h}]
  on_fail: rollback
  deadline: 3d
groups:
  - name: group-1
    tenant_ids: [1, 2]
    gates: {min_conversions: 50, max_slowdown: 2}
  - name: group-2
    tenant_ids: [3]
"""


def test_thresholds_default_per_plan_and_per_group(tmp_path: Path) -> None:
    path = tmp_path / "rollout.yaml"
    path.write_text(PLAN)
    plan = load_plan(path)
    assert plan.gates.defaults == Thresholds(min_conversions=200, success_floor=0.97)
    assert plan.gates.thresholds("group-1") == Thresholds(
        min_conversions=50, success_floor=0.97, max_slowdown=2.0
    )
    assert plan.gates.thresholds("group-2") == plan.gates.defaults
    assert plan.gates.price_per_second == {ExecPath.NEW: 0.00005}
    auto = plan.auto
    assert auto is not None
    assert (auto.enabled, auto.bake_seconds, auto.deadline_seconds, auto.on_fail) == (
        True,
        86400,
        3 * 86400,
        OnFail.ROLLBACK,
    )
    month_start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()  # the first three days, UTC
    assert auto.blackout_ends(month_start - 1) is None
    assert auto.blackout_ends(month_start + 3600) == month_start + 72 * 3600
    assert auto.blackout_ends(month_start + 72 * 3600) is None


def test_a_plan_without_the_sections_gates_with_the_defaults_and_never_advances_by_itself() -> None:
    plan = parse_plan({"groups": [{"name": "g", "tenant_ids": [1]}]})
    assert plan.gates.thresholds("g") == Thresholds(100, 0.95, 1.5, 0.05)
    assert plan.auto is None


def plan_with(gates: object = None, group_gates: object = None, auto: object = None) -> dict[str, object]:
    group: dict[str, object] = {"name": "group-2", "tenant_ids": [1]}
    if group_gates is not None:
        group["gates"] = group_gates
    doc: dict[str, object] = {"groups": [group]}
    if gates is not None:
        doc["gates"] = gates
    if auto is not None:
        doc["auto"] = auto
    return doc


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (
            plan_with(group_gates={"success_floor": 1.5}),
            "group 'group-2' gates.success_floor: expected a share",
        ),
        (plan_with(group_gates={"success_floor": "95"}), "group 'group-2' gates.success_floor"),
        (plan_with(group_gates={"min_conversions": 0}), "group 'group-2' gates.min_conversions"),
        (
            plan_with(group_gates={"max_slowdown": 0.5}),
            "group 'group-2' gates.max_slowdown: expected a ratio",
        ),
        (
            plan_with(group_gates={"min_conversion": 5}),
            r"group 'group-2' gates: unknown keys \['min_conversion'\]",
        ),
        (plan_with(group_gates=[1]), "group 'group-2' gates: expected a mapping"),
        (plan_with(gates={"max_resubmit_rate": "five"}), r"plan: gates.max_resubmit_rate: expected a share"),
        (plan_with(gates={"price": {"new": -1}}), "gates.price.new: expected a price"),
        (plan_with(gates={"price": {"fargate": 1}}), "gates.price: expected"),
        (plan_with(auto={"bake": "soon"}), "auto.bake: expected a duration"),
        (plan_with(auto={"deadline": "0s"}), "auto.deadline: '0s' is not between"),
        (plan_with(auto={"on_fail": "panic"}), "auto.on_fail: expected pause or rollback"),
        (plan_with(auto={"blackout": [{"cron": "0 0 1 * *"}]}), r"auto.blackout\[0\]: expected"),
        (
            plan_with(auto={"blackout": [{"cron": "0 25 1 * *", "for": "1h"}]}),
            r"auto.blackout\[0\].cron: cron hour",
        ),
        (
            plan_with(auto={"blackout": [{"cron": "300", "for": "1h"}]}),
            r"auto.blackout\[0\].cron: expected five",
        ),
        (plan_with(auto={"enabled": "yes"}), "auto.enabled: expected true or false"),
        (plan_with(auto={"bakes": "1h"}), r"auto: unknown keys \['bakes'\]"),
        ({"groups": [{"name": "g", "tenant_ids": [1]}], "gate": {}}, r"unknown keys \['gate'\]"),
    ],
)
def test_a_bad_threshold_names_its_group_and_key(doc: object, says: str) -> None:
    with pytest.raises(InputError, match=says):
        parse_plan(doc, "plan")
