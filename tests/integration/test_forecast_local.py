"""A simulated stage against a run of the real local runners on the same profile.

One wave runs for real (a worker that works as long as it is told, through the job contract),
the ledger's history of it feeds a forecast of the next wave, and the next wave runs for real:
the forecast's makespan must be close and its peak of work at once exact, since the budget caps
both.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from controller.bootstrap import build
from controller.cli.demo import max_overlap
from controller.core.domain import ConversionRequest
from controller.engine.forecast import sim_config, stage_forecast
from controller.ledger.memory import MemoryLedger
from controller.service import Service
from controller.settings import Settings
from tests.fakes import FakeFlags

TENANTS = list(range(1, 9))
MIGRATED = frozenset(TENANTS[:4])
WORK_SECONDS = {t: 0.3 + 0.1 * (t % 4) for t in TENANTS}  # each tenant's conversions alike
REPO = Path(__file__).resolve().parents[2]
WORKER = f"""
import json, os, sys, time
sys.path.insert(0, {str(REPO)!r})
import cutover_job

def work(c):
    started = time.time()
    time.sleep(float(c.params["work_seconds"]))
    line = {{"conversion_id": c.conversion_id, "started_at": started, "finished_at": time.time()}}
    with open(os.path.join(os.environ["CUTOVER_OUTPUT_DIR"], "produced.jsonl"), "a") as fh:
        fh.write(json.dumps(line) + "\\n")
    return cutover_job.Outcome.succeeded("-")

a = cutover_job.from_env()
a.work(work)
"""


def wave(service: Service, name: str) -> tuple[float, int]:
    """Two conversions per tenant, all at once; drained by cycles as the demo drains a stage.
    Returns the makespan the ledger shows and the most conversions the workers had at work."""
    requests = [
        ConversionRequest(f"{name}-{t}-{i}", t, {"work_seconds": str(WORK_SECONDS[t])})
        for t in TENANTS
        for i in (1, 2)
    ]
    service.ledger.accept(requests, service.clock())
    ids = [r.conversion_id for r in requests]
    deadline = time.monotonic() + 60
    while not all(service.ledger.get(c).state.terminal for c in ids):
        assert time.monotonic() < deadline, "the wave did not drain"
        service.controller.run_cycle()
        time.sleep(service.settings.cycle_seconds)
    records = [service.ledger.get(c) for c in ids]
    makespan = max(r.finished_at for r in records) - min(r.received_at for r in records)
    lines = [json.loads(x) for x in (service.settings.output_dir / "produced.jsonl").read_text().splitlines()]
    mine = [(x["started_at"], x["finished_at"]) for x in lines if x["conversion_id"] in set(ids)]
    return makespan, max_overlap(mine)


def test_a_forecast_stage_matches_the_real_runners(tmp_path: Path):
    (tmp_path / "worker.py").write_text(WORKER)
    settings = Settings(
        local_worker=f"{sys.executable} {tmp_path / 'worker.py'}",
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        backend="local",
        local_state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        flag_file=tmp_path / "flags.json",
        budget=4,
        cycle_seconds=0.1,
        legacy_max_threads=4,
        reconcile_seconds=3600,
    )
    service = build(settings)
    flags = FakeFlags.none()
    flags.publish("v1", set(MIGRATED))
    service.controller.flags = flags
    try:
        wave(service, "first")  # the history the forecast learns from
        config = sim_config(settings)
        forecast = stage_forecast(
            service.ledger,
            [t for t in TENANTS for _ in (1, 2)],
            MIGRATED,
            config,
            MemoryLedger,
            same_machine=True,
        )
        makespan, peak = wave(service, "second")
    finally:
        service.close()
    assert forecast.peak() == peak == settings.budget
    # Within a quarter: each second here holds a process start or two, which a shared machine's
    # load stretches at random (the demo's stages, of 200 conversions, are quoted in the README).
    assert abs(forecast.makespan - makespan) <= 0.25 * makespan, (forecast.makespan, makespan)
