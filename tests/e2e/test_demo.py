"""`cutover demo --json` end to end, judged from its own outputs on disk as well as its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openpyxl import load_workbook

from controller.cli.demo import rollout_groups


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    workdir = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "demo", "--workdir", str(workdir), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout), workdir


def test_nothing_ran_twice_and_nothing_was_lost(demo):
    report, workdir = demo
    assert report["duplicates"] == 0
    assert report["lost"] == 0
    assert report["wrong_path"] == 0
    assert report["conversions"] == 1400
    assert report["succeeded"] + report["failed"] == report["conversions"]
    assert report["resubmitted_ids_folded"] > 0
    lines = [json.loads(x) for x in (workdir / "output" / "produced.jsonl").read_text().splitlines()]
    ids = [x["conversion_id"] for x in lines]
    assert len(ids) == len(set(ids)) == report["succeeded"]


def test_both_paths_used_and_the_budget_held(demo):
    report, workdir = demo
    assert sum(s["legacy"] for s in report["stages"]) > 0
    assert sum(s["new"] for s in report["stages"]) > 0
    assert 0 < report["max_in_flight"] <= report["budget"]
    lines = [json.loads(x) for x in (workdir / "output" / "produced.jsonl").read_text().splitlines()]
    events = sorted([(x["started_at"], 1) for x in lines] + [(x["finished_at"], -1) for x in lines])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    assert peak <= report["budget"]


def test_stages_follow_the_flag_and_rollback_sends_removed_tenants_back(demo):
    report, _ = demo
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["no flag"]["new"] == 0
    assert stages["no flag"]["flag_version"] is None
    groups = rollout_groups()
    sizes = [len(groups[f"group-{n}"]) for n in range(1, 6)]
    assert stages["group-1"]["migrated_tenants"] == sizes[0]
    assert stages["group-3"]["migrated_tenants"] == sum(sizes[:3])
    assert stages["group-5"]["legacy"] == 0
    rollback = stages["rollback"]
    assert rollback["removed_tenants"] == sizes[2]
    assert rollback["removed_tenants_on_new"] == 0
    assert rollback["removed_tenants_on_legacy"] == sizes[2]
    assert rollback["flag_version"] == stages["group-2"]["flag_version"]
    for s in report["stages"]:
        assert s["new"] == s["migrated_tenants"]  # one conversion per tenant in each wave


def test_outputs_are_real_workbooks_stamped_with_their_path(demo):
    _, workdir = demo
    lines = [json.loads(x) for x in (workdir / "output" / "produced.jsonl").read_text().splitlines()]
    for line in (lines[0], lines[-1]):
        book = load_workbook(line["output"], read_only=True)
        assert book.properties.keywords == f"path={line['path']}"
        rows = list(book.worksheets[0].iter_rows(values_only=True))
        assert rows[0][0] == "Record ID"
        assert len(rows) > 10


def test_failures_are_the_ones_asked_for_and_the_log_keeps_ids_and_reasons(demo):
    report, workdir = demo
    assert report["failed"] == report["failed_on_purpose"] > 0
    assert report["unexpected_failures"] == 0
    events = [json.loads(line) for line in (workdir / "cutover.log").read_text().splitlines()]
    assert events
    assert any(e.get("conversion_id") for e in events)
    assert all({"ts", "level", "event"} <= e.keys() for e in events)


def test_the_gate_decides_the_rollback_and_the_advance_after_it(demo):
    """The group made to fail on the new path fails its gate; the next stage rolls it back because
    of that; once the cause is gone every group moved passes and the rollout goes on."""
    report, workdir = demo
    stages = {s["name"]: s for s in report["stages"]}
    assert [s["action"] for s in report["stages"]] == [
        "none",
        "advance",
        "advance",
        "advance",
        "rollback",
        "advance",
        "advance",
    ]
    after_group_3 = {g["name"]: g for g in stages["group-3"]["gates"]["groups"]}
    assert stages["group-3"]["gates"]["verdict"] == "fail"
    assert (after_group_3["group-1"]["verdict"], after_group_3["group-2"]["verdict"]) == ("pass", "pass")
    assert after_group_3["group-3"]["verdict"] == "fail"
    assert after_group_3["group-3"]["reasons"][0].startswith("new path: 20 of 40 failed (20 after resubmit)")
    assert stages["group-3"]["failed"] == 20
    assert stages["rollback"]["why"].startswith("the gate says: group-3 is fail (new path: 20 of 40 failed")
    assert [g["name"] for g in stages["rollback"]["gates"]["groups"]] == ["group-1", "group-2"]
    for name in ("rollback", "group-4", "group-5"):
        assert stages[name]["gates"]["verdict"] == "pass", stages[name]["gates"]
    # The fault came with the move: the shadows run before it matched, and parity is one of the
    # checks that passed for every group moved.
    assert stages["group-3"]["parity"]["verdict"] == "pass"
    assert all(
        any(r.startswith("shadows: ") and r.endswith(": pass") for r in g["reasons"])
        for g in stages["group-5"]["gates"]["groups"]
    ), stages["group-5"]["gates"]
    history = [
        json.loads(line)
        for line in (workdir / "flags.json.history" / "deployments.jsonl").read_text().splitlines()
    ]
    rollback = next(d for d in history if d["rollback"])
    assert "group-3 failed its gate" in rollback["description"]


def test_each_advance_was_preceded_by_shadows_that_match(demo):
    """Before every advance, shadows of the tenants it moves ran on the new path and matched; their
    runs counted in the budget, and their workbooks were cleaned out of the quarantine."""
    report, workdir = demo
    for s in report["stages"]:
        if s["name"].startswith("group-"):
            assert s["parity"]["verdict"] == "pass", s
            assert s["parity"]["mismatches"] == 0
            assert s["parity"]["samples"] >= 14  # what bounds the mismatch rate under 20%
        else:
            assert s["parity"] is None
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["group-4"]["parity"]["groups"] == [
        "group-3",
        "group-4",
    ]  # group-3 came back after the rollback
    # Every sample is a shadow run (A/A runs and second attempts come on top).
    assert report["shadow_runs"] >= max(s["parity"]["samples"] for s in report["stages"] if s["parity"])
    assert report["max_in_flight"] <= report["budget"]
    assert not list((workdir / "state" / "quarantine").rglob("*.xlsx"))
