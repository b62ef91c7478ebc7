"""A ledger file written by the version that counted with per-row triggers (schema 0) opens with
the current code, is upgraded once, keeps its counts, and stays exact through further work.

The file under test, ``tests/fixtures/ledger-v0.db``, was written by that version itself (see
``tests/fixtures/make_ledger_v0.py``): conversions in every state on both paths, decisions over
four minutes and three flag versions, a flag, a value and a lease.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path as FsPath

import pytest

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.errors import LedgerError
from controller.core.ports import Claim, Dispatched, Finish, Route, ShadowFinish
from controller.core.shadow import ShadowKind, ShadowRecord, ShadowState
from controller.engine.cycle import Controller, CycleConfig
from controller.ledger.sqlite import SCHEMA, SCHEMA_VERSION, SQLiteLedger
from tests.fakes import FakeBackend, FakeClock, FakeFlags, World

S = ConversionState
FIXTURE = FsPath(__file__).resolve().parent.parent / "fixtures" / "ledger-v0.db"
T0 = 1_800_000_000.0  # the fixture's clock


@pytest.fixture
def old_file(tmp_path: FsPath) -> FsPath:
    target = tmp_path / "ledger.db"
    shutil.copyfile(FIXTURE, target)
    return target


def raw(path: FsPath, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def scanned(path: FsPath) -> dict[tuple[str, str], int]:
    """Conversions per (state, path), counted row by row."""
    rows = raw(path, "SELECT state, coalesce(path, ''), count(*) FROM conversions GROUP BY 1, 2")
    return {(str(s), str(p)): int(n) for s, p, n in rows}


def counted(ledger: SQLiteLedger) -> dict[tuple[str, str], int]:
    """The same, from the ledger's counters."""
    counts = ledger.counts()
    out = {(p.value, s.value): n for (p, s), n in counts.by_path_state.items() if n}
    received = counts.state(S.RECEIVED)
    flat = {(state, path): n for (path, state), n in out.items()}
    return flat | ({(S.RECEIVED.value, ""): received} if received else {})


def triggers(path: FsPath) -> list[str]:
    return [
        str(n) for (n,) in raw(path, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
    ]


def test_the_fixture_is_a_file_of_the_trigger_schema():
    """What the other tests rely on: schema 0, its five triggers, counters that match its rows."""
    assert raw(FIXTURE, "PRAGMA user_version") == [(0,)]
    assert len(triggers(FIXTURE)) == 5
    old = {
        (str(s), str(p)): int(n) for s, p, n in raw(FIXTURE, "SELECT state, path, n FROM counters WHERE n")
    }
    assert old == scanned(FIXTURE)
    assert {s for s, _ in old} == {s.value for s in S}


def test_an_old_ledger_opens_upgraded_and_keeps_its_counts_and_contents(old_file):
    """The counters, decision totals, records, flag, values and leases all survive the upgrade."""
    counters_before = raw(old_file, "SELECT state, path, n FROM counters ORDER BY 1, 2")
    decisions_before = raw(
        old_file, "SELECT minute, path, flag_version, n FROM decisions_by_minute ORDER BY 1, 2, 3"
    )
    rows_before = raw(old_file, "SELECT * FROM conversions ORDER BY seq")
    ledger = SQLiteLedger(old_file)
    try:
        assert raw(old_file, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert triggers(old_file) == []
        assert raw(old_file, "SELECT state, path, n FROM counters ORDER BY 1, 2") == counters_before
        # The rows as they were, with the run time columns added since (empty for them).
        assert [row[:-3] for row in raw(old_file, "SELECT * FROM conversions ORDER BY seq")] == rows_before
        added = raw(old_file, "SELECT DISTINCT work_seconds, work_started_at, slot_at FROM conversions")
        assert added == [(None, None, None)]
        assert raw(old_file, "SELECT count(*) FROM shadows") == [(0,)]
        assert counted(ledger) == scanned(old_file)
        assert counted(ledger)[(S.RECEIVED.value, "")] == 5
        totals = [(m, p.value, v, n) for m, p, v, n in ledger.decisions_since(0.0)]
        assert sorted(totals) == sorted(decisions_before)
        assert sum(n for *_, n in totals) == 27
        snap = ledger.load_flag()
        assert snap is not None
        assert (snap.version, snap.tenant_ids) == ("7", frozenset({1, 2}))
        assert ledger.get_value("finder:sql") == '{"watermark": "2027-01-15"}'
        assert not ledger.try_lease("dispatch", "replica-b", T0 + 710, 30.0)  # still replica-a's
        direct = ledger.get("v0-direct")
        assert direct is not None
        assert (direct.state, direct.path, direct.tenant_id) == (S.CLAIMED, Path.LEGACY, 9)
    finally:
        ledger.close()


def test_the_upgrade_happens_once(old_file):
    """Opening an upgraded file again changes nothing in its schema."""
    SQLiteLedger(old_file).close()
    cookie = raw(old_file, "PRAGMA schema_version")
    again = SQLiteLedger(old_file)
    again.close()
    assert raw(old_file, "PRAGMA schema_version") == cookie
    assert raw(old_file, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_after_the_upgrade_the_counters_stay_exact_through_every_transition(old_file):
    """Cycles route, dispatch, finish and resubmit over the upgraded file, with new arrivals,
    duplicates, a direct claim and a requeue: after each step the counters equal a row count."""
    clock = FakeClock(T0 + 1000)
    ledger = SQLiteLedger(old_file)
    world = World(budget=4)
    backends = {p: FakeBackend(p, world, ticks=2) for p in Path}
    backends[Path.LEGACY].fail_once = {"late-1"}  # its first attempt fails and is resubmitted
    flags = FakeFlags.none()
    flags.publish("8", {1, 3})
    controller = Controller(
        ledger=ledger,
        flags=flags,
        backends=backends,
        config=CycleConfig(budget=4, intent_grace_seconds=30),
        clock=clock,
    )
    decided_before = sum(n for *_, n in ledger.decisions_since(0.0))
    try:
        assert ledger.accept(
            [ConversionRequest("v0-00", 1, {"report": "r0"}), ConversionRequest("late-1", 4)], clock()
        ).duplicates == ["v0-00"]
        ledger.claim([Claim(ConversionRequest("late-direct", 2), Path.NEW, "8", "direct")], clock())
        claimed = 1  # late-direct; then late-1 and the five waiting, by the cycles below
        for _ in range(60):
            controller.run_cycle()
            world.tick()
            clock.advance(5)
            assert counted(ledger) == scanned(old_file)
        failed = ledger.recent(S.FAILED, 100)
        assert failed
        ledger.requeue(failed[0].conversion_id, clock())
        assert counted(ledger) == scanned(old_file)
        for _ in range(30):
            controller.run_cycle()
            world.tick()
            clock.advance(5)
            assert counted(ledger) == scanned(old_file)
        late = ledger.get("late-1")
        assert late is not None
        assert (late.state, late.attempts) == (S.SUCCEEDED, 2)  # failed once, resubmitted
        again = ledger.get(failed[0].conversion_id)
        assert again is not None
        assert again.state is not S.RECEIVED
        claimed += 5 + 1  # the five waiting in the file, late-1
        claimed += 1  # the requeued one, claimed again
        decided = sum(n for *_, n in ledger.decisions_since(0.0)) - decided_before
        assert decided == claimed
        assert counted(ledger).get((S.RECEIVED.value, ""), 0) == 0
    finally:
        ledger.close()


def test_an_older_version_reopening_the_file_is_refused_rather_than_counted_twice(old_file, tmp_path):
    """The old version re-creates its triggers when it opens a file; from then on this version
    refuses to write (nothing half-applied) until it is restarted, which upgrades the file again."""
    pristine = tmp_path / "pristine.db"
    shutil.copyfile(FIXTURE, pristine)
    old_sql = [str(sql) for (sql,) in raw(pristine, "SELECT sql FROM sqlite_master WHERE type = 'trigger'")]
    ledger = SQLiteLedger(old_file)
    try:
        ledger.accept([ConversionRequest("before", 1)], T0 + 800)
        with sqlite3.connect(old_file) as older:
            for sql in old_sql:
                older.execute(sql)
        before = scanned(old_file)
        waiting = ledger.waiting(100)
        with pytest.raises(LedgerError, match=r"older cutover .* count_insert, count_update"):
            ledger.claim_waiting(waiting, [(Route(Path.LEGACY, "8", "x"), set(waiting.tenant_ids))], T0 + 810)
        with pytest.raises(LedgerError, match="older cutover"):
            ledger.accept([ConversionRequest("refused", 1)], T0 + 811)
        assert scanned(old_file) == before
        assert ledger.get("refused") is None
        assert counted(ledger) == before
    finally:
        ledger.close()
    restarted = SQLiteLedger(old_file)
    try:
        assert triggers(old_file) == []
        restarted.accept([ConversionRequest("after", 1)], T0 + 900)
        assert counted(restarted) == scanned(old_file)
    finally:
        restarted.close()


def test_a_file_from_a_newer_version_is_refused(old_file):
    """A schema this version does not know is never written to."""
    with sqlite3.connect(old_file) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LedgerError, match="newer cutover"):
        SQLiteLedger(old_file)
    assert len(triggers(old_file)) == 5  # left as it was


def test_a_new_file_starts_at_the_current_schema_without_triggers(tmp_path):
    ledger = SQLiteLedger(tmp_path / "fresh.db")
    ledger.close()
    assert raw(tmp_path / "fresh.db", "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert triggers(tmp_path / "fresh.db") == []


def test_an_older_ledger_file_gains_the_run_time_columns(tmp_path: FsPath) -> None:
    """A file written before conversions recorded their own run time opens, gains the columns, and
    keeps its conversions; the old rows simply have no run time."""
    db = tmp_path / "old.db"
    ledger = SQLiteLedger(db)
    ledger.accept([ConversionRequest("before", 1)], 1.0)
    ledger.close()
    with sqlite3.connect(db) as conn:
        for column in ("slot_at", "work_started_at", "work_seconds"):  # as the earlier versions made it
            conn.execute(f"ALTER TABLE conversions DROP COLUMN {column}")

    ledger = SQLiteLedger(db)
    try:
        assert ledger.get("before") is not None
        ledger.claim([Claim(ConversionRequest("after", 1), Path.NEW, "1", "listed")], 2.0)
        taken = ledger.mark_dispatching([ledger.get("after")], "b", 3.0)
        ledger.mark_dispatched([Dispatched("after", taken[0].fence, "job")], 3.0)
        ledger.mark_finished([Finish("after", taken[0].fence, S.SUCCEEDED, "", 1.25, 6.5, 6.0)], 9.0)
        after = ledger.get("after")
        assert (after.work_seconds, after.work_started_at, after.slot_at) == (1.25, 6.5, 6.0)
        assert ledger.get("before").work_seconds is None
        assert counted(ledger) == scanned(db)
    finally:
        ledger.close()
    SQLiteLedger(db).close()  # opening it again changes nothing


def test_a_shadows_table_made_before_its_timings_gains_them(tmp_path: FsPath) -> None:
    """A file whose shadows table was made before shadows kept their own timing opens, gains the
    columns, keeps its shadows (with no timing), and records the timing of a shadow finished now."""
    db = tmp_path / "shadows.db"
    ledger = SQLiteLedger(db)
    ledger.add_shadows([ShadowRecord("new:a", "a", 1, {}, ShadowKind.NEW, ShadowState.PENDING)], 1.0)
    ledger.add_shadows([ShadowRecord("new:b", "b", 1, {}, ShadowKind.NEW, ShadowState.PENDING)], 1.0)
    ledger.close()
    with sqlite3.connect(db) as conn:
        for column in ("slot_at", "work_started_at", "work_seconds"):  # as the first version made it
            conn.execute(f"ALTER TABLE shadows DROP COLUMN {column}")

    ledger = SQLiteLedger(db)
    try:
        (old, new) = ledger.shadows([ShadowState.PENDING])
        assert (old.shadow_id, old.work_seconds, old.slot_at) == ("new:a", None, None)
        taken = ledger.mark_shadows_dispatching([new], "k", 2.0)
        ledger.mark_shadows_dispatched([(new.shadow_id, taken[0].fence, "job")], 2.0)
        finish = ShadowFinish(
            new.shadow_id, taken[0].fence, ShadowState.SUCCEEDED, "/q/b.xlsx", "", 0.5, 3.0, 2.5
        )
        assert ledger.finish_shadows([finish], 4.0) == ["new:b"]
        (done,) = ledger.shadows([ShadowState.SUCCEEDED])
        assert (done.work_seconds, done.work_started_at, done.slot_at) == (0.5, 3.0, 2.5)
    finally:
        ledger.close()


def test_a_file_from_the_first_release_opens_in_two_processes(tmp_path: FsPath) -> None:
    """The first release kept no run time at all: two processes opening its file both see the rows,
    and what one records the other reads back."""
    path = tmp_path / "first.db"
    table = SCHEMA[0].replace(
        ",\n        work_seconds REAL,\n        work_started_at REAL,\n        slot_at REAL", ""
    )
    assert "work_seconds" not in table
    db = sqlite3.connect(path)
    for statement in (table, *SCHEMA[1:]):
        db.execute(statement)
    db.execute(
        "INSERT INTO conversions (conversion_id, tenant_id, params, state, received_at, updated_at) "
        "VALUES ('old', 7, '{}', 'received', 1.0, 1.0)"
    )
    db.execute("INSERT INTO counters (state, path, n) VALUES ('received', '', 1)")
    db.commit()
    db.close()

    ledger = SQLiteLedger(path)
    again = SQLiteLedger(path)  # a second process opening the upgraded file changes nothing
    try:
        old = ledger.get("old")
        assert old is not None
        assert (old.tenant_id, old.state, old.work_started_at) == (7, S.RECEIVED, None)
        ledger.accept([ConversionRequest("new", 8, {})], 2.0)
        owned = ledger.claim([Claim(ConversionRequest("new", 8, {}), Path.NEW, "v1", "listed")], 3.0)
        taken = ledger.mark_dispatching([owned[0].record], "b1", 4.0)
        ledger.mark_dispatched([Dispatched("new", taken[0].fence, "j1")], 5.0)
        ledger.mark_finished([Finish("new", taken[0].fence, S.SUCCEEDED, "", 3.0, 6.0)], 10.0)
        seen = again.get("new")
        assert seen is not None
        assert (seen.work_seconds, seen.work_started_at) == (3.0, 6.0)
        assert counted(again) == scanned(path)
    finally:
        ledger.close()
        again.close()
