"""``/metrics``: Prometheus text from a registry of the app's own, with the ledger's counts, the
budget and what each path holds, the flag in force, cycle figures, backend call latencies and
outcomes, intake totals and reconciliation counts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path as FsPath

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.api.app import create_app
from controller.api.metrics import ServiceMetrics
from controller.core.domain import ConversionRequest, Path
from controller.ledger.sqlite import SQLiteLedger

from .conftest import GROUPS
from .support import FakeBackend, SwitchableLedger, client, make_service, run_until_settled, write_flag

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Reconciling(FakeBackend):
    """A backend that keeps reconciliation counts, as the AWS adapters may."""

    def reconcile_counts(self) -> Mapping[str, int]:
        return {"duplicates": 2, "orphans": 5}


async def test_metrics_describe_the_work_the_flag_and_the_cycle(tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    metrics = ServiceMetrics()
    backends = {
        Path.LEGACY: metrics.instrument(FakeBackend(Path.LEGACY, failing=("c5",))),
        Path.NEW: metrics.instrument(Reconciling(Path.NEW)),
    }
    service, _ = make_service(tmp_path, backends=backends, on_finished=metrics.finished)
    service.ledger.accept([ConversionRequest(f"c{i}", 1 + i % 12, {}) for i in range(12)], time.time())
    run_until_settled(service)
    async with client(create_app(service, None, metrics=metrics)) as c:
        await c.post("/conversions", json={"conversions": [{"conversion_id": "c0", "tenant_id": 1}]})
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    v = snap = service.controller.last_report.flag.snapshot  # type: ignore[union-attr]
    assert snap is not None
    assert got[("cutover_conversions", (("path", "new"), ("state", "succeeded")))] == 3
    assert got[("cutover_conversions", (("path", "legacy"), ("state", "succeeded")))] == 8
    assert got[("cutover_conversions", (("path", "legacy"), ("state", "failed")))] == 1
    assert got[("cutover_budget", ())] == 20
    assert ("cutover_in_flight", (("path", "legacy"),)) in got
    assert got[("cutover_queued", (("path", "new"),))] == 0
    assert got[("cutover_flag_info", (("enabled", "true"), ("source", "file"), ("version", v.version)))] == 1
    assert got[("cutover_flag_state", (("state", "ok"),))] == 1
    assert got[("cutover_flag_state", (("state", "stale"),))] == 0
    assert got[("cutover_flag_tenants", ())] == 3
    assert 0 <= got[("cutover_flag_age_seconds", ())] < 60
    assert got[("cutover_cycles_total", ())] >= 2
    assert got[("cutover_cycle_duration_seconds", ())] >= 0
    assert got[("cutover_dispatch_seconds_count", (("path", "new"),))] >= 1
    assert got[("cutover_dispatch_seconds_count", (("path", "legacy"),))] >= 1
    assert got[("cutover_poll_seconds_count", (("path", "new"),))] >= 1
    assert got[("cutover_outcomes_total", (("path", "new"), ("state", "succeeded")))] == 3
    assert got[("cutover_outcomes_total", (("path", "legacy"), ("state", "failed")))] == 1
    assert got[("cutover_conversion_run_seconds_count", (("path", "legacy"), ("state", "succeeded")))] == 8
    assert got[("cutover_intake_conversions_total", (("result", "duplicate"),))] == 1
    assert got[("cutover_intake_requests_total", (("result", "accepted"),))] == 1
    assert got[("cutover_reconcile_duplicates_total", (("path", "new"),))] == 2
    assert got[("cutover_reconcile_orphans_total", (("path", "new"),))] == 5
    assert got[("cutover_reconcile_orphans_total", (("path", "legacy"),))] == 0
    assert got[("cutover_ledger_up", ())] == 1
    assert not any(name.endswith("_created") for name, _ in got)
    service.close()


async def test_each_app_has_its_own_registry(tmp_path: FsPath) -> None:
    """Two apps in one process do not collide or share counts."""
    write_flag(tmp_path / "flags.json", [1])
    service, _ = make_service(tmp_path)
    first, second = create_app(service, None), create_app(service, None)
    async with client(first) as c:
        await c.post("/conversions", json={"conversions": [{"conversion_id": "a", "tenant_id": 1}]})
        one = samples((await c.get("/metrics")).text)
    async with client(second) as c:
        other = samples((await c.get("/metrics")).text)
    assert one[("cutover_intake_conversions_total", (("result", "accepted"),))] == 1
    assert other[("cutover_intake_conversions_total", (("result", "accepted"),))] == 0
    service.close()


async def test_metrics_still_answer_when_the_ledger_does_not(tmp_path: FsPath) -> None:
    ledger = SwitchableLedger(SQLiteLedger(tmp_path / "ledger.db"))
    service, _ = make_service(tmp_path, ledger=ledger)  # type: ignore[arg-type]
    ledger.down = True
    async with client(create_app(service, None)) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    got = samples(r.text)
    assert got[("cutover_ledger_up", ())] == 0
    assert not any(name == "cutover_conversions" for name, _ in got)
    assert got[("cutover_flag_state", (("state", "unavailable"),))] == 1


def test_a_failing_backend_call_is_timed_and_counted(tmp_path: FsPath) -> None:
    from controller.core.errors import BackendUnavailableError

    class Down(FakeBackend):
        def poll(self, refs: object) -> dict:  # type: ignore[type-arg]
            raise BackendUnavailableError("DescribeJobs timed out")

    metrics = ServiceMetrics()
    backend = metrics.instrument(Down(Path.NEW))
    with pytest.raises(BackendUnavailableError):
        backend.poll([])
    got = samples(metrics.render().decode())
    assert got[("cutover_backend_errors_total", (("call", "poll"), ("path", "new")))] == 1
    assert got[("cutover_poll_seconds_count", (("path", "new"),))] == 1
