"""The command line as a user types it: results on stdout, one clear error line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cutover(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


SECRETS = {
    "CUTOVER_API_TOKEN": "api-s3cret",
    "CUTOVER_AGENT_TOKEN": "agent-s3cret",
    "CUTOVER_FINDER_SQL_URL": "postgresql+pg8000://app:db-s3cret@db/cutover",
}


def test_config_prints_the_settings_in_force_with_secrets_masked(tmp_path):
    proc = cutover("config", "--json", cwd=tmp_path, env={"CUTOVER_BUDGET": "7", **SECRETS})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["CUTOVER_BUDGET"] == 7
    for name in SECRETS:
        assert doc[name] == "********"
    assert "s3cret" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_config_never_prints_a_secret_from_the_environment_or_a_config_file(tmp_path, as_json):
    (tmp_path / "prod.env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    from_file = cutover("--config", "prod.env", "config", *(["--json"] if as_json else []), cwd=tmp_path)
    from_env = cutover("config", *(["--json"] if as_json else []), cwd=tmp_path, env=SECRETS)
    for proc in (from_file, from_env):
        assert proc.returncode == 0, proc.stderr
        assert "CUTOVER_API_TOKEN" in proc.stdout
        assert "s3cret" not in proc.stdout + proc.stderr


def test_config_file_adds_to_the_environment(tmp_path):
    (tmp_path / "prod.env").write_text("CUTOVER_BUDGET=12\n")
    proc = cutover("--config", "prod.env", "config", "--json", cwd=tmp_path)
    assert json.loads(proc.stdout)["CUTOVER_BUDGET"] == 12


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CUTOVER_BUDGET": "0"}, "CUTOVER_BUDGET"),
        ({"CUTOVER_LEDGER": "postgres://x"}, "CUTOVER_LEDGER"),
        ({"CUTOVER_FLAG_SOURCE": "s3"}, "CUTOVER_FLAG_SOURCE"),
        ({"CUTOVER_CYCLE_SECONDS": "soon"}, "CUTOVER_CYCLE_SECONDS"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_variable(tmp_path, env, needle):
    proc = cutover("config", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_config_file_is_reported(tmp_path):
    proc = cutover("--config", "nope.env", "config", cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.env" in proc.stderr


def test_route_explains_where_a_tenant_goes(tmp_path):
    (tmp_path / "flags.json").write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [5]}}')
    five = json.loads(cutover("route", "5", "--json", cwd=tmp_path).stdout)
    six = json.loads(cutover("route", "6", "--json", cwd=tmp_path).stdout)
    assert (five["path"], six["path"]) == ("new", "legacy")
    assert five["flag_version"] == six["flag_version"]
    assert "listed" in five["reason"]


def test_route_rejects_a_bad_tenant_id(tmp_path):
    proc = cutover("route", "0", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_requeue_of_an_unknown_conversion_is_one_error_line(tmp_path):
    from controller.ledger.sqlite import SQLiteLedger

    SQLiteLedger(tmp_path / "cutover.db").close()  # the ledger exists; the conversion does not
    proc = cutover("requeue", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "cutover: error: conversion 'nope' is not in the ledger"
