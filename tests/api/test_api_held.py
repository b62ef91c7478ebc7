"""A tenant held back by ``cutover flag rollback --tenant`` is listed as such by ``/tenants``, its
route and the dashboard, with who, when and why."""

from __future__ import annotations

from pathlib import Path as FsPath

import pytest

from controller.api.app import create_app
from controller.bootstrap import build
from flags import ops
from flags.file_store import FileVersionStore
from flags.holds import FileHolds

from .support import client, make_service, make_settings

pytestmark = pytest.mark.anyio
OP = ops.Operator(by="ops@laptop", clock=lambda: 1_780_000_000.0)


def hold_2005(tmp_path: FsPath) -> None:
    store = FileVersionStore(tmp_path / "flags.json", "migrated_tenants")
    ops.advance(store, None, to_group=None, add={2001, 2005}, max_add=10, op=OP)
    ops.rollback(store, tenants={2005}, op=OP, text="exports time out")


async def test_tenants_route_and_dashboard_list_a_held_tenant(tmp_path: FsPath) -> None:
    hold_2005(tmp_path)
    service, _ = make_service(tmp_path)
    service.held = FileHolds(tmp_path / "flags.json", "migrated_tenants")
    async with client(create_app(service, None)) as c:
        tenants = (await c.get("/tenants")).json()
        held_route = (await c.get("/tenants/2005/route")).json()
        other_route = (await c.get("/tenants/2001/route")).json()
        page = (await c.get("/")).text
    service.close()
    hold = {
        "tenant_id": 2005,
        "version": 2,
        "by": "ops@laptop",
        "at": "2026-05-28T20:26:40Z",
        "why": "exports time out",
    }
    assert tenants["held"] == [hold]
    assert (held_route["path"], held_route["held"]) == ("legacy", hold)
    assert other_route["held"] is None
    assert 'id="held"' in page
    assert "exports time out" in page


async def test_a_release_ends_the_hold_on_the_next_read(tmp_path: FsPath) -> None:
    hold_2005(tmp_path)
    held = FileHolds(tmp_path / "flags.json", "migrated_tenants")
    assert list(held()) == [2005]
    ops.release(FileVersionStore(tmp_path / "flags.json", "migrated_tenants"), [2005], op=OP)
    assert held() == {}


def test_the_composition_root_reads_holds_for_a_flag_file_only(tmp_path: FsPath) -> None:
    hold_2005(tmp_path)
    service = build(make_settings(tmp_path))
    try:
        assert service.held is not None
        assert list(service.held()) == [2005]
    finally:
        service.close()
