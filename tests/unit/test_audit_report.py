"""scripts/audit.py, the judge of the dependency audit in scripts/test.sh, on canned pip-audit JSON:
a vulnerability with a fixed release fails the run, one without does not, an unreadable report
is an error of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit.py"

# The shape pip-audit 2.x writes with --format json (ids and versions as published).
FIXABLE = {
    "name": "jinja2",
    "version": "3.1.4",
    "vulns": [
        {
            "id": "GHSA-q2x7-8rv6-6q7h",
            "fix_versions": ["3.1.5"],
            "aliases": ["CVE-2024-56201"],
            "description": "An oversight in how the Jinja sandboxed environment ...",
        }
    ],
}
UNFIXED = {
    "name": "somelib",
    "version": "1.0",
    "vulns": [{"id": "PYSEC-2099-1", "fix_versions": [], "aliases": [], "description": "..."}],
}
CLEAN = {"name": "httpx", "version": "0.28.1", "vulns": []}
SKIPPED = {
    "name": "anyio",
    "skip_reason": "Dependency not found on PyPI and could not be audited: anyio (4.16.0)",
}


def judge(tmp_path: Path, doc: Any) -> subprocess.CompletedProcess[str]:
    report = tmp_path / "audit.json"
    report.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(report)], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_vulnerability_with_a_fix_fails_and_is_named(tmp_path: Path) -> None:
    done = judge(tmp_path, {"dependencies": [CLEAN, FIXABLE, UNFIXED], "fixes": []})
    assert done.returncode == 1
    assert "FIXABLE jinja2 3.1.4: GHSA-q2x7-8rv6-6q7h (CVE-2024-56201); fixed in 3.1.5" in done.stdout
    assert "known, no fix yet: somelib 1.0: PYSEC-2099-1; no fixed release yet" in done.stdout
    assert (
        "audit: 3 of 3 dependencies checked, 0 could not be; 2 known vulnerabilities, 1 with a fix"
        in done.stdout
    )


def test_a_vulnerability_without_a_fix_is_listed_but_does_not_fail(tmp_path: Path) -> None:
    done = judge(tmp_path, {"dependencies": [CLEAN, UNFIXED, SKIPPED], "fixes": []})
    assert done.returncode == 0, done.stdout
    assert "PYSEC-2099-1" in done.stdout
    assert "FIXABLE" not in done.stdout
    assert "audit: 2 of 3 dependencies checked, 1 could not be; 1 known vulnerabilities, 0 with a fix" in (
        done.stdout
    )


def test_a_clean_report_passes(tmp_path: Path) -> None:
    done = judge(tmp_path, {"dependencies": [CLEAN], "fixes": []})
    assert done.returncode == 0
    assert "warning" not in done.stdout


def test_a_report_that_could_check_nothing_says_so(tmp_path: Path) -> None:
    done = judge(tmp_path, {"dependencies": [SKIPPED, {**SKIPPED, "name": "h11"}], "fixes": []})
    assert done.returncode == 0
    assert "audit: 0 of 2 dependencies checked, 2 could not be" in done.stdout
    assert "warning: no dependency could be checked (e.g. Dependency not found on PyPI" in done.stdout


@pytest.mark.parametrize(
    "doc",
    [
        "",
        "not json",
        "[]",
        {"vulns": []},
        {"dependencies": [{"version": "1"}]},
        {"dependencies": [{"name": "x", "version": "1", "vulns": [{"fix_versions": ["2"]}]}]},
    ],
    ids=["empty", "not JSON", "array", "no dependencies", "nameless", "id-less"],
)
def test_a_report_that_is_not_pip_audits_is_an_error(tmp_path: Path, doc: Any) -> None:
    done = judge(tmp_path, doc)
    assert done.returncode == 2
    assert "cannot read the pip-audit report" in done.stderr
    assert "FIXABLE" not in done.stdout


def test_a_missing_report_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "absent.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "absent.json" in done.stderr
