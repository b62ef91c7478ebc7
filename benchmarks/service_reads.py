"""How fast the service's read endpoints answer on a large SQLite ledger.

Seeds a ledger with N conversions (default 1,000,000: mostly finished, some failed, a backlog of
owned and in-flight work across 5,000 tenants, an hour of per-minute decisions), then times
``/status``, ``/healthz``, ``/readyz``, ``/metrics``, ``/tenants``, ``/tenants/{id}/route``,
``/conversions?state=failed`` and the dashboard in process, and prints the figures as one JSON
object. Between cycles the views come from the read model's memory, so the endpoint figures are
what a watcher meets; ``refresh`` times the read model's once-per-cycle re-read of everything the
dashboard shows, the ledger cost that used to fall on each request. ``--smoke`` runs the same code
on 20,000 records for 3 rounds.

    python benchmarks/service_reads.py [--records 1000000] [--rounds 30] [--keep DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path as FsPath

import httpx

sys.path.insert(0, str(FsPath(__file__).resolve().parents[1]))

from harness import machine

from controller.api.app import create_app
from controller.api.readmodel import ReadModel
from controller.api.tenants import PlanFile
from controller.bootstrap import cycle_config
from controller.core.domain import ConversionRequest, Path
from controller.core.ports import Claim
from controller.engine.cycle import Controller
from controller.ledger.sqlite import SQLiteLedger
from controller.service import Service
from controller.settings import Settings
from flags.document import values_document
from flags.file_source import FileFlagSource, write_json_atomically
from flags.lkg import LastKnownGood

TENANTS = 5000
ENDPOINTS = (
    "/healthz",
    "/readyz",
    "/status",
    "/metrics",
    "/tenants",
    "/tenants/1234/route",
    "/conversions?state=failed&limit=100",
    "/",
)


class Idle:
    """A backend with nothing to do: the benchmark measures reads, not work."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def submit(self, batch: object) -> list[object]:
        return []

    def poll(self, refs: object) -> dict[object, object]:
        return {}

    def find(self, intents: object) -> dict[str, object]:
        return {}

    def cancel(self, ref: object) -> None:
        return None

    def set_capacity(self, slots: int) -> int:
        return slots

    def in_use(self) -> int:
        return 0

    def close(self) -> None:
        return None


def seed(db: FsPath, records: int) -> None:
    """Bulk rows written straight into the table, and the counters and decision totals the ledger
    keeps for them added in the same transaction, as its own writes do."""
    ledger = SQLiteLedger(db)
    now = time.time()
    rng = random.Random(1)
    conn = ledger._connection()  # bulk seeding goes under the port, on purpose
    conn.execute("BEGIN IMMEDIATE")
    rows = []
    for n in range(records):
        tenant = 1 + n % TENANTS
        path = "new" if tenant <= 2000 else "legacy"
        roll = rng.random()
        state = (
            "succeeded"
            if roll < 0.97
            else "failed"
            if roll < 0.99
            else "dispatched"
            if roll < 0.995
            else "claimed"
        )
        at = now - rng.uniform(0, 30 * 86400)
        rows.append(
            (
                f"b{n}",
                tenant,
                "{}",
                state,
                path,
                "v7",
                "bench",
                f"job-{n}",
                1,
                at,
                at,
                at + 1,
                at + 60,
                at + 60,
            )
        )
        if len(rows) == 50_000:
            _insert(conn, rows)
            rows.clear()
    _insert(conn, rows)
    conn.execute(
        "INSERT INTO counters (state, path, n) "
        "SELECT state, coalesce(path, ''), count(*) FROM conversions GROUP BY state, path"
    )
    conn.execute(  # rows written as claimed count as decisions, as a claim of a new request does
        "INSERT INTO decisions_by_minute (minute, path, flag_version, n) "
        "SELECT CAST(claimed_at / 60 AS INTEGER), path, coalesce(flag_version, ''), count(*) "
        "FROM conversions WHERE state = 'claimed' GROUP BY 1, 2, 3"
    )
    conn.execute("COMMIT")
    claims = [
        Claim(
            ConversionRequest(f"recent-{m}-{i}", 1 + (m * 37 + i) % TENANTS, {}),
            Path.NEW if i % 3 else Path.LEGACY,
            f"v{6 + (m < 5)}",
            "",
        )
        for m in range(60)
        for i in range(40)
    ]
    for m in range(60):
        ledger.claim(claims[m * 40 : (m + 1) * 40], now - m * 60)
    ledger.close()


def _insert(conn: object, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(  # type: ignore[attr-defined]
        "INSERT INTO conversions (conversion_id, tenant_id, params, state, path, flag_version, reason, "
        "job_ref, attempts, received_at, claimed_at, dispatched_at, finished_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def service_on(workdir: FsPath) -> Service:
    groups = {f"group-{g}": list(range(g * 1000 + 1, g * 1000 + 1001)) for g in range(5)}
    write_json_atomically(
        workdir / "rollout.json", {"groups": [{"name": k, "tenant_ids": v} for k, v in groups.items()]}
    )
    write_json_atomically(
        workdir / "flags.json", values_document("migrated_tenants", True, list(range(1, 2001)))
    )
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        flag_file=workdir / "flags.json",
        ledger=f"sqlite:///{workdir / 'ledger.db'}",
        rollout_file=workdir / "rollout.json",
    )
    ledger = SQLiteLedger(workdir / "ledger.db")
    flags = LastKnownGood(FileFlagSource(settings.flag_file, settings.flag_key, time.time), ledger, time.time)
    backends = {Path.LEGACY: Idle(Path.LEGACY), Path.NEW: Idle(Path.NEW)}
    controller = Controller(
        ledger=ledger,
        flags=flags,
        backends=backends,
        config=cycle_config(settings),
        holder="bench",  # type: ignore[arg-type]
    )
    flags.read()
    return Service(settings, ledger, flags, backends, controller, time.time)  # type: ignore[arg-type]


def figures(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "max_ms": round(times[-1], 2),
    }


async def measure(service: Service, rounds: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    views = ReadModel(service, PlanFile(service.settings.rollout_file))
    app = create_app(service, None, views=views)
    out: dict[str, dict[str, float]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
        for url in ENDPOINTS:
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                r = await c.get(url)
                times.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 200, (url, r.status_code, r.text[:200])
            out[url] = figures(times)
        refresh = []
        for _ in range(rounds):
            assert (await c.get("/")).status_code == 200  # a watcher asks for every part
            started = time.perf_counter()
            views.refresh()
            refresh.append((time.perf_counter() - started) * 1000)
    return out, figures(refresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--keep", type=FsPath, default=None, help="reuse or keep the seeded ledger here")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run of the same code")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.rounds = 20_000, 3
    workdir = args.keep or FsPath(tempfile.mkdtemp(prefix="cutover-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    seeded_in = 0.0
    if not (workdir / "ledger.db").exists():
        started = time.monotonic()
        seed(workdir / "ledger.db", args.records)
        seeded_in = time.monotonic() - started
    try:
        service = service_on(workdir)
        counts = service.ledger.counts()
        endpoints, refresh = asyncio.run(measure(service, args.rounds))
        service.close()
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "service_reads",
                "smoke": args.smoke,
                "machine": machine(),
                "records": sum(counts.by_state.values()),
                "seeded_seconds": round(seeded_in, 1),
                "rounds": args.rounds,
                "endpoints": endpoints,
                "refresh": refresh,
                "goals": {},
            }
        )
    )


if __name__ == "__main__":
    main()
