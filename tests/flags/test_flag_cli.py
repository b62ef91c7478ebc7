"""``cutover flag …`` end to end against a file store: JSON output, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from controller.cli import app as cli
from controller.core.domain import ConversionRequest
from controller.ledger.sqlite import SQLiteLedger

REPO = Path(__file__).resolve().parents[2]
PLAN = """
groups:
  - name: group-1
    tenant_ids: ["1-4"]
  - name: group-2
    tenant_ids: [10, 11, "12-13"]
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "rollout.yaml").write_text(PLAN)
    return {
        "CUTOVER_FLAG_SOURCE": "file",
        "CUTOVER_FLAG_FILE": str(tmp_path / "flags.json"),
        "CUTOVER_ROLLOUT_FILE": str(tmp_path / "rollout.yaml"),
        "CUTOVER_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
        "CUTOVER_MAX_ADD": "5",
    }


def run(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(cli.app, ["flag", *args, "--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def fail(env: dict[str, str], *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the real entry point as the shell would and return its exit status and stderr."""
    saved, old_env = sys.argv, dict(os.environ)
    sys.argv = ["cutover", "flag", *args]
    os.environ.update(env)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        sys.argv = saved
        os.environ.clear()
        os.environ.update(old_env)
    return int(exited.value.code or 0), capsys.readouterr().err


def test_a_rollout_from_the_command_line(env: dict[str, str]) -> None:
    assert run(env, "show")["version"] is None
    one = run(env, "advance", "--to-group", "group-1")
    assert (one["version"], one["added"], one["deployment"]["state"]) == (1, 4, "COMPLETE")
    # group-1 has no finished conversions to judge yet, so the gate holds group-2 back unless forced.
    two = run(env, "advance", "--to-group", "group-2", "--note", "quiet week", "--force", "--reason", "test")
    assert (two["version"], two["added"], two["tenant_count"]) == (2, 4, 8)
    shown = run(env, "show")
    assert (shown["version"], shown["enabled"], shown["tenant_count"]) == (2, True, 8)
    assert [g["state"] for g in shown["groups"]] == ["in", "in"]
    back = run(env, "rollback")
    assert (back["action"], back["version"], back["removed"]) == ("deployed", 1, 4)
    out = run(env, "rollback", "--tenant", "3")
    assert (out["action"], out["version"], out["tenant_count"]) == ("tenants_removed", 3, 3)
    history = run(env, "history")
    assert [(v["version"], v["action"], v["added"], v["removed"]) for v in history["versions"]] == [
        (1, "advance", 4, 0),
        (2, "advance", 4, 0),
        (3, "rollback", 0, 1),
    ]
    assert "quiet week" in history["versions"][1]["note"]
    assert history["in_force"] == 3
    assert [d["version"] for d in history["deployments"]] == [3, 1, 2, 1]


def test_plan_shows_the_diff_per_group_and_the_load_it_shifts(env: dict[str, str], tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    import time

    now = time.time()
    # Over the last week tenant 10 had 14 conversions and tenant 1 had 7; 21 in all.
    ledger.accept([ConversionRequest(f"a{i}", 10) for i in range(14)], now - 3600)
    ledger.accept([ConversionRequest(f"b{i}", 1) for i in range(7)], now - 3600)
    ledger.accept([ConversionRequest("old", 11)], now - 30 * 86400)
    ledger.close()
    run(env, "advance", "--to-group", "group-1")
    files_before = sorted(p.name for p in tmp_path.rglob("*"))
    plan = run(env, "plan", "--to-group", "group-2")
    assert sorted(p.name for p in tmp_path.rglob("*")) == files_before  # plan changes nothing
    assert (plan["from_version"], plan["added"], plan["removed"]) == (1, 4, 0)
    assert plan["groups"] == [{"group": "group-2", "added": [10, 11, 12, 13], "removed": []}]
    load = plan["load"]
    assert (load["conversions_in_window"], load["to_new_per_day"], load["to_legacy_per_day"]) == (
        21,
        2.0,
        0.0,
    )
    assert (load["new_share_before"], load["new_share_after"]) == (round(7 / 21, 4), 1.0)
    assert plan["advance_would_refuse"] == []
    removal = run(env, "plan", "--remove-tenants", "2")
    assert removal["groups"] == [{"group": "group-1", "added": [], "removed": [2]}]
    assert "cutover flag rollback" in removal["advance_would_refuse"][0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["advance", "--to-group", "group-9"], "no group 'group-9' (groups: group-1, group-2)"),
        (["advance", "--add-tenants", "1-6"], "would add 6 tenants in one step, over the limit of 5"),
        (["advance", "--add-tenants", "1,x"], "--add-tenants[1]: 'x' is neither"),
        (["advance", "--to-group", "group-1", "--remove-tenants", "1"], "advance never takes tenants out"),
        (["advance"], "say where to advance"),
        (["rollback"], "no flag version is in force"),
        (["rollback", "--to-version", "1", "--tenant", "2"], "give --to-version or --tenant, not both"),
        (["show", "--store", "s3"], "--store: 's3' is not one of file, appconfig"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_a_failing_status(
    env: dict[str, str], args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = fail(env, *args, capsys=capsys)
    assert status == 2
    assert err.startswith("cutover: error: ")
    assert says in err
    assert err.count("\n") == 1


def test_a_bad_rollout_plan_is_named_on_stderr(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rollout.yaml").write_text("groups:\n  - name: g\n    tenant_ids: [1, yes]\n")
    status, err = fail(env, "plan", "--to-group", "g", capsys=capsys)
    assert status == 2
    assert "group 'g' tenant_ids[1]: expected a tenant id, got true" in err


def test_the_installed_entry_point_prints_errors_without_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli", "flag", "rollback", "--to-version", "4"],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("cutover: error: ")
    assert "Traceback" not in done.stderr
