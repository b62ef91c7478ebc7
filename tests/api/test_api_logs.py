"""Structured logs: one JSON object per line carrying the ``extra=`` fields, one event per receipt,
decision, dispatch and outcome of a conversion, and never the API token."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

import pytest

from controller.api.app import create_app
from controller.api.metrics import ServiceMetrics
from controller.core.domain import Path
from controller.plumbing.logs import JsonFormatter, configure_logging
from controller.service import Service

from .conftest import GROUPS
from .support import TOKEN, FakeBackend, client, make_service, make_settings, run_until_settled, write_flag

pytestmark = pytest.mark.anyio


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``configure_logging`` replaces the root handlers; put the test runner's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    cycle_level = logging.getLogger("cutover.cycle").level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("cutover.cycle").setLevel(cycle_level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_becomes_one_json_line_with_its_extras() -> None:
    record = logging.LogRecord("cutover.cycle", logging.INFO, __file__, 1, "dispatch.submitted", None, None)
    record.__dict__.update({"path": "new", "batch": "N1", "conversions": 3, "when": FsPath("/x")})
    line = JsonFormatter().format(record)
    doc = json.loads(line)
    assert "\n" not in line
    assert doc["event"] == "dispatch.submitted"
    assert doc["level"] == "info"
    assert doc["logger"] == "cutover.cycle"
    assert doc["ts"].endswith("+00:00")
    assert (doc["path"], doc["batch"], doc["conversions"], doc["when"]) == ("new", "N1", 3, "/x")


def test_an_exception_is_kept_in_the_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "cutover.loop", logging.ERROR, __file__, 1, "cycle.failed", None, sys.exc_info()
        )
    doc = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in doc["exception"]


def test_secrets_are_masked_whatever_logged_them() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "header was %s", (f"Bearer {TOKEN}",), None)
    record.__dict__["authorization"] = TOKEN
    line = JsonFormatter([TOKEN]).format(record)
    assert TOKEN not in line
    assert "Bearer ********" in line


async def test_a_conversion_leaves_a_trail_from_receipt_to_outcome(
    tmp_path: FsPath, restore_logging: None
) -> None:
    """Filtering the log by conversion id answers "what happened to it", with its facts on each line."""
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    settings = make_settings(tmp_path, api_token=TOKEN)
    stream = io.StringIO()
    configure_logging(settings, stream)
    metrics = ServiceMetrics()
    backends = {path: metrics.instrument(FakeBackend(path)) for path in Path}
    service, _ = make_service(tmp_path, settings=settings, backends=backends, on_finished=metrics.finished)
    async with client(create_app(service, None, metrics=metrics), token=TOKEN) as c:
        await c.post("/conversions", json={"conversions": [{"conversion_id": "x-1", "tenant_id": 2}]})
        await c.post("/conversions", json={"conversions": [{"conversion_id": "bad", "tenant_id": 0}]})
        await c.post("/conversions", headers={"Authorization": "Bearer wrong"}, json={"conversions": []})
    run_until_settled(service)
    events = lines(stream)
    trail = [e for e in events if e.get("conversion_id") == "x-1"]
    names = [e["event"] for e in trail]
    assert names[:3] == ["conversion.received", "route.decided", "conversion.dispatched"]
    assert "conversion.outcome" in names
    version = service.controller.last_report.flag.snapshot.version  # type: ignore[union-attr]
    dispatched = next(e for e in trail if e["event"] == "conversion.dispatched")
    outcome = next(e for e in trail if e["event"] == "conversion.outcome")
    for e in (dispatched, outcome):
        assert (e["tenant_id"], e["path"], e["flag_version"]) == (2, "new", version)
        assert e["job_ref"].startswith("new-")
    assert outcome["state"] == "succeeded"
    assert any(e["event"] == "flag.changed" for e in events)
    assert TOKEN not in stream.getvalue()
    service.close()


def test_decision_events_follow_the_setting(tmp_path: FsPath, restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path, log_decisions=False), stream)
    write_flag(tmp_path / "flags.json", [1])
    service, _ = make_service(tmp_path)
    from controller.core.domain import ConversionRequest

    service.ledger.accept([ConversionRequest("q", 1, {})], time.time())
    service.controller.run_cycle()
    assert not any(e["event"] == "route.decided" for e in lines(stream))
    service.close()


class Threads(logging.Handler):
    """Keeps each record's event name and the thread that logged it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, int, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), record.thread or 0, getattr(record, "conversion_id", None)))


async def test_the_intake_logs_each_new_conversion_off_the_event_loop(
    service: Service, restore_logging: None
) -> None:
    """A batch of a thousand leaves a line per new conversion and none for a duplicate, written
    from a worker thread: on the event loop they would hold up every other request meanwhile."""
    handler = Threads()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    loop_thread = threading.get_ident()  # the app runs on this test's event loop
    batch = [{"conversion_id": f"c-{i:04d}", "tenant_id": 1 + i % 12} for i in range(1000)]
    async with client(create_app(service, None)) as c:
        first = await c.post("/conversions", json={"conversions": batch})
        again = await c.post(
            "/conversions", json={"conversions": [*batch[:10], {"conversion_id": "d-1", "tenant_id": 3}]}
        )
    assert first.status_code == again.status_code == 202
    received = [(thread, cid) for event, thread, cid in handler.seen if event == "conversion.received"]
    assert sorted(cid for _, cid in received) == sorted([*(b["conversion_id"] for b in batch), "d-1"])
    assert loop_thread not in {thread for thread, _ in received}
    assert [e for e, _, _ in handler.seen].count("intake.accepted") == 2
