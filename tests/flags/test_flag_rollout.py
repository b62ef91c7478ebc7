"""The rollout plan file: groups of ids and ranges, and errors that point at the entry at fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli.demo import rollout_groups
from controller.core.errors import InputError
from flags.rollout import load_plan, parse_plan, parse_tenants

YAML_PLAN = """
groups:
  - name: group-1
    note: least active first
    tenant_ids: [1001, 1002, "1010-1012", {from: 2000, to: 2002}]
  - name: group-2
    tenants:
      - 3000-3001
      - "3005"
"""


def test_a_yaml_plan_with_ids_and_both_range_forms(tmp_path: Path) -> None:
    path = tmp_path / "rollout.yaml"
    path.write_text(YAML_PLAN)
    plan = load_plan(path)
    assert [g.name for g in plan.groups] == ["group-1", "group-2"]
    assert plan.groups[0].tenant_ids == {1001, 1002, 1010, 1011, 1012, 2000, 2001, 2002}
    assert plan.groups[0].note == "least active first"
    assert plan.groups[1].tenant_ids == {3000, 3001, 3005}
    assert plan.through("group-2") == plan.groups[0].tenant_ids | plan.groups[1].tenant_ids
    assert plan.group("2").name == "group-2"
    group = plan.group_of(3001)
    assert group is not None
    assert group.name == "group-2"


def test_the_demos_plan_file_is_accepted_as_written(tmp_path: Path) -> None:
    groups = rollout_groups()
    path = tmp_path / "rollout.json"
    path.write_text(json.dumps({"groups": [{"name": n, "tenant_ids": ids} for n, ids in groups.items()]}))
    plan = load_plan(path)
    assert {g.name: sorted(g.tenant_ids) for g in plan.groups} == groups


@pytest.mark.parametrize(
    ("groups", "says"),
    [
        ([{"name": "g1", "tenant_ids": [1, 2, True]}], r"group 'g1' tenant_ids\[2\]: expected a tenant id"),
        ([{"name": "g1", "tenant_ids": [1, 1.5]}], r"group 'g1' tenant_ids\[1\]"),
        ([{"name": "g1", "tenant_ids": ["20-10"]}], r"tenant_ids\[0\]: range 20-10 runs backwards"),
        ([{"name": "g1", "tenant_ids": ["ten"]}], r"tenant_ids\[0\]: 'ten' is neither"),
        ([{"name": "g1", "tenant_ids": [0]}], r"tenant id 0 is outside"),
        ([{"name": "g1", "tenant_ids": [{"from": 1}]}], r"a range is written \{from: A, to: B\}"),
        ([{"name": "g1", "tenant_ids": ["1-2000000"]}], "names more than"),
        ([{"name": "g1", "tenant_ids": []}], "non-empty list"),
        ([{"name": "g1", "tenant_ids": [1]}, {"name": "g2", "tenant_ids": ["0-1"]}], r"group 'g2'"),
        (
            [{"name": "g1", "tenant_ids": [5]}, {"name": "g2", "tenant_ids": ["3-7"]}],
            "tenant 5 is in both 'g1' and 'g2'",
        ),
        ([{"name": "g1", "tenant_ids": [5]}, {"name": "g1", "tenant_ids": [6]}], "used twice"),
        ([{"name": "g1", "ids": [5]}], r"groups\[0\]: unknown keys \['ids'\]"),
        ([{"tenant_ids": [5]}], r"groups\[0\]: name must be"),
        ([], "non-empty list of groups"),
    ],
)
def test_a_bad_plan_names_the_group_and_the_entry(groups: list[object], says: str) -> None:
    with pytest.raises(InputError, match=says):
        parse_plan({"groups": groups}, "rollout.json")


def test_an_unknown_group_lists_the_ones_there_are() -> None:
    plan = parse_plan({"groups": [{"name": "a", "tenant_ids": [1]}, {"name": "b", "tenant_ids": [2]}]})
    with pytest.raises(InputError, match=r"no group 'c' \(groups: a, b\)"):
        plan.through("c")


def test_a_plan_that_is_not_yaml_or_json_says_so_on_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "rollout.yaml"
    bad.write_text("groups: [\n  - name: x\n  tenant_ids: [1")
    with pytest.raises(InputError, match="not valid YAML") as caught:
        load_plan(bad)
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="no rollout plan at"):
        load_plan(tmp_path / "absent.yaml")


def test_command_line_tenant_lists_take_ids_and_ranges() -> None:
    assert parse_tenants("7, 10-12,3") == {3, 7, 10, 11, 12}
    with pytest.raises(InputError, match=r"--add-tenants\[1\]: 'x' is neither"):
        parse_tenants("1,x", "--add-tenants")
