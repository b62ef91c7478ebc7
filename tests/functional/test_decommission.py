"""``cutover decommission``'s evidence: not ready for each reason on its own, and ready.

A rollout whose history is written with known times (flag versions through the operations behind
``cutover flag``, conversions in a SQLite ledger, reconciliation's record), then judged 14 days on.
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath

import pytest

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.ports import BuildSummary, Claim, Dispatched, Finish
from controller.engine.decommission import evidence, groups_drained
from controller.engine.reconcile import FIRST_RUN, LAST_FINDING, LAST_RUN
from controller.ledger.sqlite import SQLiteLedger
from flags import ops
from flags.file_store import FileVersionStore
from flags.rollout import Group, RolloutPlan

DAY = 86400.0
NOW = 1_800_000_000.0
PLAN = RolloutPlan((Group("group-1", frozenset({1, 2})), Group("group-2", frozenset({3, 4}))))
S = ConversionState


class Rollout:
    """A flag file store, a ledger and a clock that the test moves through the rollout."""

    def __init__(self, tmp: FsPath) -> None:
        self.store = FileVersionStore(tmp / "flags.json", "migrated_tenants")
        self.ledger = SQLiteLedger(tmp / "ledger.db")
        self.n = 0

    def op(self, at: float) -> ops.Operator:
        return ops.Operator(by="test", clock=lambda: at)

    def advance(self, group: str, at: float) -> None:
        ops.advance(self.store, PLAN, to_group=group, max_add=10, op=self.op(at))

    def add(self, tenants: set[int], at: float) -> None:
        ops.advance(self.store, PLAN, to_group=None, add=tenants, max_add=10, op=self.op(at))

    def rollback(self, at: float) -> None:
        ops.rollback(self.store, op=self.op(at))

    def convert(self, tenant: int, path: Path, at: float, *, finish: bool = True) -> str:
        self.n += 1
        cid = f"c{self.n}"
        request = ConversionRequest(cid, tenant, {})
        self.ledger.accept([request], at)
        owned = self.ledger.claim([Claim(request, path, "v", "test")], at)[0].record
        taken = self.ledger.mark_dispatching([owned], f"b{self.n}", at)[0]
        self.ledger.mark_dispatched([Dispatched(cid, taken.fence, f"j{self.n}")], at)
        if finish:
            self.ledger.mark_finished([Finish(cid, taken.fence, S.SUCCEEDED)], at + 60)
        return cid

    def reconciled(self, first: float, last: float, finding: float | None = None) -> None:
        for key, at in ((FIRST_RUN, first), (LAST_RUN, last), (LAST_FINDING, finding)):
            if at is not None:
                doc = {
                    "at": at,
                    "since": at - DAY,
                    "conversions": 9,
                    "duplicates": int(key == LAST_FINDING),
                    "orphans": 0,
                }
                self.ledger.put_value(key, json.dumps(doc), at)

    def judge(self, **options):
        options.setdefault("plan", PLAN)
        return evidence(self.ledger, self.store, now=NOW, days=14, **options)


@pytest.fixture
def rollout(tmp_path: FsPath):
    r = Rollout(tmp_path)
    # Everyone on the old path until 40 days ago, then both groups moved; the new path ever since.
    for t in (1, 2, 3, 4):
        r.convert(t, Path.LEGACY, NOW - 45 * DAY)
    r.advance("group-1", NOW - 40 * DAY)
    r.advance("group-2", NOW - 30 * DAY)
    for t in (1, 2, 3, 4):
        r.convert(t, Path.NEW, NOW - 2 * DAY)
    r.reconciled(first=NOW - 20 * DAY, last=NOW - 600)
    yield r
    r.ledger.close()


def failed(doc) -> set[str]:
    return {c["name"] for c in doc["checks"] if not c["ok"]}


def test_a_drained_rollout_is_ready_with_its_evidence(rollout):
    doc = rollout.judge()
    assert doc["ready"] is True, doc["checks"]
    assert failed(doc) == set()
    assert [c["name"] for c in doc["checks"]] == [
        "tenants_in_flag",
        "in_flag_for_days",
        "no_rollback_since",
        "no_legacy_claims_since",
        "no_legacy_in_flight",
        "reconciliation_clean",
    ]
    assert doc["since"] == "2027-01-01T08:00:00Z"  # 14 days before NOW
    assert doc["last_legacy_conversion"]["tenant_id"] == 4
    assert doc["last_legacy_conversion"]["state"] == "succeeded"


def test_a_tenant_of_the_plan_left_out_of_the_flag(rollout, tmp_path):
    plan = RolloutPlan((*PLAN.groups, Group("group-3", frozenset({5}))))
    assert failed(rollout.judge(plan=plan)) == {"tenants_in_flag", "in_flag_for_days"}


def test_a_tenant_with_conversions_but_not_in_the_flag(rollout):
    rollout.convert(9, Path.NEW, NOW - DAY)  # routed new by hand, say; it must be in the flag too
    doc = rollout.judge()
    assert "tenants_in_flag" in failed(doc)
    assert "9" in next(c["detail"] for c in doc["checks"] if c["name"] == "tenants_in_flag")


def test_a_group_moved_less_than_the_period_ago(tmp_path):
    r = Rollout(tmp_path)
    r.advance("group-1", NOW - 40 * DAY)
    r.advance("group-2", NOW - 5 * DAY)
    r.reconciled(first=NOW - 20 * DAY, last=NOW - 600)
    try:
        assert failed(r.judge()) == {"in_flag_for_days"}
        by_group = {
            g["name"]: g["drained"] for g in groups_drained(r.ledger, r.store, PLAN, now=NOW, days=14)
        }
        assert by_group == {"group-1": True, "group-2": False}
    finally:
        r.ledger.close()


def test_a_flag_younger_than_the_period(tmp_path):
    r = Rollout(tmp_path)
    r.advance("group-2", NOW - 3 * DAY)
    r.reconciled(first=NOW - 20 * DAY, last=NOW - 600)
    try:
        doc = r.judge()
        assert failed(doc) == {"in_flag_for_days"}
        assert "history starts at" in next(
            c["detail"] for c in doc["checks"] if c["name"] == "in_flag_for_days"
        )
    finally:
        r.ledger.close()


def test_a_rollback_within_the_period(rollout):
    rollout.add({7}, NOW - 6 * DAY)  # a tenant outside the plan, then rolled back
    rollout.rollback(NOW - 3 * DAY)
    doc = rollout.judge()
    assert failed(doc) == {"no_rollback_since"}
    assert "version 2" in next(c["detail"] for c in doc["checks"] if c["name"] == "no_rollback_since")
    # for a group, only a rollback that took one of its own tenants out counts
    assert rollout.judge(group=PLAN.group("group-1"))["ready"] is True


def test_an_old_path_claim_within_the_period(rollout):
    rollout.convert(3, Path.LEGACY, NOW - 4 * DAY)
    doc = rollout.judge()
    assert failed(doc) == {"no_legacy_claims_since"}
    assert doc["last_legacy_conversion"]["claimed_at"] == "2027-01-11T08:00:00Z"
    assert failed(rollout.judge(group=PLAN.group("group-2"))) == {"no_legacy_claims_since"}
    assert rollout.judge(group=PLAN.group("group-1"))["ready"] is True


def test_an_old_path_conversion_still_in_flight(rollout):
    rollout.convert(2, Path.LEGACY, NOW - 41 * DAY, finish=False)
    doc = rollout.judge()
    assert failed(doc) == {"no_legacy_in_flight"}
    assert failed(rollout.judge(group=PLAN.group("group-1"))) == {"no_legacy_in_flight"}


def test_reconciliation_that_found_something_or_never_ran(rollout, tmp_path):
    rollout.reconciled(first=NOW - 20 * DAY, last=NOW - 600, finding=NOW - 7 * DAY)
    assert failed(rollout.judge(can_list=True)) == {"reconciliation_clean"}
    fresh = Rollout(tmp_path / "fresh")
    fresh.advance("group-2", NOW - 30 * DAY)
    try:
        assert failed(fresh.judge(can_list=True)) == {"reconciliation_clean"}  # on AWS: no evidence
        assert fresh.judge(can_list=False)["ready"] is True  # locally nothing lists what ran
        fresh.reconciled(first=NOW - 3 * DAY, last=NOW - 600)
        assert failed(fresh.judge(can_list=True)) == {"reconciliation_clean"}  # not the whole period
    finally:
        fresh.ledger.close()


class Builds:
    def __init__(self, *builds: BuildSummary) -> None:
        self.builds = list(builds)

    def builds_since(self, since: float) -> list[BuildSummary]:
        return [b for b in self.builds if b.started_at >= since]


def test_a_codebuild_build_of_the_legacy_project_within_the_period(rollout):
    """Listed by CodeBuild, not the ledger: a build someone started outside cutover counts too."""
    old = BuildSummary("cutover-legacy:old", NOW - 30 * DAY, "SUCCEEDED")
    assert rollout.judge(builds=Builds(old))["ready"] is True
    recent = BuildSummary("cutover-legacy:cron", NOW - DAY, "SUCCEEDED")
    doc = rollout.judge(builds=Builds(old, recent))
    assert failed(doc) == {"no_legacy_builds_since"}
    assert "cutover-legacy:cron" in next(
        c["detail"] for c in doc["checks"] if c["name"] == "no_legacy_builds_since"
    )
