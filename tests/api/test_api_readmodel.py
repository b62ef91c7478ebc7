"""The read model behind ``/status``, ``/tenants``, ``/metrics`` and the dashboard: the ledger is read
once per cycle (by the loop's hook, for what was asked for), requests in between are answered from
memory, and what this API writes (intake, requeue) shows at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path as FsPath
from typing import Any

import pytest

from controller.api.app import create_app
from controller.api.readmodel import ReadModel
from controller.api.tenants import PlanFile
from controller.core.domain import ConversionRequest, Path
from controller.engine.loop import CycleLoop
from controller.ledger.sqlite import SQLiteLedger
from controller.service import Service

from .conftest import GROUPS
from .support import (
    FakeBackend,
    SwitchableLedger,
    client,
    make_service,
    run_until_settled,
    write_flag,
    write_rollout,
)

pytestmark = pytest.mark.anyio

READS = ("/status", "/tenants", "/metrics", "/")


class CountingLedger(SwitchableLedger):
    """A real ledger that counts the calls made to it (and can be switched off)."""

    def __init__(self, inner: SQLiteLedger) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = super().__getattr__(name)
        if not callable(attr) or name == "close":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return call


def watched(tmp_path: FsPath, failing: tuple[str, ...] = ()) -> tuple[Service, CountingLedger, ReadModel]:
    """A settled service with 24 conversions (group-1 migrated), a counting ledger and a read model
    wired as ``cutover run`` wires it."""
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    write_rollout(tmp_path / "rollout.json", GROUPS)
    ledger = CountingLedger(SQLiteLedger(tmp_path / "ledger.db"))
    backends = {p: FakeBackend(p, failing) for p in Path}
    service, _ = make_service(tmp_path, ledger=ledger, backends=backends)  # type: ignore[arg-type]
    service.ledger.accept([ConversionRequest(f"c{i:02d}", 1 + i % 12, {}) for i in range(24)], time.time())
    run_until_settled(service)
    return service, ledger, ReadModel(service, PlanFile(service.settings.rollout_file))


def cycle(service: Service, views: ReadModel) -> None:
    """One tick of the loop: a cycle, then its hook."""
    service.controller.run_cycle()
    views.refresh()


async def test_reads_between_cycles_are_answered_from_memory(tmp_path: FsPath) -> None:
    service, ledger, views = watched(tmp_path)
    async with client(create_app(service, None, views=views)) as c:
        for url in READS:
            assert (await c.get(url)).status_code == 200, url
        cycle(service, views)
        ledger.calls.clear()
        for _ in range(5):
            for url in READS:
                assert (await c.get(url)).status_code == 200, url
        assert ledger.calls == {}, "no read endpoint queried the ledger between cycles"
        service.ledger.accept([ConversionRequest("late", 4, {})], time.time())  # not through the API
        before = (await c.get("/status")).json()["conversions"]["succeeded"]
        run_until_settled(service)
        views.refresh()
        after = (await c.get("/status")).json()["conversions"]["succeeded"]
    assert (before, after) == (24, 25), "the next cycle's read shows the new work"
    service.close()


async def test_the_hook_reads_only_what_was_asked_for_since_the_cycle_before(tmp_path: FsPath) -> None:
    service, ledger, views = watched(tmp_path)
    async with client(create_app(service, None, views=views)) as c:
        ledger.calls.clear()
        cycle(service, views)
        nobody_asked = {k: v for k, v in ledger.calls.items() if k in {"counts", "decisions_since"}}
        await c.get("/status")
        cycle(service, views)
        ledger.calls.clear()
        views.refresh()  # a second hook without a read in between
        asked_then_idle = dict(ledger.calls)
        await c.get("/status")
        ledger.calls.clear()
        views.refresh()
        after_status = dict(ledger.calls)
    assert nobody_asked == {}
    assert asked_then_idle == {}
    assert after_status == {"counts": 1, "decisions_since": 1}
    service.close()


async def test_without_the_hook_the_first_read_after_a_cycle_reads_once(tmp_path: FsPath) -> None:
    """Apps built without a loop (tests, tools) still answer as of the last cycle."""
    service, ledger, _ = watched(tmp_path)
    async with client(create_app(service, None)) as c:
        await c.get("/status")
        service.controller.run_cycle()
        ledger.calls.clear()
        for _ in range(3):
            await c.get("/status")
    assert ledger.calls == {"counts": 1, "decisions_since": 1}
    service.close()


async def test_intake_and_requeue_through_the_api_show_at_once(tmp_path: FsPath) -> None:
    service, _, views = watched(tmp_path, failing=("c04",))
    async with client(create_app(service, None, views=views)) as c:
        first = (await c.get("/status")).json()["conversions"]
        page = (await c.get("/")).text
        await c.post("/conversions", json={"conversions": [{"conversion_id": "fresh", "tenant_id": 2}]})
        taken = (await c.get("/status")).json()["conversions"]
        assert (await c.post("/conversions/c04/requeue")).status_code == 200
        requeued = (await c.get("/status")).json()["conversions"]
        page_after = (await c.get("/")).text
    assert (first["failed"], first["received"]) == (1, 0)
    assert (taken["failed"], taken["received"]) == (1, 1)
    assert (requeued["failed"], requeued["received"]) == (0, 2)
    assert '<a href="/conversions/c04">' in page
    assert '<a href="/conversions/c04">' not in page_after
    service.close()


async def test_status_is_made_once_per_cycle_or_write_not_per_request(tmp_path: FsPath) -> None:
    """``/status`` answers with bytes made by the loop's hook or by the write that changed them, so
    a request between them does no work of its own; what it answers is as fresh as before."""
    service, _, views = watched(tmp_path)
    made: list[float] = []
    shaped = views.status

    def counting_status(*args: Any, **kwargs: Any) -> dict[str, Any]:
        made.append(time.time())
        return shaped(*args, **kwargs)

    views.status = counting_status  # type: ignore[method-assign]
    async with client(create_app(service, None, views=views)) as c:
        await c.get("/status")
        cycle(service, views)
        made.clear()
        answers = {(await c.get("/status")).content for _ in range(10)}
        between_cycles = len(made)
        await c.post("/conversions", json={"conversions": [{"conversion_id": "fresh", "tenant_id": 2}]})
        after_write = len(made)
        taken = [(await c.get("/status")).json()["conversions"]["received"] for _ in range(3)]
        after_reads = len(made)
        cycle(service, views)
        after_cycle = len(made)
        routed = (await c.get("/status")).json()["conversions"]["received"]
    assert between_cycles == 0
    assert len(answers) == 1
    assert (after_write, after_reads, taken) == (1, 1, [1, 1, 1])
    assert (after_cycle, len(made), routed) == (2, 2, 0)
    service.close()


async def test_a_ledger_outage_answers_503_from_the_next_tick_until_one_reads_again(tmp_path: FsPath) -> None:
    service, ledger, views = watched(tmp_path)
    async with client(create_app(service, None, views=views)) as c:
        assert (await c.get("/status")).status_code == 200
        ledger.down = True
        views.refresh()  # the loop's tick after a failed cycle
        down = await c.get("/status")
        page = (await c.get("/")).text
        metrics = (await c.get("/metrics")).text
        ledger.down = False
        cycle(service, views)
        back = await c.get("/status")
    assert (down.status_code, down.json()["error"]["code"]) == (503, "unavailable")
    assert "not ready: ledger:" in page
    assert "cutover_ledger_up 0.0" in metrics
    assert back.status_code == 200
    service.close()


def test_the_loop_calls_its_hook_after_every_tick_even_a_failed_one(service: Service) -> None:
    ticks: list[int] = []
    done = threading.Event()
    calls = 0

    def flaky_cycle() -> Any:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise RuntimeError("cycle broke")
        return None

    def hook() -> None:
        ticks.append(calls)
        if len(ticks) == 2:
            raise RuntimeError("the hook broke too")
        if len(ticks) >= 4:
            done.set()

    service.controller.run_cycle = flaky_cycle  # type: ignore[method-assign]
    loop = CycleLoop(service.controller, 0.01, after_cycle=hook)
    loop.start()
    try:
        assert done.wait(10), "the loop stopped calling its hook"
    finally:
        loop.stop()
    assert ticks[:4] == [1, 2, 3, 4], "once per tick, failed cycles and a failing hook included"
