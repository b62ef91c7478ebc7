"""The API token: every mutating endpoint refuses without it (the endpoints are found from the app's
routes, so a new one cannot be missed), the comparison is constant-time, and the token never
comes back in a body, a header, the status, the metrics or the logs of a run."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from controller.api.app import create_app
from controller.core.domain import ConversionRequest, Path
from controller.service import Service

from .conftest import GROUPS
from .support import (
    TOKEN,
    FakeBackend,
    client,
    make_service,
    make_settings,
    run_controller,
    run_until_settled,
    write_flag,
)

pytestmark = pytest.mark.anyio

AGENT_TOKEN = "agent-s3cret-for-tests"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
WRONG_CREDENTIALS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong",
    f"Bearer {TOKEN[:-1]}",  # a prefix of the token
    f"Bearer {TOKEN[:1]}",
    f"Bearer {TOKEN}x",  # the token with a suffix
    f"Bearer {TOKEN} {TOKEN}",
    f"Bearer {TOKEN.upper()}",
    f"Basic {TOKEN}",
    f"{TOKEN}",
    f"Bearer {AGENT_TOKEN}",
]
VALID_BODY = json.dumps({"conversions": [{"conversion_id": "fresh-1", "tenant_id": 2}]}).encode()


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every path operation of the app, including those of the routers it includes (FastAPI 0.137
    and later keep an included router as one node of ``app.routes`` rather than copying its routes)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI: included routes are copied into app.routes
        return [route for route in app.routes if isinstance(route, APIRoute)]
    return [
        c.original_route for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)
    ]


def test_the_route_walk_sees_every_published_operation(guarded: Service) -> None:
    """The enumerations below cannot silently come back empty: they see what OpenAPI publishes."""
    app = create_app(guarded, None)
    walked = {(method, route.path) for route in api_routes(app) for method in route.methods}
    published = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    assert walked == published
    assert len(walked) == 13


def mutating_routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    out = []
    for route in api_routes(app):
        out.extend((method, route.path, route) for method in sorted(route.methods & MUTATING))
    return out


def concrete(route: APIRoute, conversion_id: str) -> str:
    """The route's path with each parameter filled by a value of its declared type."""
    path = route.path
    for param in route.dependant.path_params:
        value = 1 if param.field_info.annotation is int else conversion_id
        path = path.replace("{" + param.name + "}", str(value))
    return path


@pytest.fixture
def guarded(tmp_path: FsPath) -> Iterator[Service]:
    """A token-guarded service holding one failed conversion (``c00``, requeueable) and a settled one."""
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    settings = make_settings(tmp_path, api_token=TOKEN, agent_token=AGENT_TOKEN)
    backends = {p: FakeBackend(p, failing=["c00"]) for p in Path}
    service, _ = make_service(tmp_path, settings=settings, backends=backends)
    service.ledger.accept([ConversionRequest("c00", 1, {}), ConversionRequest("c01", 4, {})], time.time())
    run_until_settled(service)
    yield service
    service.close()


def test_the_mutating_routes_are_found(guarded: Service) -> None:
    """The enumeration below sees the endpoints the design names (and any added since)."""
    found = {(method, path) for method, path, _ in mutating_routes(create_app(guarded, None))}
    assert {("POST", "/conversions"), ("POST", "/conversions/{conversion_id}/requeue")} <= found


@pytest.mark.parametrize("authorization", WRONG_CREDENTIALS, ids=repr)
async def test_every_mutating_endpoint_refuses_without_the_token(
    guarded: Service, authorization: str | None
) -> None:
    app = create_app(guarded, None)
    routes = mutating_routes(app)
    assert routes
    before = {r.conversion_id: (r.state, r.attempts) for r in guarded.ledger.query(limit=100)[0]}
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with client(app) as c:
        for method, _, route in routes:
            r = await c.request(method, concrete(route, "c00"), content=VALID_BODY, headers=headers)
            assert r.status_code == 401, (method, route.path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in r.text
            assert TOKEN not in str(r.headers)
    after = {r.conversion_id: (r.state, r.attempts) for r in guarded.ledger.query(limit=100)[0]}
    assert after == before


async def test_with_the_token_every_mutating_endpoint_gets_past_the_guard(guarded: Service) -> None:
    """The 401s above are the token's doing: the same requests with it do what they are for."""
    app = create_app(guarded, None)
    async with client(app, token=TOKEN) as c:
        for method, _, route in mutating_routes(app):
            headers = {"Content-Type": "application/json"}
            r = await c.request(method, concrete(route, "c00"), content=VALID_BODY, headers=headers)
            assert r.status_code < 300, (method, route.path, r.status_code, r.text)
    record = guarded.ledger.get("c00")
    assert record is not None
    assert record.state.value == "received"  # requeued
    assert guarded.ledger.get("fresh-1") is not None


async def test_the_token_is_compared_in_constant_time(
    guarded: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever is presented reaches ``hmac.compare_digest`` whole, against the whole token."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    app = create_app(guarded, None)
    async with client(app) as c:
        for presented in (TOKEN[:-1], TOKEN + "x", TOKEN):
            await c.post(
                "/conversions",
                content=VALID_BODY,
                headers={"Authorization": f"Bearer {presented}", "Content-Type": "application/json"},
            )
    assert compared == [
        (TOKEN[:-1].encode(), TOKEN.encode()),
        ((TOKEN + "x").encode(), TOKEN.encode()),
        (TOKEN.encode(), TOKEN.encode()),
    ]


async def test_no_answer_carries_the_token(guarded: Service) -> None:
    """Every read, and every kind of error a client can provoke, with and without the token."""
    app = create_app(guarded, None)
    requests: list[tuple[str, str, bytes | None, dict[str, str]]] = []
    for route in api_routes(app):
        if "GET" in route.methods:
            requests.append(("GET", concrete(route, "c00"), None, {}))
    requests += [
        ("GET", "/openapi.json", None, {}),
        ("GET", "/docs", None, {}),
        ("GET", "/conversions/ghost", None, {}),  # 404
        ("GET", "/conversions/..", None, {}),  # 422
        ("GET", "/conversions?limit=0", None, {}),  # 422
        ("GET", "/conversions?cursor=forged", None, {}),  # 422
        ("DELETE", "/conversions", None, {}),  # 405
        ("POST", "/conversions/c01/requeue", None, {}),  # 409: succeeded, not failed
        ("POST", "/conversions", b"{not json", {"Content-Type": "application/json"}),  # 400
        ("POST", "/conversions", VALID_BODY, {"Content-Type": "text/plain"}),  # 415
        (
            "POST",
            "/conversions",
            b'{"conversions": [{"conversion_id": "x"}]}',
            {"Content-Type": "application/json"},
        ),
        ("POST", "/conversions", b" " * 2_000_000, {"Content-Type": "application/json"}),  # 413
    ]
    statuses = set()
    for token in (None, TOKEN):
        async with client(app, token=token) as c:
            for method, url, content, headers in requests:
                r = await c.request(method, url, content=content, headers=headers)
                statuses.add(r.status_code)
                for secret in (TOKEN, AGENT_TOKEN):
                    assert secret not in r.text, (method, url)
                    assert secret not in str(r.headers.raw), (method, url)
    assert {200, 400, 401, 404, 405, 409, 413, 415, 422} <= statuses


def test_a_run_never_logs_the_tokens(tmp_path: FsPath) -> None:
    """All output of ``cutover run`` at DEBUG, through right and wrong tokens and errors of each kind."""
    write_flag(tmp_path / "flags.json", [2])
    env = {"CUTOVER_API_TOKEN": TOKEN, "CUTOVER_AGENT_TOKEN": AGENT_TOKEN, "CUTOVER_LOG_LEVEL": "DEBUG"}
    with run_controller(tmp_path, env) as running, httpx.Client(base_url=running.base, timeout=30) as http:
        for presented in [p for p in WRONG_CREDENTIALS if p is None or p == p.strip()]:  # valid HTTP
            headers = {"Content-Type": "application/json"}
            if presented is not None:
                headers["Authorization"] = presented
            assert http.post("/conversions", content=VALID_BODY, headers=headers).status_code == 401
            assert http.post("/conversions/ghost/requeue", headers=headers).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        assert http.post("/conversions", content=VALID_BODY, headers=good).status_code == 202
        assert http.post("/conversions", content=b"[", headers=good).status_code == 400
        assert http.post("/conversions/ghost/requeue", headers=good).status_code == 404
        assert http.post("/conversions/fresh-1/requeue", headers=good).status_code == 409
        assert http.get("/status").status_code == 200
        assert http.get("/metrics").status_code == 200
        deadline = time.monotonic() + 60
        while http.get("/conversions/fresh-1").json()["state"] != "succeeded":
            assert time.monotonic() < deadline, "the conversion did not finish"
            time.sleep(0.2)
    log = running.log_text()
    events = [json.loads(line) for line in log.splitlines()]
    names = {e["event"] for e in events}
    assert {"service.started", "conversion.received", "conversion.outcome", "service.stopped"} <= names
    started = next(e for e in events if e["event"] == "service.started")
    assert started["settings"]["CUTOVER_API_TOKEN"] == "********"
    assert TOKEN not in log
    assert AGENT_TOKEN not in log
