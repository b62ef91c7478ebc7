"""Two OS processes race to claim the same conversions on one SQLite file, through the record port
and through the batch port the cycle uses."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

from controller.core.domain import ConversionRequest, ConversionState
from controller.core.domain import Path as Route
from controller.core.ports import Claim
from controller.core.ports import Route as ClaimRoute
from controller.ledger.sqlite import SQLiteLedger

N = 1000


def _claimer(db: str, route: str, start, out) -> None:
    ledger = SQLiteLedger(Path(db))
    start.wait()
    created = []
    ids = list(range(N)) if route == "new" else list(reversed(range(N)))
    for chunk in range(0, N, 25):
        claims = [
            Claim(ConversionRequest(f"c{i}", i % 7 + 1, {}), Route(route), route, "race")
            for i in ids[chunk : chunk + 25]
        ]
        created += [o.record.conversion_id for o in ledger.claim(claims, 1.0) if o.created]
        time.sleep(0.005)  # a cycle's other work; without it one process can hold the lock throughout
    ledger.close()
    out.put((route, created))


def test_two_processes_claiming_the_same_conversions_end_with_one_owner_each(tmp_path: Path):
    db = tmp_path / "race.db"
    SQLiteLedger(db).close()
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(str(db), r, start, out)) for r in ("new", "legacy")]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    new, legacy = set(results["new"]), set(results["legacy"])
    assert not new & legacy
    assert new | legacy == {f"c{i}" for i in range(N)}
    assert new  # both really raced
    assert legacy
    ledger = SQLiteLedger(db)
    try:
        for cid in new:
            assert ledger.get(cid).path is Route.NEW
        for cid in legacy:
            assert ledger.get(cid).path is Route.LEGACY
        counts = ledger.counts()
        assert counts.path_state(Route.NEW, ConversionState.CLAIMED) == len(new)
        assert counts.path_state(Route.LEGACY, ConversionState.CLAIMED) == len(legacy)
    finally:
        ledger.close()


def _batch_claimer(db: str, route: str, start, out) -> None:
    ledger = SQLiteLedger(Path(db))
    start.wait()
    created: list[str] = []
    while (waiting := ledger.waiting(40)).conversion_ids:
        routes = [(ClaimRoute(Route(route), route, "race"), set(waiting.tenant_ids))]
        claimed = ledger.claim_waiting(waiting, routes, 1.0)
        created += [waiting.conversion_ids[i] for i in claimed.created]
        time.sleep(0.005)
    ledger.close()
    out.put((route, created))


def test_two_processes_claiming_the_intake_in_batches_end_with_one_owner_each(tmp_path: Path):
    """Both read the same waiting conversions and claim them as a cycle does: each is owned once,
    by whichever got there first, and the counters and decision totals add up to the intake."""
    db = tmp_path / "race.db"
    ledger = SQLiteLedger(db)
    ledger.accept([ConversionRequest(f"c{i}", i % 7 + 1, {}) for i in range(N)], 0.5)
    ledger.close()
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_batch_claimer, args=(str(db), r, start, out)) for r in ("new", "legacy")]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    new, legacy = set(results["new"]), set(results["legacy"])
    assert len(results["new"]) == len(new)
    assert not new & legacy
    assert new | legacy == {f"c{i}" for i in range(N)}
    assert new  # both really raced
    assert legacy
    ledger = SQLiteLedger(db)
    try:
        for cid in new:
            assert ledger.get(cid).path is Route.NEW
        counts = ledger.counts()
        assert counts.path_state(Route.NEW, ConversionState.CLAIMED) == len(new)
        assert counts.path_state(Route.LEGACY, ConversionState.CLAIMED) == len(legacy)
        assert counts.state(ConversionState.RECEIVED) == 0
        totals = {p: n for _, p, _, n in ledger.decisions_since(0.0)}
        assert totals == {p: n for p, n in ((Route.NEW, len(new)), (Route.LEGACY, len(legacy))) if n}
    finally:
        ledger.close()
