"""Under load: while 50,000 conversions come in through the intake and the cycle loop routes,
dispatches and finishes them, ``/status`` and ``/healthz`` keep answering over real HTTP.

No timing is asserted here (that belongs in ``benchmarks/``); the figures are printed.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from pathlib import Path as FsPath

import httpx
import pytest
import uvicorn

from controller.api import create_app
from controller.domain import ConversionState, Path
from controller.loop import CycleLoop

from .support import FakeBackend, make_service, make_settings, write_flag

pytestmark = pytest.mark.slow

TOTAL = 50_000
PER_REQUEST = 1000
TENANTS = 5000


def test_status_and_health_answer_while_fifty_thousand_conversions_are_routed(tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", list(range(1, TENANTS // 2 + 1)))
    settings = make_settings(tmp_path, cycle_seconds=0.05, budget=20)
    backends = {Path.LEGACY: FakeBackend(Path.LEGACY), Path.NEW: FakeBackend(Path.NEW)}
    service, _ = make_service(tmp_path, settings=settings, backends=backends)
    loop = CycleLoop(service.controller, settings.cycle_seconds)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, loop), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    serving = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    serving.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"

    done = threading.Event()
    answers: dict[str, list[int]] = {"/status": [], "/healthz": []}
    latencies: list[float] = []
    progress: list[int] = []

    def watch() -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            while not done.is_set():
                for url in answers:
                    started = time.perf_counter()
                    r = c.get(url)
                    latencies.append(time.perf_counter() - started)
                    answers[url].append(r.status_code)
                    if url == "/status" and r.status_code == 200:
                        progress.append(r.json()["conversions"]["succeeded"])
                time.sleep(0.02)

    watcher = threading.Thread(target=watch, name="test-watcher", daemon=True)
    loop.start()
    watcher.start()
    started = time.monotonic()
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for first in range(0, TOTAL, PER_REQUEST):
                items = [
                    {"conversion_id": f"load-{n}", "tenant_id": 1 + n % TENANTS, "params": {"n": str(n)}}
                    for n in range(first, first + PER_REQUEST)
                ]
                r = c.post("/conversions", json={"conversions": items})
                assert r.status_code == 202
                assert len(r.json()["accepted"]) == PER_REQUEST
        deadline = time.monotonic() + 300
        while service.ledger.counts().state(ConversionState.SUCCEEDED) < TOTAL:
            assert time.monotonic() < deadline, "the loop did not finish the load"
            assert loop.alive
            time.sleep(0.2)
        routed_in = time.monotonic() - started
    finally:
        done.set()
        watcher.join(timeout=60)
        loop.stop()
        server.should_exit = True
        serving.join(timeout=30)

    counts = service.ledger.counts()
    assert counts.path_state(Path.NEW, ConversionState.SUCCEEDED) == TOTAL // 2
    assert counts.path_state(Path.LEGACY, ConversionState.SUCCEEDED) == TOTAL // 2
    assert loop.last_error is None
    for url, codes in answers.items():
        assert len(codes) >= 5, f"{url} was asked only {len(codes)} times"
        assert set(codes) == {200}, f"{url} answered {sorted(set(codes))}"
    assert progress == sorted(progress), "succeeded never goes backwards"
    print(
        f"\nrouted {TOTAL} in {routed_in:.1f}s; {sum(map(len, answers.values()))} status/health answers, "
        f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    service.close()
