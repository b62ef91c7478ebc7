"""A refused request says why (no header, not a bearer token, wrong token) without echoing what
it sent, and each refusal leaves a log line with the client and route, rate limited."""

from __future__ import annotations

import json
import logging
from pathlib import Path as FsPath

import pytest
from fastapi import Depends, FastAPI
from pydantic import SecretStr

from controller.api.app import _authorizer, create_app
from controller.plumbing.logs import LogBudget

from .conftest import GROUPS
from .support import TOKEN, client, make_service, make_settings, write_flag

pytestmark = pytest.mark.anyio

BODY = json.dumps({"conversions": [{"conversion_id": "c-1", "tenant_id": 2}]}).encode()
WRONG = "not-the-token-0123456789"


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "no Authorization header"),
        ("", "no Authorization header"),
        (f"Basic {WRONG}", "is not a bearer token"),
        (WRONG, "is not a bearer token"),
        ("Bearer ", "is not a bearer token"),
        (f"Bearer {WRONG}", "the bearer token is not the one this service expects"),
    ],
)
async def test_a_refusal_says_which_problem_it_was_and_never_echoes_the_token(
    tmp_path: FsPath, caplog: pytest.LogCaptureFixture, authorization: str | None, says: str
) -> None:
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    service, _ = make_service(tmp_path, settings=make_settings(tmp_path, api_token=TOKEN))
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    with caplog.at_level(logging.WARNING, logger="cutover.api"):
        async with client(create_app(service, None)) as c:
            r = await c.post("/conversions", content=BODY, headers=headers)
    service.close()
    assert r.status_code == 401
    assert says in r.json()["error"]["message"]
    assert WRONG not in r.text
    assert TOKEN not in r.text
    [line] = [rec for rec in caplog.records if rec.getMessage() == "auth.rejected"]
    assert line.__dict__["route"] == "POST /conversions"
    assert line.__dict__["client"]
    assert WRONG not in json.dumps({k: str(v) for k, v in line.__dict__.items()})


async def test_refusals_are_logged_at_most_a_burst_per_window_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    guard = _authorizer(SecretStr(TOKEN), LogBudget(burst=3, window_seconds=60.0, clock=lambda: now[0]))
    app = FastAPI()

    @app.post("/guarded", dependencies=[Depends(guard)])
    def guarded() -> dict[str, bool]:
        return {"ok": True}

    with caplog.at_level(logging.WARNING, logger="cutover.api"):
        async with client(app) as c:
            for _ in range(10):
                assert (await c.post("/guarded", headers={"Authorization": "Bearer x"})).status_code == 401
            now[0] = 61.0
            assert (await c.post("/guarded")).status_code == 401
            assert (await c.post("/guarded", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
    lines = [rec for rec in caplog.records if rec.getMessage() == "auth.rejected"]
    assert [rec.__dict__["held_back"] for rec in lines] == [0, 0, 0, 7]
    assert [rec.__dict__["reason"] for rec in lines] == ["wrong_token"] * 3 + ["missing_header"]
    assert lines[-1].__dict__["route"] == "POST /guarded"
