"""Tenants: where a tenant would route now and why, its in-flight work per path, and its cutover
state (legacy, draining-to-new, new, draining-to-legacy) per rollout group."""

from __future__ import annotations

import time
from pathlib import Path as FsPath
from typing import Any

import pytest

from controller.api.app import create_app
from controller.api.tenants import (
    InFlight,
    PlanFile,
    TenantState,
    cutover_state,
    in_flight_by_tenant,
    overview,
)
from controller.core.domain import ConversionRecord, ConversionRequest, ConversionState, Path
from controller.core.ports import Claim
from controller.ledger.sqlite import SQLiteLedger
from controller.service import Service
from flags.rollout import Group
from flags.snapshot import FlagSnapshot

from .support import client, make_service, make_settings, write_flag, write_rollout

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("flagged", "legacy", "new", "state"),
    [
        pytest.param(False, 0, 0, TenantState.LEGACY, id="never migrated"),
        pytest.param(False, 3, 0, TenantState.LEGACY, id="legacy busy, not flagged"),
        pytest.param(True, 2, 0, TenantState.DRAINING_TO_NEW, id="flagged, old path still busy"),
        pytest.param(True, 2, 5, TenantState.DRAINING_TO_NEW, id="flagged, both busy"),
        pytest.param(True, 0, 5, TenantState.NEW, id="flagged, only new busy"),
        pytest.param(True, 0, 0, TenantState.NEW, id="flagged, idle"),
        pytest.param(False, 0, 1, TenantState.DRAINING_TO_LEGACY, id="rolled back, new still busy"),
        pytest.param(False, 4, 1, TenantState.DRAINING_TO_LEGACY, id="rolled back, both busy"),
    ],
)
def test_a_move_is_complete_when_the_losing_path_has_nothing_left(
    flagged: bool, legacy: int, new: int, state: TenantState
) -> None:
    assert cutover_state(flagged, InFlight(legacy, new)) is state


def claim(service: Service, cid: str, tenant: int, path: Path) -> None:
    """Record an ownership directly, as a cycle under an earlier flag version would have."""
    service.ledger.claim([Claim(ConversionRequest(cid, tenant, {}), path, "v-earlier", "test")], time.time())


async def test_route_of_a_migrated_tenant_with_old_work_still_running(service: Service) -> None:
    """Flagged now, but the old path owns two unfinished conversions: draining to new."""
    claim(service, "old-1", 2, Path.LEGACY)
    claim(service, "old-2", 2, Path.LEGACY)
    claim(service, "new-1", 2, Path.NEW)
    service.controller.run_cycle()
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/tenants/2/route")).json()
    assert doc["tenant_id"] == 2
    assert doc["path"] == "new"
    assert doc["flag_version"] == service.controller.last_report.flag.snapshot.version  # type: ignore[union-attr]
    assert doc["reason"].startswith("tenant listed in flag")
    assert doc["flag_state"] == "ok"
    assert doc["group"] == "group-1"
    assert doc["cutover_state"] in {"draining-to-new", "new"}  # the fake backends finish fast
    assert sum(doc["in_flight"].values()) == len(doc["in_flight_conversions"])


async def test_route_counts_unfinished_work_per_path(service: Service) -> None:
    """Without a cycle in between, claimed work is exactly what the ledger holds."""
    service.controller.flags.read()
    claim(service, "old-1", 2, Path.LEGACY)
    claim(service, "old-2", 2, Path.LEGACY)
    claim(service, "new-1", 2, Path.NEW)
    claim(service, "other", 3, Path.LEGACY)
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/tenants/2/route")).json()
    assert doc["in_flight"] == {"legacy": 2, "new": 1}
    assert doc["cutover_state"] == "draining-to-new"
    assert sorted(x["conversion_id"] for x in doc["in_flight_conversions"]) == ["new-1", "old-1", "old-2"]
    assert {x["state"] for x in doc["in_flight_conversions"]} == {"claimed"}


async def test_route_after_a_rollback_while_the_new_path_is_busy(service: Service, tmp_path: FsPath) -> None:
    claim(service, "n-1", 3, Path.NEW)
    write_flag(tmp_path / "flags.json", [1, 2])  # tenant 3 removed
    service.controller.flags.read()
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/tenants/3/route")).json()
    assert doc["path"] == "legacy"
    assert doc["reason"].startswith("tenant not listed in flag")
    assert doc["cutover_state"] == "draining-to-legacy"
    assert doc["in_flight"] == {"legacy": 0, "new": 1}


async def test_route_of_a_tenant_outside_the_plan_and_the_flag(service: Service) -> None:
    service.controller.run_cycle()
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/tenants/4242/route")).json()
    assert (doc["path"], doc["cutover_state"], doc["group"]) == ("legacy", "legacy", None)
    assert doc["in_flight_conversions"] == []


async def test_route_under_a_switched_off_flag(service: Service, tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", [], enabled=False)
    service.controller.run_cycle()
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/tenants/1/route")).json()
    assert doc["path"] == "legacy"
    assert "switched off" in doc["reason"]
    assert doc["flag_state"] == "disabled"


async def test_route_holds_when_there_is_no_flag_and_the_policy_is_pause(tmp_path: FsPath) -> None:
    service, _ = make_service(tmp_path, settings=make_settings(tmp_path, on_flag_unavailable="pause"))
    service.controller.run_cycle()
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/tenants/1/route")).json()
    assert doc["path"] is None
    assert doc["flag_version"] is None
    assert "no valid flag seen yet" in doc["reason"]
    service.close()


@pytest.mark.parametrize("tenant", ["0", "-1", "1.5", "abc", "true", str(2**53), "1%2F2"])
async def test_route_of_a_malformed_tenant_is_refused_in_json(service: Service, tenant: str) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.get(f"/tenants/{tenant}/route")
    assert r.status_code in (404, 422)
    assert "error" in r.json()


async def test_tenants_view_counts_each_group(service: Service) -> None:
    claim(service, "busy-legacy", 1, Path.LEGACY)  # group-1 is flagged: tenant 1 drains to new
    claim(service, "busy-new", 5, Path.NEW)  # group-2 is not: tenant 5 drains to legacy
    claim(service, "stray", 99, Path.NEW)  # outside the plan, not flagged
    service.controller.flags.read()
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/tenants")).json()
    groups = {g["name"]: g for g in doc["groups"]}
    assert list(groups) == ["group-1", "group-2", "group-3", "not in a rollout group"]
    assert (groups["group-1"]["tenants"], groups["group-1"]["migrated"]) == (3, 3)
    assert groups["group-1"]["states"] == {
        "legacy": 0,
        "draining-to-new": 1,
        "new": 2,
        "draining-to-legacy": 0,
    }
    assert groups["group-2"]["states"] == {
        "legacy": 3,
        "draining-to-new": 0,
        "new": 0,
        "draining-to-legacy": 1,
    }
    assert groups["group-3"]["migrated"] == 0
    assert groups["not in a rollout group"]["states"]["draining-to-legacy"] == 1
    assert doc["flag_tenants"] == 3
    assert doc["draining_total"] == 3
    assert {(d["tenant_id"], d["state"]) for d in doc["draining"]} == {
        (1, "draining-to-new"),
        (5, "draining-to-legacy"),
        (99, "draining-to-legacy"),
    }
    assert doc["complete"] is True


async def test_a_broken_rollout_plan_is_reported_and_the_last_good_one_kept(
    service: Service, tmp_path: FsPath
) -> None:
    app = create_app(service, None)
    async with client(app) as c:
        good = (await c.get("/tenants")).json()
        (tmp_path / "rollout.json").write_text('{"groups": [{"name": "g", "tenant_ids": [0]}]}')
        kept = (await c.get("/tenants")).json()
    assert [g["name"] for g in kept["groups"]] == [g["name"] for g in good["groups"]]
    assert "tenant id 0 is outside" in kept["plan_problem"]


def test_the_rollout_plan_is_reread_when_the_file_changes(tmp_path: FsPath) -> None:
    path = tmp_path / "rollout.json"
    write_rollout(path, {"a": [1, 2]})
    plan = PlanFile(path)
    assert plan.groups() == [Group("a", frozenset({1, 2}))]
    write_rollout(path, {"a": [1, 2], "b": [3, 4, 5, 6]})
    assert [g.name for g in plan.groups()] == ["a", "b"]
    path.unlink()
    assert [g.name for g in plan.groups()] == ["a", "b"]
    assert "rollout plan" in plan.problem


def test_without_a_plan_the_flagged_and_busy_tenants_form_one_group() -> None:
    snap = FlagSnapshot("v1", True, frozenset({1, 2, 3}), "file", 0.0)
    view = overview([], snap, {4: InFlight(1, 0), 3: InFlight(2, 0)})
    assert [(g.name, g.tenants, g.migrated) for g in view.groups] == [("not in a rollout group", 4, 3)]
    assert view.states[TenantState.DRAINING_TO_NEW] == 1


def test_the_view_of_five_thousand_tenants_is_bounded() -> None:
    """Aggregates per group, and a capped list of draining tenants, however many tenants there are."""
    groups = [Group(f"group-{g}", frozenset(range(g * 1000 + 1, g * 1000 + 1001))) for g in range(5)]
    flagged = frozenset(t for g in groups[:3] for t in g.tenant_ids)
    load = {t: InFlight(1, 1) for g in groups for t in g.tenant_ids}
    view = overview(groups, FlagSnapshot("v9", True, flagged, "file", 0.0), load)
    assert len(view.groups) == 5
    assert sum(g.tenants for g in view.groups) == 5000
    assert sum(g.migrated for g in view.groups) == 3000
    assert view.draining_total == 5000
    assert len(view.draining) == 50


def test_in_flight_counts_agree_with_or_without_the_ledgers_fast_read(tmp_path: FsPath) -> None:
    """A ledger without ``in_flight_by_tenant`` (e.g. another store) is read page by page instead."""
    ledger = SQLiteLedger(tmp_path / "l.db")
    now = time.time()
    ledger.claim(
        [
            Claim(ConversionRequest(f"c{i}", 1 + i % 7, {}), Path.NEW if i % 3 else Path.LEGACY, "v", "")
            for i in range(2500)
        ],
        now,
    )
    taken = ledger.mark_dispatching(ledger.pending_dispatch(Path.NEW, 400), "N1", now)
    from controller.core.ports import Dispatched, Finish

    ledger.mark_dispatched([Dispatched(r.conversion_id, r.fence, "j") for r in taken], now)
    ledger.mark_finished(
        [Finish(r.conversion_id, r.fence, ConversionState.SUCCEEDED) for r in taken[:100]], now
    )

    class PortOnly:
        """Only the ``Ledger`` port's ``query``."""

        def query(self, **kwargs: Any) -> tuple[list[ConversionRecord], str | None]:
            return ledger.query(**kwargs)

    fast, fast_complete = in_flight_by_tenant(ledger)
    slow, slow_complete = in_flight_by_tenant(PortOnly())  # type: ignore[arg-type]
    assert fast == slow
    assert fast_complete
    assert slow_complete
    assert sum(f.legacy + f.new for f in fast.values()) == 2400
    ledger.close()
