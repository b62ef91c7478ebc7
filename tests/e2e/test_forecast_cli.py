"""``cutover forecast``, ``cutover flag plan``'s forecast and ``cutover decommission`` as a user types
them: the JSON shapes, the plots, the exit statuses, and one readable line for bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from controller.core.domain import ConversionRequest, ConversionState
from controller.core.domain import Path as Route
from controller.core.ports import Claim, Dispatched, Finish
from controller.ledger.sqlite import SQLiteLedger
from tests.e2e.test_cli import cutover

PLAN = """
groups:
  - name: group-1
    tenant_ids: ["1001-1010"]
  - name: group-2
    tenant_ids: ["1011-1020"]
"""
PROFILE = """
name: month-start
defaults:
  legacy: {median_seconds: 60, p99_seconds: 600, failure_rate: 0.0}
  new: {median_seconds: 50, p99_seconds: 500}
arrivals:
  conversions: 300
  tenants: ["1001-1020"]
  within_seconds: 60
"""
SIDE = {
    "migrated_tenants",
    "makespan_seconds",
    "busy_seconds",
    "peak_in_flight",
    "mean_in_flight",
    "budget",
    "within_budget",
    "queue_wait_seconds",
    "conversions",
    "failed",
    "builds",
    "new_path_jobs",
    "new_path_slots_peak",
    "simulation",
    "cost",
}


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "rollout.yaml").write_text(PLAN)
    (tmp_path / "profile.yaml").write_text(PROFILE)
    env = {
        "CUTOVER_FLAG_FILE": str(tmp_path / "flags.json"),
        "CUTOVER_ROLLOUT_FILE": str(tmp_path / "rollout.yaml"),
        "CUTOVER_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
        "CUTOVER_BUDGET": "10",
    }
    return tmp_path, env


def history(path: Path, day: float) -> None:
    """A day of finished conversions with the jobs' own timing: tenants 1001-1010 on the new path."""
    ledger = SQLiteLedger(path)
    try:
        for i in range(200):
            tenant = 1001 + i % 20
            route = Route.NEW if tenant <= 1010 else Route.LEGACY
            at = day + i * 1.0
            request = ConversionRequest(f"h{i}", tenant, {})
            ledger.accept([request], at)
            record = ledger.claim([Claim(request, route, "1", "test")], at)[0].record
            taken = ledger.mark_dispatching([record], f"b{i}", at + 1)[0]
            ledger.mark_dispatched([Dispatched(f"h{i}", taken.fence, f"j{i}")], at + 1)
            finish = Finish(f"h{i}", taken.fence, ConversionState.SUCCEEDED, "", 60.0 + i % 7, at + 20)
            ledger.mark_finished([finish], at + 90)
    finally:
        ledger.close()


def test_forecast_prints_before_and_after_in_the_documented_shape_and_plots_both(workspace):
    tmp, env = workspace
    proc = cutover(
        "forecast",
        "--profile",
        "profile.yaml",
        "--plot",
        "f.png",
        "--plot",
        "f.svg",
        "--json",
        cwd=tmp,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {"profile", "before", "after", "warnings"} <= set(doc)
    for side in ("before", "after"):
        assert set(doc[side]) >= SIDE, side
        assert set(doc[side]["peak_in_flight"]) == {"legacy", "new", "total"}
        assert set(doc[side]["queue_wait_seconds"]) == {"p50", "p95"}
        assert set(doc[side]["conversions"]) == {"legacy", "new"}
        assert set(doc[side]["cost"]) == {"legacy", "new", "total", "currency"}
        assert doc[side]["peak_in_flight"]["total"] <= 10
        assert doc[side]["cost"]["total"] == pytest.approx(
            doc[side]["cost"]["legacy"] + doc[side]["cost"]["new"]
        )
    # no flag yet, and the next group of the plan is group-1
    assert doc["before"]["migrated_tenants"] is None
    assert doc["before"]["conversions"]["new"] == 0
    assert doc["after"]["migrated_tenants"] == 10
    assert doc["after"]["conversions"]["new"] > 0
    assert doc["change"]["to_group"] == "group-1"
    assert doc["profile"]["conversions"] == 300
    assert doc["prices"]["as_of"] == "2026-06-01"
    assert (tmp / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp / "f.svg").read_text()[:2000]


def test_forecast_from_the_ledgers_last_peak_warns_of_the_fargate_quota_on_aws(workspace):
    tmp, env = workspace
    history(tmp / "ledger.db", time.time() - 3 * 86400)
    proc = cutover(
        "forecast", "--to-group", "group-2", "--json", cwd=tmp, env={**env, "CUTOVER_BACKEND": "aws"}
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["profile"]["name"] == "last-peak"
    assert doc["profile"]["conversions"] == 200
    assert doc["profile"]["fargate_quota_vcpus"] == 6.0
    assert doc["after"]["new_path_slots_peak"] <= 3
    assert any("Fargate On-Demand vCPU quota" in w for w in doc["warnings"])
    table = cutover("forecast", "--to-group", "group-2", cwd=tmp, env=env)
    assert table.returncode == 0, table.stderr
    assert "makespan" in table.stdout
    assert "before" in table.stdout


def test_flag_plan_prints_the_forecast_beside_the_tenants_it_moves(workspace):
    tmp, env = workspace
    history(tmp / "ledger.db", time.time() - 3 * 86400)
    proc = cutover("flag", "plan", "--to-group", "group-1", "--json", cwd=tmp, env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["added"] == 10
    assert doc["forecast"]["after"]["migrated_tenants"] == 10
    text = cutover("flag", "plan", "--to-group", "group-1", cwd=tmp, env=env)
    assert "forecast (last-peak: 200 conversions" in text.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["forecast", "--profile", "nope.yaml"],
            "--profile nope.yaml: neither last-peak, last-7d nor an existing file",
        ),
        (
            ["forecast", "--profile", "bad.yaml"],
            "profile bad.yaml: defaults.new.p99_seconds: Input should be greater than 0",
        ),
        (
            ["forecast", "--profile", "profile.yaml", "--plot", "f.pdf"],
            "--plot f.pdf: the file must end in .png or .svg",
        ),
        (["forecast", "--profile", "profile.yaml", "--to-group", "group-9"], "no group 'group-9'"),
        (["forecast", "--profile", "last-7d"], "there is no ledger at"),
        (["decommission", "--group", "group-9"], "no group 'group-9'"),
    ],
)
def test_bad_input_is_one_line_on_stderr(workspace, args, says):
    tmp, env = workspace
    (tmp / "bad.yaml").write_text(PROFILE.replace("p99_seconds: 500", "p99_seconds: -1"))
    proc = cutover(*args, cwd=tmp, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("cutover: error: ")
    assert says in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp / "f.pdf").exists()


def test_decommission_says_not_ready_then_ready_with_its_evidence(workspace):
    tmp, env = workspace
    SQLiteLedger(tmp / "ledger.db").close()
    advanced = cutover("flag", "advance", "--to-group", "group-1", cwd=tmp, env=env)
    assert advanced.returncode == 0, advanced.stderr
    not_ready = cutover("decommission", "--days", "0", "--json", cwd=tmp, env=env)
    assert not_ready.returncode == 1, not_ready.stderr
    doc = json.loads(not_ready.stdout)
    assert set(doc) >= {"ready", "since", "checks"}
    assert doc["ready"] is False
    assert all(set(c) == {"name", "ok", "detail"} for c in doc["checks"])
    assert [c["name"] for c in doc["checks"] if not c["ok"]] == ["tenants_in_flag", "in_flag_for_days"]
    assert {g["name"]: g["drained"] for g in doc["groups"]} == {"group-1": True, "group-2": False}
    assert cutover("decommission", "--days", "0", "--group", "group-1", cwd=tmp, env=env).returncode == 0
    # group-1 ran nothing, so its gate is inconclusive: the advance has to be forced.
    forced = cutover(
        "flag", "advance", "--to-group", "group-2", "--force", "--reason", "nothing ran yet", cwd=tmp, env=env
    )
    assert forced.returncode == 0, forced.stderr
    ready = cutover("decommission", "--days", "0", cwd=tmp, env=env)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "ready" in ready.stdout
    assert "in_flag_for_days" in ready.stdout
    too_soon = cutover("decommission", "--json", cwd=tmp, env=env)  # 14 days by default
    assert too_soon.returncode == 1
    assert "in_flag_for_days" in [c["name"] for c in json.loads(too_soon.stdout)["checks"] if not c["ok"]]
