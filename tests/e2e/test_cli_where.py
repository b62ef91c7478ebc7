"""Commands run from any folder: they never create a ledger or flag store where they happen to be,
say where they looked and how to point them, and ask a running service with ``--url`` /
``CUTOVER_URL``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from controller.ledger.sqlite import SQLiteLedger
from flags.file_source import FileFlagSource
from flags.lkg import LastKnownGood
from tests.api.support import TOKEN, run_controller, write_flag
from tests.e2e.test_cli import cutover


def created(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ("requeue", "inv-1"),
        ("conversions",),
        ("conversions", "inv-1"),
        ("conversions", "--state", "failed"),
        ("route", "2005"),
    ],
)
def test_a_command_in_a_folder_without_a_ledger_says_where_it_looked_and_creates_nothing(tmp_path, args):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cutover(*args, cwd=elsewhere)
    assert proc.returncode == 2, proc.stdout
    line = proc.stderr.strip()
    assert "\n" not in line
    assert f"no ledger at {elsewhere / 'cutover.db'}" in line
    assert "CUTOVER_LEDGER" in line
    assert "--url" in line
    assert created(elsewhere) == []


def test_route_without_a_flag_file_names_it_and_answers_from_the_ledgers_last_good_flag(tmp_path):
    service = tmp_path / "service"
    service.mkdir()
    write_flag(service / "flags.json", [2005])
    # The service's own read of the flag leaves it in the ledger as the last good one.
    store = SQLiteLedger(service / "ledger.db")
    try:
        LastKnownGood(
            FileFlagSource(service / "flags.json", "migrated_tenants", time.time), store, time.time
        ).read()
    finally:
        store.close()
    ledger = {"CUTOVER_LEDGER": f"sqlite:///{service / 'ledger.db'}"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cutover("route", "2005", "--json", cwd=elsewhere, env=ledger)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == "new"
    assert f"no flag file at {elsewhere / 'flags.json'}" in proc.stderr
    assert created(elsewhere) == []


def test_config_prints_absolute_paths(tmp_path):
    doc = json.loads(cutover("config", "--json", cwd=tmp_path).stdout)
    assert doc["CUTOVER_LEDGER"] == f"sqlite:///{tmp_path / 'cutover.db'}"
    assert doc["CUTOVER_FLAG_FILE"] == str(tmp_path / "flags.json")
    assert doc["CUTOVER_LOCAL_STATE_DIR"] == str(tmp_path / "cutover-state")
    assert doc["CUTOVER_OUTPUT_DIR"] == str(tmp_path / "cutover-output")
    assert created(tmp_path) == []


def wait_for(base: str, cid: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{base}/conversions/{cid}", timeout=5)
        if answer.status_code == 200 and answer.json()["state"] == state:
            return
        time.sleep(0.1)
    raise AssertionError(f"{cid} never reached {state}")


@pytest.mark.slow
def test_route_requeue_and_conversions_ask_the_running_service_with_url(tmp_path):
    service = tmp_path / "service"
    service.mkdir()
    write_flag(service / "flags.json", [2005])
    with run_controller(service, {"CUTOVER_API_TOKEN": TOKEN}) as ctl:
        body = {
            "conversions": [
                {"conversion_id": "ok-1", "tenant_id": 2005, "params": {}},
                {"conversion_id": "bad-1", "tenant_id": 7, "params": {"simulate": "fail"}},
            ]
        }
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert (
            httpx.post(f"{ctl.base}/conversions", json=body, headers=headers, timeout=10).status_code == 202
        )
        wait_for(ctl.base, "bad-1", "failed")
        wait_for(ctl.base, "ok-1", "succeeded")

        laptop = tmp_path / "laptop"
        laptop.mkdir()
        by_env = {"CUTOVER_URL": ctl.base}
        route = cutover("route", "2005", "--json", cwd=laptop, env=by_env)
        assert route.returncode == 0, route.stderr
        assert (json.loads(route.stdout)["path"], json.loads(route.stdout)["flag_state"]) == ("new", "ok")

        failed = cutover("conversions", "--state", "failed", "--json", "--url", ctl.base, cwd=laptop)
        assert failed.returncode == 0, failed.stderr
        assert [d["conversion_id"] for d in json.loads(failed.stdout)["conversions"]] == ["bad-1"]
        one = json.loads(cutover("conversions", "ok-1", "--json", cwd=laptop, env=by_env).stdout)
        assert (one["state"], one["path"], one["tenant_id"]) == ("succeeded", "new", 2005)

        refused = cutover("requeue", "bad-1", cwd=laptop, env=by_env)
        assert refused.returncode == 2
        assert "401" in refused.stderr
        assert "CUTOVER_API_TOKEN" in refused.stderr
        requeued = cutover(
            "requeue", "bad-1", "--json", cwd=laptop, env={**by_env, "CUTOVER_API_TOKEN": TOKEN}
        )
        assert requeued.returncode == 0, requeued.stderr
        assert json.loads(requeued.stdout) == {"conversion_id": "bad-1", "state": "received"}
        missing = cutover("conversions", "nope", cwd=laptop, env=by_env)
        assert missing.returncode == 2
        assert "not in the ledger" in missing.stderr
    assert created(laptop) == []


def test_flag_commands_name_the_absolute_file_and_reading_creates_nothing(tmp_path):
    shown = cutover("flag", "show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"file {tmp_path / 'flags.json'}" in shown.stdout
    assert created(tmp_path) == []
    advanced = cutover("flag", "advance", "--add-tenants", "5", cwd=tmp_path)
    assert advanced.returncode == 0, advanced.stderr
    assert (
        f"there was no flag file at {tmp_path / 'flags.json'} (CUTOVER_FLAG_FILE): this started one"
        in advanced.stderr
    )
    again = cutover("flag", "advance", "--add-tenants", "6", cwd=tmp_path)
    assert "warning" not in again.stderr
    refused = cutover("flag", "advance", "--add-tenants", "x", cwd=tmp_path)
    assert refused.stderr.startswith("cutover: error: ")
