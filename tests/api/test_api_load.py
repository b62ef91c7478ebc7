"""Under load: while 50,000 conversions come in through the intake and the cycle loop routes,
dispatches and finishes them, ``/status`` and ``/healthz`` keep answering over real HTTP.

No timing is asserted here (that belongs in ``benchmarks/``); the figures are printed.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path as FsPath

import httpx
import pytest

from controller.api.app import create_app
from controller.core.domain import ConversionState, Path
from controller.engine.loop import CycleLoop
from controller.service import Service

from .support import FakeBackend, make_service, make_settings, serve, write_flag

pytestmark = pytest.mark.slow

TOTAL = 50_000
PER_REQUEST = 1000
TENANTS = 5000


class Watcher:
    """Asks ``/status`` and ``/healthz`` in turn until stopped, keeping every answer."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.answers: dict[str, list[int]] = {"/status": [], "/healthz": []}
        self.latencies: list[float] = []
        self.succeeded: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as c:
            while not self._stop.is_set():
                for url, codes in self.answers.items():
                    started = time.perf_counter()
                    r = c.get(url)
                    self.latencies.append(time.perf_counter() - started)
                    codes.append(r.status_code)
                    if url == "/status" and r.status_code == 200:
                        self.succeeded.append(r.json()["conversions"]["succeeded"])
                time.sleep(0.02)


def feed(base: str) -> None:
    """The 50,000 conversions through the intake, 1,000 per request, half of them to migrated tenants."""
    with httpx.Client(base_url=base, timeout=60) as c:
        for first in range(0, TOTAL, PER_REQUEST):
            items = [
                {"conversion_id": f"load-{n}", "tenant_id": 1 + n % TENANTS, "params": {"n": str(n)}}
                for n in range(first, first + PER_REQUEST)
            ]
            r = c.post("/conversions", json={"conversions": items})
            assert r.status_code == 202
            assert len(r.json()["accepted"]) == PER_REQUEST


def wait_until_finished(service: Service, loop: CycleLoop) -> None:
    deadline = time.monotonic() + 300
    while service.ledger.counts().state(ConversionState.SUCCEEDED) < TOTAL:
        assert time.monotonic() < deadline, "the loop did not finish the load"
        assert loop.alive
        time.sleep(0.2)


def test_status_and_health_answer_while_fifty_thousand_conversions_are_routed(tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", list(range(1, TENANTS // 2 + 1)))
    settings = make_settings(tmp_path, cycle_seconds=0.05, budget=20)
    backends = {Path.LEGACY: FakeBackend(Path.LEGACY), Path.NEW: FakeBackend(Path.NEW)}
    service, _ = make_service(tmp_path, settings=settings, backends=backends)
    loop = CycleLoop(service.controller, settings.cycle_seconds)
    loop.start()
    try:
        # Healthy means the loop has ticked: watch from its first heartbeat until before it stops.
        deadline = time.monotonic() + 30
        while loop.heartbeat is None:
            assert time.monotonic() < deadline, "the loop never ticked"
            time.sleep(0.02)
        with serve(create_app(service, loop)) as base, Watcher(base) as watcher:
            started = time.monotonic()
            feed(base)
            wait_until_finished(service, loop)
            took = time.monotonic() - started
    finally:
        loop.stop()

    counts = service.ledger.counts()
    assert counts.path_state(Path.NEW, ConversionState.SUCCEEDED) == TOTAL // 2
    assert counts.path_state(Path.LEGACY, ConversionState.SUCCEEDED) == TOTAL // 2
    assert loop.last_error is None
    for url, codes in watcher.answers.items():
        assert len(codes) >= 5, f"{url} was asked only {len(codes)} times"
        assert set(codes) == {200}, f"{url} answered {sorted(set(codes))}"
    assert watcher.succeeded == sorted(watcher.succeeded), "succeeded never goes backwards"
    print(
        f"\nrouted {TOTAL} in {took:.1f}s; {len(watcher.latencies)} status/health answers, "
        f"median {statistics.median(watcher.latencies) * 1000:.1f} ms, max {max(watcher.latencies) * 1000:.0f} ms"
    )
    service.close()
