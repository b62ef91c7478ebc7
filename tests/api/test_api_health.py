"""``/healthz``, ``/readyz`` and ``/status``: liveness of the loop, readiness with its reason, and
the status document from the cycle's state, none of them touching the flag source."""

from __future__ import annotations

import time
from pathlib import Path as FsPath
from typing import Any

import anyio
import anyio.to_thread
import pytest

from controller.api.app import create_app
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
    make_settings,
    run_until_settled,
    write_flag,
)

pytestmark = pytest.mark.anyio


async def test_healthz_is_ok_while_the_loop_ticks(service: Service) -> None:
    loop = CycleLoop(service.controller, 0.05)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while loop.heartbeat is None and time.monotonic() < deadline:
            time.sleep(0.02)
        async with client(create_app(service, loop)) as c:
            r = await c.get("/healthz")
    finally:
        loop.stop()
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["cycles"] >= 1


async def test_healthz_is_503_when_the_loop_is_not_running(service: Service) -> None:
    loop = CycleLoop(service.controller, 0.05)  # never started: no heartbeat
    async with client(create_app(service, loop)) as c:
        r = await c.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {"status": "cycle loop stalled", "cycles": 0}


async def test_healthz_answers_while_every_worker_thread_is_taken(service: Service) -> None:
    """Liveness does not wait for a worker thread: with all of them busy (slow ledger reads, a
    burst of intake) /healthz still answers at once; /status, which reads the ledger, waits."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    total = limiter.total_tokens
    limiter.total_tokens = 1
    holder = object()
    await limiter.acquire_on_behalf_of(holder)
    try:
        async with client(create_app(service, None)) as c:
            with anyio.fail_after(10):
                r = await c.get("/healthz")
            with anyio.move_on_after(0.5) as waited:
                await c.get("/status")
    finally:
        limiter.release_on_behalf_of(holder)
        limiter.total_tokens = total
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert waited.cancelled_caught


async def test_readyz_is_ready_with_a_flag(service: Service) -> None:
    service.controller.run_cycle()
    async with client(create_app(service, None)) as c:
        r = await c.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"ready": True, "reason": ""})


async def test_readyz_is_503_naming_the_ledger_when_it_does_not_answer(tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", [1])
    ledger = SwitchableLedger(SQLiteLedger(tmp_path / "ledger.db"))
    service, _ = make_service(tmp_path, ledger=ledger)  # type: ignore[arg-type]
    service.controller.run_cycle()
    ledger.down = True
    async with client(create_app(service, None)) as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["ready"] is False
    assert r.json()["reason"].startswith("ledger: ")


async def test_readyz_is_503_without_a_flag_when_the_policy_is_pause(tmp_path: FsPath) -> None:
    """No valid flag ever seen and CUTOVER_ON_FLAG_UNAVAILABLE=pause: no basis to route on."""
    service, _ = make_service(tmp_path, settings=make_settings(tmp_path, on_flag_unavailable="pause"))
    async with client(create_app(service, None)) as c:
        before_cycle = await c.get("/readyz")
        service.controller.run_cycle()
        after_cycle = await c.get("/readyz")
    for r in (before_cycle, after_cycle):
        assert r.status_code == 503
        assert "no valid flag seen yet" in r.json()["reason"]
    service.close()


async def test_readyz_is_ready_without_a_flag_under_the_legacy_fallback(tmp_path: FsPath) -> None:
    service, _ = make_service(tmp_path)
    service.controller.run_cycle()
    async with client(create_app(service, None)) as c:
        r = await c.get("/readyz")
    assert r.status_code == 200
    assert "no valid flag seen yet" in r.json()["reason"]
    service.close()


async def test_readyz_and_status_never_read_the_flag_source(tmp_path: FsPath) -> None:
    """Even a flag source that would hang cannot block readiness or status."""
    write_flag(tmp_path / "flags.json", [1])
    service, source = make_service(tmp_path)
    service.controller.run_cycle()
    source.hang.set()
    reads = source.reads
    async with client(create_app(service, None)) as c:
        started = time.monotonic()
        for url in ("/readyz", "/status", "/tenants/1/route", "/tenants", "/", "/metrics"):
            assert (await c.get(url)).status_code == 200, url
    assert source.reads == reads
    assert time.monotonic() - started < 10
    service.close()


async def test_readyz_keeps_routing_on_the_last_good_flag_when_the_source_fails(tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", [1])
    service, source = make_service(tmp_path)
    service.controller.run_cycle()
    source.unavailable = True
    service.controller.run_cycle()
    async with client(create_app(service, None)) as c:
        ready = await c.get("/readyz")
        status = (await c.get("/status")).json()
    assert ready.status_code == 200
    assert "last good flag kept" in ready.json()["reason"]
    assert status["flag"]["state"] == "unavailable"
    assert status["flag"]["tenant_count"] == 1
    assert status["flag"]["problem"] == "agent did not answer"
    service.close()


# -- /status --------------------------------------------------------------------------------------

DESIGN_FIELDS = {"flag", "budget", "in_flight", "conversions", "last_cycle_at"}


async def test_status_has_the_contract_fields_before_any_cycle(service: Service) -> None:
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/status")).json()
    assert doc.keys() >= DESIGN_FIELDS
    assert doc["flag"].keys() >= {"version", "enabled", "tenant_count", "source", "age_seconds", "state"}
    assert doc["flag"]["state"] == "unavailable"
    assert doc["last_cycle_at"] is None
    assert doc["in_flight"] == {"legacy": 0, "new": 0}


async def test_status_reports_the_ledger_and_the_last_cycle(service: Service) -> None:
    async with client(create_app(service, None)) as c:
        await c.post(
            "/conversions",
            json={"conversions": [{"conversion_id": f"c{t}", "tenant_id": t} for t in range(1, 13)]},
        )
        await c.post("/conversions", json={"conversions": [{"conversion_id": "c1", "tenant_id": 1}]})
        await c.post("/conversions", content=b"{", headers={"content-type": "application/json"})
        waiting = (await c.get("/status")).json()
        run_until_settled(service)
        doc = (await c.get("/status")).json()
    assert waiting["conversions"]["received"] == 12
    assert waiting["intake"] == {
        "waiting": 12,
        "requests": 3,
        "rejected": 1,
        "accepted": 12,
        "duplicates": 1,
        "sources": [],
    }
    assert doc["flag"]["version"].startswith("sha-")
    assert doc["flag"]["enabled"] is True
    assert doc["flag"]["tenant_count"] == len(GROUPS["group-1"])
    assert doc["flag"]["source"] == "file"
    assert doc["flag"]["state"] == "ok"
    assert 0 <= doc["flag"]["age_seconds"] < 60
    assert doc["budget"] == 20
    assert doc["conversions"]["succeeded"] == 12
    assert doc["by_path"]["new"]["succeeded"] == 3
    assert doc["by_path"]["legacy"]["succeeded"] == 9
    assert doc["last_cycle_at"] == pytest.approx(time.time(), abs=60)
    assert doc["cycle"]["count"] >= 2
    assert doc["queued"] == {"legacy": 0, "new": 0}
    assert doc["skew"]["skewed"] is False
    assert [v["flag_version"] for v in doc["skew"]["versions"]] == [doc["flag"]["version"]]


async def test_status_shows_version_skew_when_decisions_used_several_versions(
    service: Service, tmp_path: FsPath
) -> None:
    """After a flag change, recent decisions were made under two versions; the newest comes first."""
    async with client(create_app(service, None)) as c:
        await c.post("/conversions", json={"conversions": [{"conversion_id": "a", "tenant_id": 1}]})
        run_until_settled(service)
        first = (await c.get("/status")).json()["flag"]["version"]
        write_flag(tmp_path / "flags.json", GROUPS["group-1"] + GROUPS["group-2"])
        await c.post("/conversions", json={"conversions": [{"conversion_id": "b", "tenant_id": 5}]})
        run_until_settled(service)
        doc = (await c.get("/status")).json()
    second = doc["flag"]["version"]
    assert second != first
    assert doc["skew"]["skewed"] is True
    versions = {v["flag_version"]: v for v in doc["skew"]["versions"]}
    assert versions.keys() == {first, second}
    assert (versions[first]["new"], versions[second]["new"]) == (1, 1)


async def test_status_reports_queued_and_in_flight_per_path(tmp_path: FsPath) -> None:
    """What the backends hold queued and the slots each path holds come from the last cycle."""

    class Busy(FakeBackend):
        def poll(self, refs: Any) -> Any:
            from controller.core.domain import JobState, JobStatus

            return {r: JobState(JobStatus.QUEUED if i % 2 else JobStatus.RUNNING) for i, r in enumerate(refs)}

        def in_use(self) -> int:
            return 3

    write_flag(tmp_path / "flags.json", [1])
    service, _ = make_service(
        tmp_path, backends={Path.LEGACY: FakeBackend(Path.LEGACY), Path.NEW: Busy(Path.NEW)}
    )
    service.ledger.accept([ConversionRequest(f"n{i}", 1, {}) for i in range(6)], time.time())
    service.controller.run_cycle()
    service.controller.run_cycle()
    async with client(create_app(service, None)) as c:
        doc = (await c.get("/status")).json()
    assert doc["queued"] == {"legacy": 0, "new": 3}
    assert doc["in_flight"]["new"] == 3
    assert doc["conversions"]["dispatched"] == 6
    service.close()


async def test_status_is_503_with_a_json_error_when_the_ledger_does_not_answer(tmp_path: FsPath) -> None:
    ledger = SwitchableLedger(SQLiteLedger(tmp_path / "ledger.db"))
    service, _ = make_service(tmp_path, ledger=ledger)  # type: ignore[arg-type]
    ledger.down = True
    async with client(create_app(service, None)) as c:
        r = await c.get("/status")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "unavailable"


async def test_before_the_first_cycle_the_persisted_flag_is_the_basis(tmp_path: FsPath) -> None:
    """A restarted controller is ready on its last-known-good flag without asking the source."""
    write_flag(tmp_path / "flags.json", [1, 2])
    first, _ = make_service(tmp_path)
    first.controller.run_cycle()
    version = first.controller.last_report.flag.snapshot.version  # type: ignore[union-attr]
    first.close()
    restarted, source = make_service(tmp_path, settings=make_settings(tmp_path, on_flag_unavailable="pause"))
    async with client(create_app(restarted, None)) as c:
        ready = await c.get("/readyz")
        flag = (await c.get("/status")).json()["flag"]
    assert ready.status_code == 200
    assert (flag["version"], flag["state"], flag["tenant_count"]) == (version, "ok", 2)
    assert "not been read yet" in flag["problem"]
    assert source.reads == 0
    assert restarted.flags.last is None, "the service face leaves the cycle's flag reader alone"
    restarted.close()


class _AdvisingBackend(FakeBackend):
    """A new-path backend that has something to tell an operator (as Batch does about its quota)."""

    def warnings(self) -> list[str]:
        return ["Fargate On-Demand vCPU quota is 6, below the 40 vCPUs a budget of 20 needs"]


async def test_status_lists_what_the_backends_warn_about(tmp_path: FsPath) -> None:
    svc, _ = make_service(
        tmp_path, backends={Path.LEGACY: FakeBackend(Path.LEGACY), Path.NEW: _AdvisingBackend(Path.NEW)}
    )
    try:
        async with client(create_app(svc, None)) as c:
            doc = (await c.get("/status")).json()
    finally:
        svc.close()
    assert doc["warnings"] == ["Fargate On-Demand vCPU quota is 6, below the 40 vCPUs a budget of 20 needs"]
