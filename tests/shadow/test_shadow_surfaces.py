"""Where the parity report is read: ``GET /shadow``, the dashboard panel and ``cutover shadow``,
all over the same ledger records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from controller.api.app import create_app
from controller.api.shadow_panel import shadow_section
from controller.bootstrap import build
from controller.core.parity import Comparison, Difference
from controller.core.shadow import ShadowKind, ShadowRecord, ShadowState, ShadowVerdict
from controller.ledger.sqlite import SQLiteLedger
from controller.service import Service
from tests.api.support import serve
from tests.shadow.support import settings

REPO = Path(__file__).resolve().parents[2]
PLANTED = Difference("Form 1", "D5", "Amount", "10.5", "11.75")


def _seed(ledger: SQLiteLedger) -> None:
    """Compared shadows: tenant 3 differs in D5; every other one matches."""
    found = Comparison()
    found.add(PLANTED)
    records = []
    for i in range(8):
        tenant = 1 + i % 4
        records.append(ShadowRecord(f"new:c{i}", f"c{i}", tenant, {}, ShadowKind.NEW, ShadowState.PENDING))
    ledger.add_shadows(records, 1.0)
    for i, r in enumerate(records):
        taken = ledger.mark_shadows_dispatching([r], f"S{i}", 2.0)
        ledger.mark_shadows_dispatched([(r.shadow_id, taken[0].fence, f"job{i}")], 3.0)
        from controller.core.ports import ShadowFinish

        ledger.finish_shadows(
            [ShadowFinish(r.shadow_id, taken[0].fence, ShadowState.SUCCEEDED, "/q/x.xlsx")], 4.0
        )
        differs = r.tenant_id == 3
        detail = found.to_json() if differs else Comparison().to_json()
        ledger.record_comparison(
            r.shadow_id, ShadowVerdict.DIFFERENT if differs else ShadowVerdict.MATCH, detail, "", 5.0
        )


@pytest.fixture
def service(tmp_path: Path) -> Service:
    made = build(settings(tmp_path))
    assert isinstance(made.ledger, SQLiteLedger)
    _seed(made.ledger)
    yield made
    made.close()


def test_get_shadow_serves_the_report(service: Service) -> None:
    with serve(create_app(service, None)) as base, httpx.Client(base_url=base) as http:
        whole = http.get("/shadow").json()
        g2 = http.get("/shadow", params={"group": "g2"}).json()
        t3 = http.get("/shadow", params={"tenant": 3}).json()
        unknown = http.get("/shadow", params={"group": "g9"})
        bad = http.get("/shadow", params={"tenant": 0})
    assert whole["enabled"] is True
    assert [(g["name"], g["samples"], g["mismatches"]) for g in whole["groups"]] == [
        ("g1", 4, 0),
        ("g2", 4, 2),
    ]
    assert [g["name"] for g in g2["groups"]] == ["g2"]
    [t] = t3["groups"][0]["tenants"]
    assert t["examples"] == [
        {"conversion_id": "c2", "sheet": "Form 1", "cell": "D5", "legacy": "10.5", "new": "11.75"},
        {"conversion_id": "c6", "sheet": "Form 1", "cell": "D5", "legacy": "10.5", "new": "11.75"},
    ]
    assert unknown.status_code == 404
    assert "no rollout group 'g9'" in unknown.json()["error"]["message"]
    assert bad.status_code == 422


def test_get_shadow_without_shadows_says_so(tmp_path: Path) -> None:
    made = build(settings(tmp_path, rollout_file=None))
    try:
        with serve(create_app(made, None)) as base, httpx.Client(base_url=base) as http:
            assert http.get("/shadow").json() == {"enabled": False, "groups": [], "noise": []}
            assert 'id="shadow"' not in http.get("/").text
    finally:
        made.close()


def test_the_dashboard_shows_parity_per_group(service: Service) -> None:
    with serve(create_app(service, None)) as base:
        page = httpx.get(base + "/").text
    assert 'id="shadow"' in page
    assert 'data-group="g2"' in page
    assert "D5" in page
    assert 'class="badge bad"' in page


def test_the_panel_escapes_what_it_shows() -> None:
    report = {
        "groups": [
            {
                "name": "<g>",
                "samples": 1,
                "mismatches": 1,
                "mismatch_rate_upper95": 1.0,
                "parity": "fail",
                "parity_reason": "x",
                "tenants": [
                    {
                        "examples": [
                            {"conversion_id": "c", "sheet": "<s>", "cell": "A1", "legacy": "<b>", "new": "&"}
                        ]
                    }
                ],
            }
        ],
        "noise": [],
    }
    html = shadow_section(report)
    assert "<g>" not in html
    assert "<b>" not in html
    assert "&lt;s&gt;" in html


def _cutover(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CUTOVER_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
        "CUTOVER_ROLLOUT_FILE": str(tmp_path / "rollout.json"),
    }
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "shadow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_cutover_shadow_prints_the_report(service: Service, tmp_path: Path) -> None:
    as_json = _cutover(tmp_path, "--json", "--group", "g2")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert [(g["name"], g["mismatches"], g["parity"]) for g in doc["groups"]] == [("g2", 2, "fail")]
    table = _cutover(tmp_path)
    assert table.returncode == 0, table.stderr
    assert "shadow parity" in table.stdout
    assert "D5" in table.stdout
    unknown = _cutover(tmp_path, "--group", "g9")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("cutover: error: no rollout group 'g9'")
