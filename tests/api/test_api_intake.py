"""``POST /conversions``: validated, bounded, all-or-nothing, durable before 202, duplicates folded,
guarded by the bearer token when one is configured."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path as FsPath
from typing import Any

import pytest

from controller.api.app import create_app
from controller.core.ports import Ledger
from controller.ledger.sqlite import SQLiteLedger
from controller.service import Service

from .conftest import GROUPS
from .support import TOKEN, client, make_service, make_settings, write_flag

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}


def total(ledger: Ledger) -> int:
    """Every record the ledger holds, from its counters."""
    return sum(ledger.counts().by_state.values())


def body(*items: Any) -> bytes:
    return json.dumps({"conversions": list(items)}).encode()


def item(cid: str = "c-1", tenant: Any = 7, **extra: Any) -> dict[str, Any]:
    return {"conversion_id": cid, "tenant_id": tenant, **extra}


async def test_a_valid_batch_is_accepted_in_order_and_durable_before_the_answer(
    service: Service, tmp_path: FsPath
) -> None:
    """202 lists the ids in request order; a second connection to the store already sees them."""
    async with client(create_app(service, None)) as c:
        r = await c.post(
            "/conversions",
            content=body(item("b-2", 2, params={"report": "monthly"}), item("a-1", 1)),
            headers=JSON,
        )
    assert r.status_code == 202
    assert r.json() == {"accepted": ["b-2", "a-1"], "duplicates": []}
    other = SQLiteLedger(tmp_path / "ledger.db")
    try:
        record = other.get("b-2")
        assert record is not None
        assert (record.tenant_id, record.params, record.state.value) == (2, {"report": "monthly"}, "received")
    finally:
        other.close()


async def test_a_repeated_id_is_a_duplicate_never_a_second_conversion(service: Service) -> None:
    """Within one request the first occurrence wins; against the ledger the recorded one stays."""
    async with client(create_app(service, None)) as c:
        first = await c.post(
            "/conversions", content=body(item("x", 1), item("y", 2), item("x", 1)), headers=JSON
        )
        again = await c.post("/conversions", content=body(item("y", 2), item("z", 4)), headers=JSON)
    assert first.json() == {"accepted": ["x", "y"], "duplicates": ["x"]}
    assert again.json() == {"accepted": ["z"], "duplicates": ["y"]}
    assert total(service.ledger) == 3
    recorded_x, recorded_y = service.ledger.get("x"), service.ledger.get("y")
    assert recorded_x is not None
    assert recorded_x.tenant_id == 1
    assert recorded_y is not None
    assert (recorded_y.tenant_id, recorded_y.params) == (2, {})


@pytest.mark.parametrize(
    ("items", "says"),
    [
        (
            (item("y", 9), item("n-1", 4)),
            "conversion 'y' was already sent with other content (tenant_id is 2 there and 9 here)",
        ),
        (
            (item("n-1", 4), item("y", 2, params={"report": "weekly"})),
            "params['report'] is absent there and 'weekly' here",
        ),
        (
            (item("n-1", 4), item("n-1", 5)),
            "conversion 'n-1' was already sent with other content (tenant_id is 4 there and 5 here)",
        ),
    ],
)
async def test_an_id_sent_again_with_other_content_is_409_naming_it_and_records_nothing(
    service: Service, items: tuple[dict[str, Any], ...], says: str
) -> None:
    """Same id, same content: a duplicate. Same id, other content: a conflict, and nothing stored."""
    async with client(create_app(service, None)) as c:
        assert (await c.post("/conversions", content=body(item("y", 2)), headers=JSON)).status_code == 202
        r = await c.post("/conversions", content=body(*items), headers=JSON)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert says in r.json()["error"]["message"]
    assert total(service.ledger) == 1
    assert service.ledger.get("n-1") is None
    recorded = service.ledger.get("y")
    assert recorded is not None
    assert (recorded.tenant_id, recorded.params) == (2, {})


async def test_an_empty_batch_is_accepted_and_changes_nothing(service: Service) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions", content=body(), headers=JSON)
    assert (r.status_code, r.json()) == (202, {"accepted": [], "duplicates": []})
    assert total(service.ledger) == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/json;charset=UTF-8", "application/vnd.cutover+json"],
)
async def test_json_media_types_are_accepted(service: Service, content_type: str) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions", content=body(item()), headers={"content-type": content_type})
    assert r.status_code == 202


BAD_BODIES: list[tuple[str, bytes, int, str, int | None, str | None]] = [
    ("truncated JSON", b'{"conversions": [', 400, "malformed_json", None, None),
    ("not UTF-8", b'{"conversions": ["\xff"]}', 400, "malformed_json", None, None),
    (
        "NaN",
        b'{"conversions": [{"conversion_id": "a", "tenant_id": NaN}]}',
        400,
        "malformed_json",
        None,
        None,
    ),
    (
        "repeated key",
        b'{"conversions": [{"conversion_id": "a", "conversion_id": "b", "tenant_id": 1}]}',
        400,
        "malformed_json",
        None,
        None,
    ),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, 400, "malformed_json", None, None),
    ("array body", b"[]", 422, "invalid_body", None, None),
    ("missing conversions", b"{}", 422, "invalid_body", None, "conversions"),
    ("conversions not a list", b'{"conversions": {"a": 1}}', 422, "invalid_body", None, "conversions"),
    (
        "unknown top-level field",
        b'{"conversions": [], "dry_run": true}',
        422,
        "invalid_body",
        None,
        "dry_run",
    ),
    ("item not an object", body(item("ok"), "c-2"), 422, "invalid_item", 1, None),
    ("unknown item field", body({"conversion_id": "a", "tenantId": 1}), 422, "invalid_item", 0, "tenantId"),
    ("missing conversion id", body({"tenant_id": 1}), 422, "invalid_item", 0, "conversion_id"),
    ("missing tenant", body({"conversion_id": "a"}), 422, "invalid_item", 0, "tenant_id"),
]
BAD_IDS: list[Any] = [
    "",
    "x" * 129,
    "a/b",
    "../etc",
    "a\\b",
    "a\nb",
    "ab\n",
    "a\x00b",
    "a\tb",
    "tab\x7f",
    " a",
    ".hidden",
    "-a",
    "_a",
    "caf\u00e9",
    "a b",
    "a%2Fb",
    "a?b",
    5,
    None,
    ["a"],
]
BAD_TENANTS: list[Any] = [0, -1, 1.5, 1.0, True, False, "5", None, 2**53, 10**30, [1], {"id": 1}]
BAD_PARAMS: list[tuple[Any, str]] = [
    (["a"], "params"),
    ("a=b", "params"),
    ({"a": 1}, "params.a"),
    ({"a": None}, "params.a"),
    ({"a": {"b": "c"}}, "params.a"),
    ({"a": ["b"]}, "params.a"),
    ({"": "x"}, "params."),
    ({"a b": "x"}, "params.a b"),
    ({"1a": "x"}, "params.1a"),
    ({"k" * 65: "x"}, "params." + "k" * 61 + "..."),
    ({f"k{i}": "v" for i in range(33)}, "params"),
    ({"a": "v" * 1025}, "params.a"),
    ({"a": "\ud800"}, "params.a"),
]


async def _rejects(
    service: Service, content: bytes, status: int, code: str, index: int | None, field: str | None
) -> dict[str, Any]:
    seeded = await _seed_one(service)
    before = total(service.ledger)
    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions", content=content, headers=JSON)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error.get("item") == index
    assert error.get("field") == field
    assert total(service.ledger) == before, "a rejected request must not write anything"
    assert service.ledger.get(seeded) is not None
    return dict(error)


async def _seed_one(service: Service) -> str:
    async with client(create_app(service, None)) as c:
        await c.post("/conversions", content=body(item("already-there", 1)), headers=JSON)
    return "already-there"


@pytest.mark.parametrize(
    ("content", "status", "code", "index", "field"),
    [b[1:] for b in BAD_BODIES],
    ids=[b[0] for b in BAD_BODIES],
)
async def test_a_malformed_body_is_refused_whole(
    service: Service, content: bytes, status: int, code: str, index: int | None, field: str | None
) -> None:
    """The error names the item and field at fault; nothing of the request is written."""
    await _rejects(service, content, status, code, index, field)


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
async def test_a_bad_conversion_id_is_refused_naming_item_and_field(service: Service, bad: Any) -> None:
    """Ids are 1-128 characters of a safe set: no separators, control characters, dots first."""
    content = body(item("good-1"), item("good-2"), item(bad))
    error = await _rejects(service, content, 422, "invalid_item", 2, "conversion_id")
    assert error["message"].startswith("conversions[2].conversion_id: ")
    assert service.ledger.get("good-1") is None


@pytest.mark.parametrize("bad", BAD_TENANTS, ids=repr)
async def test_a_tenant_that_is_not_a_whole_number_from_one_is_refused(service: Service, bad: Any) -> None:
    error = await _rejects(service, body(item("ok-1"), item("t", bad)), 422, "invalid_item", 1, "tenant_id")
    assert "whole number" in error["message"]


@pytest.mark.parametrize(("params", "field"), BAD_PARAMS, ids=[f[1][:20] for f in BAD_PARAMS])
async def test_params_must_be_a_bounded_map_of_strings(service: Service, params: Any, field: str) -> None:
    await _rejects(service, body(item("p", 1, params=params)), 422, "invalid_item", 0, field)


async def test_params_at_their_limits_are_accepted(service: Service) -> None:
    params = {f"k{i:02d}" + "x" * 60: "v" * 1024 for i in range(32)}
    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions", content=body(item("p", 1, params=params)), headers=JSON)
    assert r.status_code == 202
    record = service.ledger.get("p")
    assert record is not None
    assert record.params == params


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"content-type": "text/plain"}, "'text/plain'"),
        ({"content-type": "application/x-www-form-urlencoded"}, "'application/x-www-form-urlencoded'"),
        ({}, "'none'"),
        ({"content-type": "application/json; charset=latin-1"}, "'latin-1'"),
    ],
    ids=["text", "form", "none", "latin-1"],
)
async def test_a_body_that_is_not_utf8_json_is_refused_with_415(
    service: Service, headers: dict[str, str], expected: str
) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions", content=body(item()), headers=headers)
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert expected in r.json()["error"]["message"]
    assert total(service.ledger) == 0


async def test_too_many_items_are_refused_whole(service: Service) -> None:
    """The default limit is 1,000 conversions per request: 1,000 pass, 1,001 are refused."""
    items = [item(f"c{i}", 1 + i % 50) for i in range(1001)]
    async with client(create_app(service, None)) as c:
        over = await c.post("/conversions", content=body(*items), headers=JSON)
        at_limit = await c.post("/conversions", content=body(*items[:1000]), headers=JSON)
    assert over.status_code == 422
    assert over.json()["error"] == {
        "code": "too_many_items",
        "message": "1001 conversions in one request; at most 1000 are accepted",
        "field": "conversions",
    }
    assert at_limit.status_code == 202
    assert total(service.ledger) == 1000


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(tmp_path: FsPath) -> None:
    """Content-Length alone decides: the app answers 413 without consuming the body."""
    service, _ = make_service(tmp_path, settings=make_settings(tmp_path, max_body_bytes=4096))
    consumed = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal consumed
        for _ in range(64):
            consumed += 1
            yield b" " * 1024

    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions", content=stream(), headers={**JSON, "content-length": str(64 * 1024)})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    assert consumed <= 1
    assert total(service.ledger) == 0
    service.close()


async def test_an_undeclared_body_is_counted_while_it_arrives(tmp_path: FsPath) -> None:
    """Without Content-Length (chunked), reading stops as soon as the limit is passed."""
    service, _ = make_service(tmp_path, settings=make_settings(tmp_path, max_body_bytes=4096))
    sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"conversions": ['
        for i in range(200):
            sent += 1
            yield json.dumps(item(f"c{i}")).encode() + b","

    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions", content=stream(), headers=JSON)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    assert sent < 200
    assert total(service.ledger) == 0
    service.close()


async def test_a_non_numeric_content_length_is_refused(service: Service) -> None:
    app = create_app(service, None)
    async with client(app) as c:
        request = c.build_request("POST", "/conversions", content=body(item()), headers=JSON)
        request.headers["content-length"] = "12abc"
        r = await c.send(request)
    assert r.status_code == 422
    assert total(service.ledger) == 0


# -- auth -----------------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: FsPath) -> Any:
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    service, _ = make_service(tmp_path, settings=make_settings(tmp_path, api_token=TOKEN))
    yield service
    service.close()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        "Bearer caf\u00e9",
    ],
    ids=repr,
)
async def test_intake_without_the_right_bearer_token_is_401_and_writes_nothing(
    guarded: Service, authorization: str | None
) -> None:
    headers: dict[str, Any] = dict(JSON)
    if authorization is not None:
        headers["authorization"] = authorization.encode("utf-8")
    async with client(create_app(guarded, None)) as c:
        r = await c.post("/conversions", content=body(item()), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] == "unauthorized"
    assert TOKEN not in r.text
    assert total(guarded.ledger) == 0


async def test_the_token_is_checked_before_the_body(guarded: Service) -> None:
    """An unauthenticated caller cannot make the service parse (or size up) anything."""
    async with client(create_app(guarded, None)) as c:
        r = await c.post("/conversions", content=b"{not json", headers=JSON)
    assert r.status_code == 401


async def test_intake_with_the_right_token_is_accepted(guarded: Service) -> None:
    async with client(create_app(guarded, None), token=TOKEN) as c:
        r = await c.post("/conversions", content=body(item()), headers=JSON)
    assert r.status_code == 202
    assert total(guarded.ledger) == 1


async def test_reads_stay_open_when_a_token_is_set(guarded: Service) -> None:
    """Load balancers and monitors read without credentials."""
    async with client(create_app(guarded, None)) as c:
        for url in (
            "/healthz",
            "/readyz",
            "/status",
            "/metrics",
            "/conversions",
            "/tenants",
            "/tenants/1/route",
            "/",
        ):
            assert (await c.get(url)).status_code == 200, url


async def test_without_a_token_configured_intake_is_open(service: Service) -> None:
    async with client(create_app(service, None)) as c:
        r = await c.post("/conversions", content=body(item()), headers=JSON)
    assert r.status_code == 202


async def test_the_token_scheme_appears_in_openapi_only_when_configured(
    guarded: Service, service: Service
) -> None:
    async with client(create_app(guarded, None)) as c:
        with_token = (await c.get("/openapi.json")).json()
    async with client(create_app(service, None)) as c:
        without = (await c.get("/openapi.json")).json()
    assert with_token["paths"]["/conversions"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in without["paths"]["/conversions"]["post"]
    assert TOKEN not in json.dumps(with_token)
