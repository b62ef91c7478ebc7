"""What the commands and the API say must read right at a glance: no "None" where a value is
missing, a demo verdict that tells failures asked for from unexpected ones, one-line usage errors,
lines that stay whole when piped, and a succeeded conversion's output under ``output``."""

from __future__ import annotations

import json
from pathlib import Path

from controller.api.schemas import ConversionOut
from controller.api.status import status_lines
from controller.cli.app import _print_verdict
from controller.cli.demo import DemoResult, outcome
from controller.core.domain import ConversionRecord, ConversionState
from controller.core.domain import Path as ExecPath
from tests.e2e.test_cli import cutover


def status_doc(age: float | None, version: str | None) -> dict:
    return {
        "flag": {
            "version": version,
            "state": "ok" if version else "unavailable",
            "tenant_count": 0,
            "age_seconds": age,
        },
        "budget": 20,
        "in_flight": {"legacy": 0, "new": 0},
        "conversions": {"received": 0},
    }


def test_status_without_a_flag_says_never_read_not_age_nones():
    first = status_lines(status_doc(None, None))[0]
    assert "None" not in first
    assert "never read" in first
    assert "age 12s" in status_lines(status_doc(12.4, "3"))[0]


def test_plan_without_a_version_in_force_says_so(tmp_path):
    proc = cutover("flag", "plan", "--add-tenants", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "from no flag version yet: +1 -0 tenants" in proc.stdout
    assert "None" not in proc.stdout


def test_rollback_after_an_invalid_document_counts_moves_from_the_last_good_version(tmp_path):
    assert cutover("flag", "advance", "--add-tenants", "1-9", cwd=tmp_path).returncode == 0
    assert cutover("flag", "advance", "--add-tenants", "10", cwd=tmp_path).returncode == 0
    (tmp_path / "flags.json").write_text("{not json")
    proc = cutover("flag", "rollback", "--to-version", "2", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["added"], doc["removed"], doc["compared_with"], doc["replaced_invalid"]) == (0, 0, 2, True)
    (tmp_path / "flags.json").write_text("{not json")
    text = cutover("flag", "rollback", "--to-version", "1", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "was an invalid document; tenants compared with version 2, the last good one" in text.stdout
    assert "-1 +0 tenants" in text.stdout


def test_usage_errors_are_one_line(tmp_path):
    for args, needle in (
        (("route", "abc"), "'abc' is not a tenant id"),
        (("rout", "5"), "No such command 'rout'"),
        (("conversions", "--limit", "0"), "--limit"),
    ):
        proc = cutover(*args, cwd=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("cutover: error: ")
        assert needle in lines[0]


def test_piped_output_keeps_each_line_whole(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4)
    deep.mkdir()
    proc = cutover("config", cwd=deep)
    assert proc.returncode == 0, proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if "CUTOVER_FLAG_FILE" in x]
    assert str(deep / "flags.json") in line


def test_a_succeeded_conversions_output_is_under_output_not_reason():
    done = ConversionRecord("c1", 7, {}, ConversionState.SUCCEEDED, ExecPath.NEW, "3", "s3://out/7/c1.xlsx")
    failed = ConversionRecord("c2", 7, {}, ConversionState.FAILED, ExecPath.NEW, "3", "worker exited 1")
    assert (ConversionOut.of(done).output, ConversionOut.of(done).reason) == ("s3://out/7/c1.xlsx", "")
    assert (ConversionOut.of(failed).output, ConversionOut.of(failed).reason) == (None, "worker exited 1")


class Records:
    def __init__(self, records: list[ConversionRecord]) -> None:
        self.records = {r.conversion_id: r for r in records}

    def get(self, cid: str) -> ConversionRecord | None:
        return self.records.get(cid)


def test_the_demo_verdict_tells_failures_asked_for_from_unexpected_ones(tmp_path: Path, capsys):
    asked = ConversionRecord("a", 1, {"simulate": "fail"}, ConversionState.FAILED, ExecPath.NEW)
    flaky = ConversionRecord("b", 2, {"simulate": "fail_first"}, ConversionState.FAILED, ExecPath.NEW)
    found = outcome(Records([asked, flaky]), tmp_path, ["a", "b"])  # type: ignore[arg-type]
    assert (found.failed, found.failed_on_purpose) == (2, 1)

    expected = DemoResult(conversions=2, failed=2, failed_on_purpose=2, budget=4)
    _print_verdict(expected)
    text = capsys.readouterr().out
    assert expected.ok
    assert "PASS" in text
    assert "2 failed on purpose, 0 unexpected" in text

    surprise = DemoResult(conversions=2, failed=2, failed_on_purpose=1, budget=4)
    _print_verdict(surprise)
    text = capsys.readouterr().out
    assert not surprise.ok
    assert surprise.to_json()["unexpected_failures"] == 1
    assert "FAIL" in text
    assert "1 failed on purpose, 1 unexpected" in text
