"""Hostile input against a running controller (``cutover run`` on loopback, over real sockets).

Every bad request is a 4xx with a JSON error naming what was wrong and where; nothing of it is
written (the ledger's counts do not move); the process does not buffer an oversized body (its
peak resident memory stays far below the size offered); and it goes on answering ``/healthz``
and a valid intake right afterwards. The in-process tests in ``test_api_intake.py`` pin each
rule's exact answer; here the same kinds of input go through the whole stack.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .support import TOKEN, RunningController, run_controller

MAX_BODY = 1_048_576
MAX_ITEMS = 10_000
MiB = 1024 * 1024
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
_fresh = itertools.count()


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningController]:
    """One controller for the module. Without a flag file and told to pause, it routes nothing,
    so every accepted conversion stays ``received`` and the ledger's counts are exact."""
    workdir = tmp_path_factory.mktemp("hostile")
    env = {
        "CUTOVER_API_TOKEN": TOKEN,
        "CUTOVER_ON_FLAG_UNAVAILABLE": "pause",
        "CUTOVER_MAX_REQUEST_ITEMS": str(MAX_ITEMS),
        "CUTOVER_MAX_BODY_BYTES": str(MAX_BODY),
    }
    with run_controller(workdir, env) as running:
        yield running


@pytest.fixture
def http(controller: RunningController) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=controller.base, timeout=60) as c:
        yield c


def counts(http: httpx.Client) -> dict[str, int]:
    r = http.get("/status")
    assert r.status_code == 200, r.text
    return dict(r.json()["conversions"])


def body(*items: Any) -> bytes:
    return json.dumps({"conversions": list(items)}).encode()


def item(cid: str, tenant: Any = 7) -> dict[str, Any]:
    return {"conversion_id": cid, "tenant_id": tenant}


def still_serving(http: httpx.Client) -> None:
    """``/healthz`` answers and a valid conversion is accepted, as if nothing had happened."""
    assert http.get("/healthz").status_code == 200
    cid = f"after-{next(_fresh)}"
    r = http.post("/conversions", content=body(item(cid)), headers=JSON)
    assert (r.status_code, r.json()) == (202, {"accepted": [cid], "duplicates": []})


def error_of(r: httpx.Response) -> dict[str, Any]:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"]
    assert error["message"]
    assert error["message"].isprintable()  # no control characters, line breaks or bidi overrides
    return dict(error)


# -- raw HTTP, for what a polite client would not send --------------------------------------------


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the server took before answering


def raw_request(base: str, head: bytes, chunks: Iterator[bytes] | None = None) -> RawAnswer:
    """Send ``head`` (request line and headers) and then ``chunks`` as fast as the server takes
    them, stopping as soon as it answers; read the answer until the connection closes."""
    where = urlsplit(base)
    sent = 0
    with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
        sock.sendall(head)
        for chunk in chunks or iter(()):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass  # the server hung up on a body it refused to read; its answer came first
    head_part, _, rest = received.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return RawAnswer(status, headers, rest, sent)


def request_head(method: str, target: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- bodies -----------------------------------------------------------------------------------------

GOOD_FIRST = item("good-first", 1)


@dataclass(frozen=True)
class BadBody:
    name: str
    content: bytes
    status: int
    code: str
    says: str  # a phrase the error message must contain
    content_type: str | None = "application/json"
    index: int | None = None
    field: str | None = None


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * depth + inner + b"}" * depth


MEDIA = "unsupported_media_type"
MALFORMED = "malformed_json"
BAD_BODIES = [
    BadBody("text/plain", body(GOOD_FIRST), 415, MEDIA, "'text/plain'", "text/plain"),
    BadBody("form", b"conversions=a", 415, MEDIA, "form-urlencoded", "application/x-www-form-urlencoded"),
    BadBody("multipart", b"--x--", 415, MEDIA, "multipart", "multipart/form-data; boundary=x"),
    BadBody("no content type", body(GOOD_FIRST), 415, MEDIA, "'none'", None),
    BadBody("latin-1", body(GOOD_FIRST), 415, MEDIA, "latin-1", "application/json; charset=latin-1"),
    BadBody("bad UTF-8", b'{"conversions": [{"conversion_id": "a\xc3\x28"}]}', 400, MALFORMED, "not UTF-8"),
    BadBody(
        "overlong UTF-8 /", b'{"conversions": [{"conversion_id": "\xc0\xaf"}]}', 400, MALFORMED, "not UTF-8"
    ),
    BadBody(
        "repeated key",
        b'{"conversions": [{"conversion_id": "a", "tenant_id": 1, "tenant_id": 2}]}',
        400,
        MALFORMED,
        "appears twice",
    ),
    BadBody(
        "repeated top-level key",
        b'{"conversions": [], "conversions": [{"conversion_id": "a", "tenant_id": 1}]}',
        400,
        MALFORMED,
        "appears twice",
    ),
    BadBody("NaN", b'{"conversions": [{"conversion_id": "a", "tenant_id": NaN}]}', 400, MALFORMED, "NaN"),
    BadBody("-Infinity", b'{"conversions": [{"tenant_id": -Infinity}]}', 400, MALFORMED, "Infinity"),
    BadBody(
        "1e999",
        b'{"conversions": [{"conversion_id": "ok", "tenant_id": 1}, {"conversion_id": "a", "tenant_id": 1e999}]}',
        422,
        "invalid_item",
        "conversions[1].tenant_id: must be a whole number ≥ 1, got a number too large to represent",
        index=1,
        field="tenant_id",
    ),
    BadBody(
        "5,000 digits", b'{"conversions": [{"tenant_id": ' + b"9" * 5000 + b"}]}", 400, MALFORMED, "not valid"
    ),
    BadBody("100,000 [", b"[" * 100_000 + b"]" * 100_000, 400, MALFORMED, "nested too deeply"),
    BadBody("100,000 unclosed [", b"[" * 100_000, 400, MALFORMED, "nested too deeply"),
    BadBody("100,000 objects deep", nested(100_000), 400, MALFORMED, "nested too deeply"),
    BadBody(
        "deep inside an item",
        b'{"conversions": [{"conversion_id": "x", "tenant_id": ' + nested(50_000) + b"}]}",
        400,
        MALFORMED,
        "nested too deeply",
    ),
    BadBody("empty", b"", 400, MALFORMED, "not valid JSON"),
    BadBody("a bare string", b'"conversions"', 422, "invalid_body", "expected a JSON object"),
]


@pytest.mark.parametrize("case", BAD_BODIES, ids=lambda c: c.name)
def test_a_bad_body_is_refused_whole_and_the_service_keeps_serving(http: httpx.Client, case: BadBody) -> None:
    before = counts(http)
    headers = {**AUTH, **({"Content-Type": case.content_type} if case.content_type else {})}
    r = http.post("/conversions", content=case.content, headers=headers)
    assert r.status_code == case.status, r.text[:300]
    error = error_of(r)
    assert (error["code"], error.get("item"), error.get("field")) == (case.code, case.index, case.field)
    assert case.says in error["message"]
    assert counts(http) == before
    still_serving(http)


HOSTILE_IDS = [
    "a/b",
    "a\\b",
    "..",
    "../etc/passwd",
    "..\\..\\windows",
    ".",
    "./a",
    "a\x00b",
    "a\x1fb",
    "a\x7f",
    "a\r\nX-Injected: 1",
    "a\u0085b",  # NEL
    "a\u2028b",  # line separator
    "a\u200bb",  # zero-width space
    "a\u202eb",  # right-to-left override
    "ten\u0430nt-1",  # Cyrillic a
    "\uff54\uff45\uff4e\uff41\uff4e\uff54",  # fullwidth "tenant"
    "a\u2215b",  # division slash
    "a\uff0fb",  # fullwidth solidus
    "a\u2024\u2024b",  # one-dot leaders
    "a\ud800b",  # a lone surrogate, sent as a JSON escape
    "%2e%2e%2f",
    "x" * 129,
    "x" * 100_000,
]


@pytest.mark.parametrize("bad", HOSTILE_IDS, ids=lambda v: ascii(v)[:40])
def test_a_hostile_conversion_id_is_refused_naming_item_and_field(http: httpx.Client, bad: str) -> None:
    before = counts(http)
    content = json.dumps({"conversions": [GOOD_FIRST, item(bad)]}).encode()
    r = http.post("/conversions", content=content, headers=JSON)
    assert r.status_code == 422
    error = error_of(r)
    assert (error["code"], error["item"], error["field"]) == ("invalid_item", 1, "conversion_id")
    assert error["message"].startswith("conversions[1].conversion_id: ")
    assert len(error["message"]) < 400
    # The id is echoed escaped: none of its control or non-ASCII characters come back raw.
    assert not {c for c in bad if not (c.isascii() and c.isprintable())} & set(error["message"])
    assert counts(http) == before
    still_serving(http)


HOSTILE_PATH_IDS = [
    "a%2Fb",
    "%2E%2E",
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "a%5Cb",
    "a%00b",
    "a%0D%0AX-Injected:%201",
    "%FF%FE",
    "ten%D0%B0nt",
    "a%EF%BC%8Fb",
    "a%E2%80%AEb",
    "x" * 129,
    "x" * 8000,
]


@pytest.mark.parametrize("raw_id", HOSTILE_PATH_IDS, ids=lambda v: v[:40])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_hostile_id_in_the_path_is_a_json_4xx_and_changes_nothing(
    controller: RunningController, http: httpx.Client, raw_id: str, method: str
) -> None:
    """Sent byte for byte (no client-side normalisation of dots or escapes)."""
    before = counts(http)
    host = urlsplit(controller.base).netloc
    target = f"/conversions/{raw_id}" + ("/requeue" if method == "POST" else "")
    headers = {**AUTH, "Content-Length": "0", "Connection": "close"}
    answer = raw_request(controller.base, request_head(method, target, host, headers))
    assert answer.status in (404, 422), answer
    assert answer.headers["content-type"].startswith("application/json")
    assert "x-injected" not in answer.headers
    error = json.loads(answer.body)["error"]
    if answer.status == 422:
        assert (error["code"], error["field"]) == ("invalid_parameter", "conversion_id")
    else:
        assert error["code"] == "not_found"  # a separator splits the path: no route matches
    assert counts(http) == before
    still_serving(http)


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /conversions/a\x00b HTTP/1.1",
        b"GET /conversions/a b HTTP/1.1",
        b"GET /conversions/a\x7fb HTTP/1.1",
        b"POST /conversions\r\nX: y HTTP/1.1",
        b"GET /" + b"x" * 70_000 + b" HTTP/1.1",
    ],
    ids=["NUL", "space", "DEL", "split line", "70 kB target"],
)
def test_a_request_that_is_not_http_is_refused_and_the_service_keeps_serving(
    controller: RunningController, http: httpx.Client, request_line: bytes
) -> None:
    """Refused by the HTTP parser itself, before the app: a 4xx (or a hang-up) and no harm done."""
    host = urlsplit(controller.base).netloc.encode()
    head = request_line + b"\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    try:
        answer = raw_request(controller.base, head)
    except (IndexError, ValueError):
        answer = None  # closed without a status line
    assert answer is None or 400 <= answer.status < 500
    still_serving(http)


# -- how many and how big ---------------------------------------------------------------------------


def test_ten_thousand_items_are_accepted_whole_and_one_more_is_refused_whole(http: httpx.Client) -> None:
    before = counts(http)
    items = [item(f"bulk-{i:05d}", 1 + i % 500) for i in range(MAX_ITEMS + 1)]
    over = http.post("/conversions", content=body(*items), headers=JSON)
    assert over.status_code == 422
    assert error_of(over) == {
        "code": "too_many_items",
        "message": f"{MAX_ITEMS + 1} conversions in one request; at most {MAX_ITEMS} are accepted",
        "field": "conversions",
    }
    assert counts(http) == before
    at_limit = http.post("/conversions", content=body(*items[:MAX_ITEMS]), headers=JSON)
    assert at_limit.status_code == 202
    assert at_limit.json()["accepted"] == [i["conversion_id"] for i in items[:MAX_ITEMS]]
    after = counts(http)
    assert after["received"] == before["received"] + MAX_ITEMS
    assert http.get(f"/conversions/bulk-{MAX_ITEMS - 1:05d}").json()["state"] == "received"
    still_serving(http)


def test_a_declared_hundred_megabytes_is_refused_before_any_of_it_is_read(
    controller: RunningController, http: httpx.Client
) -> None:
    before = counts(http)
    host = urlsplit(controller.base).netloc
    headers = {**JSON, "Content-Length": str(100 * MiB), "Connection": "close"}
    answer = raw_request(controller.base, request_head("POST", "/conversions", host, headers))
    assert answer.status == 413
    assert json.loads(answer.body)["error"]["code"] == "body_too_large"
    assert str(MAX_BODY) in json.loads(answer.body)["error"]["message"]
    assert counts(http) == before
    still_serving(http)


def test_an_undeclared_hundred_megabytes_is_cut_off_at_the_limit_in_bounded_memory(
    controller: RunningController, http: httpx.Client
) -> None:
    """Chunked, with no length to judge by: the server stops reading at the limit and answers 413;
    its peak resident memory grows by far less than the 100 MB offered."""
    before = counts(http)
    peak_before = controller.peak_rss_bytes()
    host = urlsplit(controller.base).netloc
    headers = {**JSON, "Transfer-Encoding": "chunked", "Connection": "close"}
    piece = b'{"conversion_id": "c", "tenant_id": 1},' * 1600  # about 64 kB of plausible items

    def chunks() -> Iterator[bytes]:
        yield b"%x\r\n%s\r\n" % (len(b'{"conversions": ['), b'{"conversions": [')
        for _ in range(100 * MiB // len(piece)):
            yield b"%x\r\n%s\r\n" % (len(piece), piece)

    answer = raw_request(controller.base, request_head("POST", "/conversions", host, headers), chunks())
    peak_after = controller.peak_rss_bytes()
    print(
        f"offered 100 MiB, server took {answer.sent / MiB:.1f} MiB before answering; "
        f"peak RSS {peak_before / MiB:.0f} -> {peak_after / MiB:.0f} MiB"
    )
    assert answer.status == 413
    assert json.loads(answer.body)["error"]["code"] == "body_too_large"
    assert answer.sent < 50 * MiB
    assert peak_after - peak_before < 40 * MiB
    assert counts(http) == before
    still_serving(http)


def test_deep_nesting_is_refused_in_bounded_memory(controller: RunningController, http: httpx.Client) -> None:
    peak_before = controller.peak_rss_bytes()
    deep = b"[" * (MAX_BODY // 2) + b"]" * (MAX_BODY // 2)
    r = http.post("/conversions", content=deep, headers=JSON)
    assert r.status_code == 400
    assert "nested too deeply" in error_of(r)["message"]
    assert controller.peak_rss_bytes() - peak_before < 40 * MiB
    still_serving(http)
