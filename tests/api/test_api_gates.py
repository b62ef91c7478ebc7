"""``GET /gates``, the gate panel on the dashboard, the ``cutover_gate_verdict`` gauge on ``/metrics``
and the auto-advance state on ``/status``."""

from __future__ import annotations

import json
import time
from pathlib import Path as FsPath

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.api.app import create_app
from controller.bootstrap import make_auto
from controller.core.domain import Path
from controller.service import Service
from tests.fakes import record_finished

from .conftest import GROUPS
from .support import client, make_service, write_flag, write_rollout

pytestmark = pytest.mark.anyio


def service_with_evidence(tmp_path: FsPath, fails_every: int = 0, auto: bool = False) -> Service:
    """group-1 (tenants 1-3) moved an hour ago with 120 conversions since; a week of the old path before."""
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    write_rollout(tmp_path / "rollout.json", GROUPS)
    if auto:
        doc = json.loads((tmp_path / "rollout.json").read_text())
        doc["auto"] = {"bake": "2h"}
        (tmp_path / "rollout.json").write_text(json.dumps(doc))
    service, _ = make_service(tmp_path)
    now = time.time()
    record_finished(service.ledger, "old", range(1, 13), Path.LEGACY, at=now - 7200, count=240)
    fails = (lambda i: i % fails_every == 0) if fails_every else (lambda i: False)
    record_finished(service.ledger, "new", GROUPS["group-1"], Path.NEW, at=now - 3600, count=120, fails=fails)
    service.controller.run_cycle()
    return service


async def test_gates_judge_the_groups_on_the_new_path(tmp_path: FsPath) -> None:
    service = service_with_evidence(tmp_path)
    try:
        async with client(create_app(service, None)) as c:
            r = await c.get("/gates")
    finally:
        service.close()
    assert r.status_code == 200
    doc = r.json()
    assert doc["verdict"] == "pass"
    [group] = doc["groups"]
    assert (group["name"], group["tenants"], group["migrated"], group["verdict"]) == ("group-1", 3, 3, "pass")
    assert (group["new"]["finished"], group["legacy"]["finished"]) == (120, 60)
    assert group["checks"][0]["name"] == "minimum_conversions"


async def test_a_failing_group_shows_on_the_dashboard_and_in_metrics(tmp_path: FsPath) -> None:
    service = service_with_evidence(tmp_path, fails_every=3)
    try:
        async with client(create_app(service, None)) as c:
            page = (await c.get("/")).text
            metrics = (await c.get("/metrics")).text
            status = (await c.get("/status")).json()
    finally:
        service.close()
    assert '<section id="gates"' in page
    assert '<span class="badge bad" id="gate-verdict">fail</span>' in page
    assert 'data-gate="group-1"' in page
    assert "auto-advance: off" in page
    gauges = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "cutover_gate_verdict"
    }
    assert gauges[(("group", "group-1"), ("verdict", "fail"))] == 1
    assert gauges[(("group", "group-1"), ("verdict", "pass"))] == 0
    assert status["auto_advance"] == {
        "enabled": False,
        "acting": False,
        "next_action": None,
        "group": None,
        "at": None,
        "waiting_for": None,
        "why": "",
        "last_action": None,
    }


async def test_status_shows_what_auto_advance_waits_for(tmp_path: FsPath) -> None:
    service = service_with_evidence(tmp_path, auto=True)
    service.auto = make_auto(service.settings, service, "test", None)
    try:
        service.auto.tick(time.time())
        async with client(create_app(service, None)) as c:
            status = (await c.get("/status")).json()
            page = (await c.get("/")).text
    finally:
        service.close()
    auto = status["auto_advance"]
    assert (auto["enabled"], auto["acting"], auto["next_action"], auto["group"]) == (
        True,
        True,
        "advance",
        "group-2",
    )
    assert auto["why"] == "nothing: the gate passes"
    assert auto["last_action"]["action"] == "advance"
    assert "auto-advance: next <b>advance group-2</b>" in page
