"""``GET /conversions/{id}``, ``GET /conversions`` (filtered, paginated) and
``POST /conversions/{id}/requeue`` (only from FAILED, guarded by the token)."""

from __future__ import annotations

import time
from pathlib import Path as FsPath
from typing import Any

import pytest

from controller.api.app import create_app
from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.service import Service

from .conftest import GROUPS
from .support import TOKEN, FakeBackend, client, make_service, make_settings, run_until_settled, write_flag

pytestmark = pytest.mark.anyio

RECORD_FIELDS = {
    "conversion_id",
    "tenant_id",
    "path",
    "flag_version",
    "state",
    "job_ref",
    "attempts",
    "claimed_at",
    "finished_at",
    "reason",
}


def settled(tmp_path: FsPath, *, failing: tuple[str, ...] = (), token: str | None = None) -> Service:
    """A service whose ledger holds 25 finished conversions of tenants 1-12 (group-1 on the new path)."""
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    backends = {Path.LEGACY: FakeBackend(Path.LEGACY, failing), Path.NEW: FakeBackend(Path.NEW, failing)}
    service, _ = make_service(tmp_path, settings=make_settings(tmp_path, api_token=token), backends=backends)
    service.ledger.accept(
        [ConversionRequest(f"c{i:02d}", 1 + i % 12, {"n": str(i)}) for i in range(25)], time.time()
    )
    run_until_settled(service)
    return service


async def test_a_conversion_explains_its_path_version_job_and_outcome(tmp_path: FsPath) -> None:
    service = settled(tmp_path)
    async with client(create_app(service, None)) as c:
        r = await c.get("/conversions/c00")
    doc = r.json()
    assert r.status_code == 200
    assert doc.keys() >= RECORD_FIELDS
    assert doc["tenant_id"] == 1
    assert doc["path"] == "new"
    assert doc["flag_version"].startswith("sha-")
    assert doc["state"] == "succeeded"
    assert doc["job_ref"].startswith("new-")
    assert doc["attempts"] == 1
    assert doc["claimed_at"] <= doc["finished_at"]
    assert doc["params"] == {"n": "0"}
    service.close()


async def test_an_unknown_conversion_is_404_in_json(service: Service) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.get("/conversions/nope")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "conversion 'nope' is not in the ledger"}}


@pytest.mark.parametrize(
    ("raw_path", "status"),
    [
        ("/conversions/a%2Fb", 404),  # a separator never reaches the handler as part of an id
        ("/conversions/%2E%2E", 422),
        ("/conversions/.hidden", 422),
        ("/conversions/a%00b", 422),
        ("/conversions/a%0A", 422),
        ("/conversions/a%20b", 422),
        ("/conversions/caf%C3%A9", 422),
        ("/conversions/" + "x" * 129, 422),
        ("/conversions/a%5Cb", 422),
    ],
)
async def test_a_malformed_id_is_refused_in_json(service: Service, raw_path: str, status: int) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.get(raw_path)
    assert r.status_code == status
    assert r.json()["error"]["code"] in {"invalid_parameter", "not_found"}


async def test_pages_walk_every_conversion_once_in_receipt_order(tmp_path: FsPath) -> None:
    service = settled(tmp_path)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    async with client(create_app(service, None)) as c:
        while True:
            params: dict[str, Any] = {"limit": 10}
            if cursor:
                params["cursor"] = cursor
            doc = (await c.get("/conversions", params=params)).json()
            seen += [r["conversion_id"] for r in doc["conversions"]]
            pages += 1
            cursor = doc["next_cursor"]
            if cursor is None:
                break
    assert pages == 3
    assert seen == [f"c{i:02d}" for i in range(25)]
    service.close()


async def test_filters_combine(tmp_path: FsPath) -> None:
    service = settled(tmp_path, failing=("c02", "c15"))
    async with client(create_app(service, None)) as c:
        new = (await c.get("/conversions", params={"path": "new", "limit": 100})).json()
        failed = (await c.get("/conversions", params={"state": "failed"})).json()
        tenant = (await c.get("/conversions", params={"tenant": 3, "state": "failed", "path": "new"})).json()
    assert {r["tenant_id"] for r in new["conversions"]} == {1, 2, 3}
    assert [r["conversion_id"] for r in failed["conversions"]] == ["c02", "c15"]
    assert [r["conversion_id"] for r in tenant["conversions"]] == ["c02"]
    assert failed["next_cursor"] is None
    service.close()


@pytest.mark.parametrize(
    "query",
    [
        {"state": "lost"},
        {"path": "both"},
        {"tenant": 0},
        {"tenant": "x"},
        {"tenant": 2**53},
        {"limit": 0},
        {"limit": 1001},
        {"cursor": "not-a-cursor"},
        {"cursor": "9" * 40},
        {"cursor": "x" * 300},
    ],
    ids=repr,
)
async def test_bad_list_parameters_are_422_naming_the_parameter(
    service: Service, query: dict[str, Any]
) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.get("/conversions", params=query)
    assert r.status_code == 422
    error = r.json()["error"]
    name = next(iter(query))
    assert error.get("field") == name or name in error["message"]


# -- requeue ----------------------------------------------------------------------------------------


async def test_requeue_frees_a_failed_conversion_and_the_next_cycle_routes_it_afresh(
    tmp_path: FsPath,
) -> None:
    """Requeued under a newer flag, the conversion goes where that flag says."""
    service = settled(tmp_path, failing=("c04",))  # tenant 5, legacy while group-2 is not migrated
    before = service.ledger.get("c04")
    assert before is not None
    assert (before.state, before.path) == (ConversionState.FAILED, Path.LEGACY)
    for backend in service.backends.values():
        assert isinstance(backend, FakeBackend)
        backend.failing.clear()
    write_flag(tmp_path / "flags.json", GROUPS["group-1"] + GROUPS["group-2"])
    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions/c04/requeue")
        run_until_settled(service)
        after = (await c.get("/conversions/c04")).json()
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["path"], r.json()["reason"]) == (
        "received",
        None,
        "requeued by operator",
    )
    assert (after["state"], after["path"]) == ("succeeded", "new")
    service.close()


@pytest.mark.parametrize("state", ["succeeded", "received", "claimed"])
async def test_requeue_of_a_conversion_that_has_not_failed_is_409(tmp_path: FsPath, state: str) -> None:
    service = settled(tmp_path)
    service.ledger.accept([ConversionRequest("fresh", 1, {})], time.time())
    target = {"succeeded": "c00", "received": "fresh"}.get(state)
    if state == "claimed":
        service.controller.flags.read()
        from controller.core.ports import Claim

        service.ledger.claim([Claim(ConversionRequest("owned", 1, {}), Path.NEW, "v1", "test")], time.time())
        target = "owned"
    before = service.ledger.get(str(target))
    async with client(create_app(service, None)) as c:
        r = await c.post(f"/conversions/{target}/requeue")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert service.ledger.get(str(target)) == before
    service.close()


async def test_requeue_of_an_unknown_conversion_is_404(service: Service) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions/ghost/requeue")
    assert r.status_code == 404


async def test_requeue_needs_the_token_when_one_is_set(tmp_path: FsPath) -> None:
    service = settled(tmp_path, failing=("c00",), token=TOKEN)
    async with client(create_app(service, None)) as c:
        anonymous = await c.post("/conversions/c00/requeue")
        unknown = await c.post("/conversions/ghost/requeue")
        wrong = await c.post("/conversions/c00/requeue", headers={"Authorization": "Bearer nope"})
    async with client(create_app(service, None), token=TOKEN) as c:
        allowed = await c.post("/conversions/c00/requeue")
    assert (anonymous.status_code, unknown.status_code, wrong.status_code) == (401, 401, 401)
    assert allowed.status_code == 200
    service.close()
