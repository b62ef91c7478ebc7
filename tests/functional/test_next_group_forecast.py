"""The forecast a dashboard panel shows: moving the next rollout group, from a running service."""

from __future__ import annotations

import json
import time
from pathlib import Path

from controller.bootstrap import build, next_group_forecast
from controller.core.domain import ConversionRequest, ConversionState
from controller.core.domain import Path as Route
from controller.core.ports import Claim, Dispatched, Finish
from controller.service import Service
from controller.settings import Settings
from flags import ops
from flags.file_store import FileVersionStore
from flags.rollout import load_plan

PLAN = {"groups": [{"name": "quiet", "tenant_ids": [1, 2]}, {"name": "busy", "tenant_ids": [3, 4]}]}


def settings(tmp_path: Path) -> Settings:
    (tmp_path / "rollout.json").write_text(json.dumps(PLAN))
    (tmp_path / "flags.json").write_text(
        json.dumps({"migrated_tenants": {"enabled": True, "tenant_ids": [1, 2]}})
    )
    return Settings(
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        flag_file=tmp_path / "flags.json",
        rollout_file=tmp_path / "rollout.json",
        local_state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        reconcile_seconds=3600,
    )


def yesterday(service: Service) -> None:
    """A peak a day ago: 40 conversions of tenants 1-4, 1 and 2 on the new path."""
    day = time.time() - 86400
    for i in range(40):
        tenant = 1 + i % 4
        route = Route.NEW if tenant <= 2 else Route.LEGACY
        request = ConversionRequest(f"h{i}", tenant, {})
        service.ledger.accept([request], day + i)
        owned = service.ledger.claim([Claim(request, route, "1", "test")], day + i)[0].record
        taken = service.ledger.mark_dispatching([owned], f"b{i}", day + i)[0]
        service.ledger.mark_dispatched([Dispatched(f"h{i}", taken.fence, f"j{i}")], day + i)
        done = Finish(f"h{i}", taken.fence, ConversionState.SUCCEEDED, "", 60.0, day + i + 30)
        service.ledger.mark_finished([done], day + i + 95)


def test_the_next_group_is_forecast_from_the_last_peak_and_the_flag_in_force(tmp_path: Path):
    service = build(settings(tmp_path))
    try:
        before_any_cycle = next_group_forecast(service)
        service.controller.run_cycle()  # the flag in force: tenants 1 and 2
        assert "the ledger received nothing" in next_group_forecast(service)["unavailable"]
        yesterday(service)
        panel = next_group_forecast(service)
    finally:
        service.close()
    assert before_any_cycle["group"] == "quiet"  # no flag seen yet: the first group is next
    assert panel["group"] == "busy"
    doc = panel["forecast"]
    assert (doc["before"]["migrated_tenants"], doc["after"]["migrated_tenants"]) == (2, 4)
    assert doc["before"]["conversions"] == {"legacy": 20, "new": 20}
    assert doc["after"]["conversions"] == {"legacy": 0, "new": 40}
    assert doc["profile"]["name"] == "last-peak"


def test_the_forecast_leaves_a_held_tenant_out_of_the_next_group_as_an_advance_would(tmp_path: Path):
    cfg = settings(tmp_path)
    (tmp_path / "flags.json").unlink()
    store = FileVersionStore(tmp_path / "flags.json", cfg.flag_key)
    op = ops.Operator(by="test", clock=time.time)
    ops.advance(store, load_plan(tmp_path / "rollout.json"), to_group="quiet", add={4}, max_add=10, op=op)
    ops.rollback(store, tenants={4}, op=op, text="tenant 4's exports time out")  # held back
    service = build(cfg)
    try:
        service.controller.run_cycle()  # the flag in force: tenants 1 and 2
        yesterday(service)
        panel = next_group_forecast(service)
    finally:
        service.close()
    assert (panel["group"], panel["held"]) == ("busy", [4])
    doc = panel["forecast"]
    assert (doc["before"]["migrated_tenants"], doc["after"]["migrated_tenants"]) == (2, 3)
    assert doc["after"]["conversions"] == {"legacy": 10, "new": 30}
