"""A tenant taken out by ``rollback --tenant`` stays out: the next advance leaves it out (and says
so), ``show`` and ``plan`` list it with who, when and why, and only ``release`` or
``advance --include-held`` lets it back; the Lambda validator refuses a console version that
brings it back unmarked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.core.errors import InputError
from flags import ops
from flags.file_store import FileVersionStore
from flags.holds import RELEASE_MARK, holds
from flags.rollout import parse_plan
from flags.validator import handler
from flags.versions import Note
from tests.e2e.test_cli import cutover

from .appconfig_stubs import AppConfigStubs, document
from .test_flag_validator import event

PLAN = parse_plan(
    {
        "groups": [
            {"name": "wave-0", "tenant_ids": [2001, 2005]},
            {"name": "wave-1", "tenant_ids": [3001, 3002]},
        ]
    }
)
OP = ops.Operator(by="ops@laptop", clock=lambda: 1_780_000_000.0)


def store(tmp_path: Path) -> FileVersionStore:
    return FileVersionStore(tmp_path / "flags.json", "migrated_tenants")


def taken_out(tmp_path: Path) -> FileVersionStore:
    s = store(tmp_path)
    ops.advance(s, PLAN, to_group="wave-0", max_add=10, op=OP)
    ops.rollback(s, tenants={2005}, op=OP, text="exports time out for 2005")
    return s


def test_an_advance_leaves_a_held_tenant_out_and_says_so(tmp_path: Path) -> None:
    s = taken_out(tmp_path)
    result = ops.advance(s, PLAN, to_group="wave-1", max_add=10, op=OP)
    in_force = s.in_force()
    assert in_force is not None
    assert in_force.content.tenant_ids == {2001, 3001, 3002}
    assert [h["tenant_id"] for h in result["held"]] == [2005]
    assert result["added"] == 2


def test_show_and_plan_list_the_held_tenant_with_who_when_and_why(tmp_path: Path) -> None:
    s = taken_out(tmp_path)
    [hold] = ops.show(s, PLAN)["held"]
    assert hold == {
        "tenant_id": 2005,
        "version": 2,
        "by": "ops@laptop",
        "at": "2026-05-28T20:26:40Z",
        "why": "exports time out for 2005",
    }
    plan = ops.plan_change(s, PLAN, to_group="wave-1", max_add=10)
    assert [h["tenant_id"] for h in plan["held"]] == [2005]
    assert plan["added"] == 2
    assert ops.plan_change(s, PLAN, to_group="wave-1", max_add=10, include_held=True)["added"] == 3


def test_release_and_include_held_let_it_back_and_end_the_hold(tmp_path: Path) -> None:
    s = taken_out(tmp_path)
    result = ops.release(s, [2005], op=OP)
    assert result["released"] == [2005]
    assert holds(s) == {}
    assert RELEASE_MARK in s.versions()[-1].description

    other = taken_out(tmp_path / "other")
    ops.advance(other, PLAN, to_group="wave-1", max_add=10, op=OP, include_held=True)
    in_force = other.in_force()
    assert in_force is not None
    assert 2005 in in_force.content.tenant_ids
    assert holds(other) == {}


def test_release_of_a_tenant_not_held_is_refused(tmp_path: Path) -> None:
    s = taken_out(tmp_path)
    with pytest.raises(InputError, match="tenant 2001 is not held back"):
        ops.release(s, [2001], op=OP)


def test_the_command_line_shows_and_releases_held_tenants(tmp_path: Path) -> None:
    (tmp_path / "rollout.json").write_text(
        json.dumps({"groups": [{"name": g.name, "tenant_ids": sorted(g.tenant_ids)} for g in PLAN.groups]})
    )
    env = {"CUTOVER_ROLLOUT_FILE": str(tmp_path / "rollout.json")}
    assert cutover("flag", "advance", "--to-group", "wave-0", cwd=tmp_path, env=env).returncode == 0
    assert (
        cutover(
            "flag", "rollback", "--tenant", "2005", "--note", "slow exports", cwd=tmp_path, env=env
        ).returncode
        == 0
    )
    # wave-0 has run nothing yet, so its gate is inconclusive: the advance must be forced.
    refused = cutover("flag", "advance", "--to-group", "wave-1", cwd=tmp_path, env=env)
    assert refused.returncode == 2
    assert "wave-0 is inconclusive" in refused.stderr
    advanced = cutover(
        "flag",
        "advance",
        "--to-group",
        "wave-1",
        "--force",
        "--reason",
        "no traffic here",
        cwd=tmp_path,
        env=env,
    )
    assert advanced.returncode == 0, advanced.stderr
    assert "held back, left out" in advanced.stdout
    shown = cutover("flag", "show", cwd=tmp_path, env=env)
    assert "2005" in shown.stdout
    assert "slow exports" in shown.stdout
    released = cutover("flag", "release", "2005", cwd=tmp_path, env=env)
    assert released.returncode == 0, released.stderr
    assert "released 2005" in released.stdout
    route = json.loads(cutover("route", "2005", "--json", cwd=tmp_path, env=env).stdout)
    assert route["path"] == "new"


def rollback_note() -> str:
    return Note(
        action="rollback",
        by="ops@laptop",
        at="2026-05-28T20:26:40Z",
        base=3,
        added=0,
        removed=1,
        rollback=True,
        text="slow",
    ).describe()


@pytest.mark.parametrize(
    ("description", "allowed"), [("console edit", False), (f"console edit {RELEASE_MARK}", True)]
)
def test_the_validator_refuses_a_console_version_that_brings_a_held_tenant_back(
    monkeypatch: pytest.MonkeyPatch, description: str, allowed: bool
) -> None:
    monkeypatch.setenv("CUTOVER_APPCONFIG_ENVIRONMENT", "e1b2c3d")
    monkeypatch.setenv("CUTOVER_MAX_ADD", "3")
    aws = AppConfigStubs(known_ids=True)
    with aws.stub:
        aws.deployments(aws.summary(6, 4, "COMPLETE"), resolve_profile=True)
        aws.hosted(4, document(1, 2, 3))
        aws.hosted(5, document(), description)
        aws.versions(3, 4, 5, descriptions={4: rollback_note(), 5: description})
        aws.hosted(3, document(1, 2, 3, 9))
        aws.hosted(4, document(1, 2, 3))
        if allowed:
            assert handler(event(document(1, 2, 3, 9)), client=aws.client)["valid"]
        else:
            with pytest.raises(InputError, match=r"tenant 9 is held back since version 4 \(ops@laptop"):
                handler(event(document(1, 2, 3, 9)), client=aws.client)
