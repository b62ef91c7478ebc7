"""``cutover gate`` and the gate ``cutover flag plan`` / ``advance`` consult, end to end against a
file store and a SQLite ledger holding finished conversions."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from controller.cli import app as cli
from controller.core.domain import Path as ExecPath
from controller.ledger.sqlite import SQLiteLedger
from tests.fakes import record_finished as finished

PLAN = """
groups:
  - name: group-1
    tenant_ids: ["1-4"]
  - name: group-2
    tenant_ids: ["10-13"]
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "rollout.yaml").write_text(PLAN)
    return {
        "CUTOVER_FLAG_SOURCE": "file",
        "CUTOVER_FLAG_FILE": str(tmp_path / "flags.json"),
        "CUTOVER_ROLLOUT_FILE": str(tmp_path / "rollout.yaml"),
        "CUTOVER_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
    }


def invoke(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env=env)


def flag(env: dict[str, str], *args: str) -> Any:
    result = invoke(env, "flag", *args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def group_one_on_the_new_path(env: dict[str, str], tmp_path: Path, fails: Callable[[int], bool]) -> None:
    """A week of the old path for every tenant, then group-1 moved an hour ago and 120 conversions since."""
    now = time.time()
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    finished(ledger, "old", range(1, 14), ExecPath.LEGACY, at=now - 7200, count=300)
    finished(ledger, "new", range(1, 5), ExecPath.NEW, at=now - 3600, count=120, fails=fails)
    ledger.close()
    flag(env, "advance", "--to-group", "group-1")


def test_nothing_on_the_new_path_passes_and_the_first_group_moves(env: dict[str, str]) -> None:
    result = invoke(env, "gate", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["groups"] == []
    assert flag(env, "advance", "--to-group", "group-1")["version"] == 1


def test_a_moved_group_without_evidence_is_inconclusive_and_holds_the_next_back(
    env: dict[str, str], tmp_path: Path
) -> None:
    flag(env, "advance", "--to-group", "group-1")
    result = invoke(env, "gate", "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert (doc["verdict"], doc["groups"][0]["name"], doc["groups"][0]["verdict"]) == (
        "inconclusive",
        "group-1",
        "inconclusive",
    )
    refused = invoke(env, "flag", "advance", "--to-group", "group-2")
    assert refused.exit_code != 0
    message = str(refused.exception)
    assert message.startswith("refused: group-1 is inconclusive (new path: 0 of the 100 finished conversions")
    assert "--force --reason" in message
    assert flag(env, "show")["version"] == 1  # nothing written
    planned = flag(env, "plan", "--to-group", "group-2")
    assert planned["gate"]["groups"][0]["verdict"] == "inconclusive"
    assert planned["gate"]["would_refuse"].startswith("group-1 is inconclusive")
    assert planned["advance_would_refuse"] == []


def test_force_with_a_reason_moves_and_keeps_the_reason_in_the_history_and_the_deployment(
    env: dict[str, str],
) -> None:
    flag(env, "advance", "--to-group", "group-1")
    moved = flag(
        env, "advance", "--to-group", "group-2", "--force", "--reason", "month-end export fixed by hand"
    )
    assert moved["version"] == 2
    assert moved["forced"]["reason"] == "month-end export fixed by hand"
    assert moved["forced"]["overridden"].startswith("group-1 is inconclusive")
    history = flag(env, "history")
    note = history["versions"][1]["note"]
    assert note == "to group-2 [forced past the gate (group-1 inconclusive): month-end export fixed by hand]"
    assert note in history["deployments"][0]["description"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--force"], "--force needs --reason TEXT"),
        (["--force", "--reason", " "], "--force needs --reason TEXT"),
        (["--reason", "why"], "--reason goes with --force"),
    ],
)
def test_force_and_reason_go_together(env: dict[str, str], args: list[str], says: str) -> None:
    result = invoke(env, "flag", "advance", "--to-group", "group-1", *args)
    assert result.exit_code != 0
    assert says in str(result.exception)


def test_a_clean_group_passes_and_the_next_moves_without_force(env: dict[str, str], tmp_path: Path) -> None:
    group_one_on_the_new_path(env, tmp_path, fails=lambda i: False)
    result = invoke(env, "gate")
    assert result.exit_code == 0, result.output
    assert "gate: PASS" in result.stdout
    assert "new path: 0 of 120 failed; Wilson lower bound of success 96.9% ≥ 95.0%: pass" in result.stdout
    doc = json.loads(invoke(env, "gate", "--json", "--group", "group-1").stdout)
    g1 = doc["groups"][0]
    assert (g1["new"]["finished"], g1["legacy"]["finished"], g1["legacy"]["basis"]) == (
        120,
        93,  # 300 old-path conversions spread over tenants 1-13: 24 + 23 + 23 + 23 of tenants 1-4
        "same tenants before the move",
    )
    assert flag(env, "advance", "--to-group", "group-2")["forced"] is None


def test_a_failing_group_exits_1_names_itself_and_blocks_the_advance(
    env: dict[str, str], tmp_path: Path
) -> None:
    group_one_on_the_new_path(env, tmp_path, fails=lambda i: i % 3 == 0)
    result = invoke(env, "gate", "--json")
    assert result.exit_code == 1
    g1 = json.loads(result.stdout)["groups"][0]
    assert g1["verdict"] == "fail"
    assert g1["reasons"][0].startswith("new path: 40 of 120 failed; even the Wilson upper bound")
    refused = invoke(env, "flag", "advance", "--to-group", "group-2")
    assert str(refused.exception).startswith("refused: group-1 is fail (new path: 40 of 120 failed")


def test_a_fixed_window_and_an_unknown_group(env: dict[str, str], tmp_path: Path) -> None:
    group_one_on_the_new_path(env, tmp_path, fails=lambda i: False)
    recent = json.loads(invoke(env, "gate", "--json", "--window", "30m").stdout)
    assert recent["window"]["seconds"] == 1800
    assert recent["groups"][0]["new"]["finished"] == 0
    assert invoke(env, "gate", "--window", "soon").exit_code != 0
    unknown = invoke(env, "gate", "--group", "group-9")
    assert "no group 'group-9'" in str(unknown.exception)
