"""Misspelt settings are never ignored silently: an unknown ``CUTOVER_*`` name is warned about with
the closest known name (and listed in ``/status``), and a line of a ``--config`` file that is not
``NAME=value`` stops the start naming the file and the line."""

from __future__ import annotations

import json

import httpx

from tests.api.support import run_controller
from tests.e2e.test_cli import cutover


def test_an_unknown_name_in_the_environment_is_warned_with_the_closest_known_name(tmp_path):
    proc = cutover("config", "--json", cwd=tmp_path, env={"CUTOVER_BUDGT": "5"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (
        "cutover: warning: CUTOVER_BUDGT is not a setting cutover knows (did you mean CUTOVER_BUDGET?); "
        "it is ignored"
    )
    assert json.loads(proc.stdout)["CUTOVER_BUDGET"] == 20


def test_known_names_and_other_variables_bring_no_warning(tmp_path):
    proc = cutover(
        "config", cwd=tmp_path, env={"CUTOVER_BUDGET": "5", "CUTOVER_URL": "http://x:1", "BUDGT": "1"}
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr


def test_an_unknown_name_in_a_config_file_is_warned_too(tmp_path):
    (tmp_path / "prod.env").write_text("CUTOVER_BUDGET=7\nCUTOVER_CYCLE_SECOND=2\n")
    proc = cutover("--config", "prod.env", "config", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "CUTOVER_CYCLE_SECOND is not a setting cutover knows (did you mean CUTOVER_CYCLE_SECONDS?)"
        in proc.stderr
    )
    assert json.loads(proc.stdout)["CUTOVER_BUDGET"] == 7


def test_a_line_of_a_config_file_that_is_not_name_value_stops_the_start_naming_file_and_line(tmp_path):
    (tmp_path / "prod.env").write_text("# production\nCUTOVER_BUDGET=7\n\nCUTOVER_CYCLE_SECONDS 2\n")
    for command in (("config",), ("run", "--port", "1")):
        proc = cutover("--config", "prod.env", *command, cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.strip() == (
            "cutover: error: --config prod.env, line 4: 'CUTOVER_CYCLE_SECONDS 2' is not NAME=value"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prod.env"]


def test_a_running_service_lists_an_unknown_name_in_status_warnings_and_logs_it(tmp_path):
    with run_controller(tmp_path, {"CUTOVER_BUDGT": "5"}) as ctl:
        warnings = httpx.get(ctl.base + "/status", timeout=10).json()["warnings"]
        log = ctl.log_text()
    assert any("CUTOVER_BUDGT" in w and "CUTOVER_BUDGET" in w for w in warnings), warnings
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(
        e.get("event") == "settings.warning" and "CUTOVER_BUDGT" in e.get("warning", "") for e in events
    )
