"""A ledger file written before conversions recorded their own run time opens, gains the columns,
and keeps its conversions; the old rows simply have no run time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controller.core.domain import ConversionRequest, ConversionState
from controller.core.domain import Path as Route
from controller.core.ports import Claim, Dispatched, Finish
from controller.ledger.sqlite import SCHEMA, SQLiteLedger


def test_an_older_ledger_file_gains_the_run_time_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    ledger = SQLiteLedger(db)
    ledger.accept([ConversionRequest("before", 1)], 1.0)
    ledger.close()
    raw = sqlite3.connect(db)
    for column in ("work_started_at", "work_seconds"):  # as the earlier versions made it
        raw.execute(f"ALTER TABLE conversions DROP COLUMN {column}")
    raw.commit()
    raw.close()

    ledger = SQLiteLedger(db)
    try:
        assert ledger.get("before") is not None
        ledger.claim([Claim(ConversionRequest("after", 1), Route.NEW, "1", "listed")], 2.0)
        taken = ledger.mark_dispatching([ledger.get("after")], "b", 3.0)
        ledger.mark_dispatched([Dispatched("after", taken[0].fence, "job")], 3.0)
        ledger.mark_finished([Finish("after", taken[0].fence, ConversionState.SUCCEEDED, "", 1.25, 6.5)], 9.0)
        assert (ledger.get("after").work_seconds, ledger.get("after").work_started_at) == (1.25, 6.5)
        assert ledger.get("before").work_seconds is None
    finally:
        ledger.close()
    SQLiteLedger(db).close()  # opening it again changes nothing


def test_a_file_from_the_first_release_opens_in_two_processes(tmp_path: Path) -> None:
    """The first release kept no run time at all: two processes opening its file both see the rows,
    and what one records the other reads back."""
    path = tmp_path / "first.db"
    old_schema = SCHEMA.replace(",\n    work_seconds REAL,\n    work_started_at REAL", "")
    assert "work_seconds" not in old_schema
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.execute(
        "INSERT INTO conversions (conversion_id, tenant_id, params, state, received_at, updated_at) "
        "VALUES ('old', 7, '{}', 'received', 1.0, 1.0)"
    )
    db.commit()
    db.close()

    ledger = SQLiteLedger(path)
    again = SQLiteLedger(path)  # a second process opening the upgraded file changes nothing
    try:
        old = ledger.get("old")
        assert (old.tenant_id, old.state, old.work_started_at) == (7, ConversionState.RECEIVED, None)
        ledger.accept([ConversionRequest("new", 8, {})], 2.0)
        owned = ledger.claim([Claim(ConversionRequest("new", 8, {}), Route.NEW, "v1", "listed")], 3.0)
        taken = ledger.mark_dispatching([owned[0].record], "b1", 4.0)
        ledger.mark_dispatched([Dispatched("new", taken[0].fence, "j1")], 5.0)
        ledger.mark_finished([Finish("new", taken[0].fence, ConversionState.SUCCEEDED, "", 3.0, 6.0)], 10.0)
        assert (again.get("new").work_seconds, again.get("new").work_started_at) == (3.0, 6.0)
    finally:
        ledger.close()
        again.close()
