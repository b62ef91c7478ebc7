"""A ledger file written before conversions recorded their own run time opens, gains the column,
and keeps its conversions; the old rows simply have no run time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controller.core.domain import ConversionRequest, ConversionState
from controller.core.domain import Path as Route
from controller.core.ports import Claim, Dispatched, Finish
from controller.ledger.sqlite import SQLiteLedger


def test_an_older_ledger_file_gains_the_run_time_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    ledger = SQLiteLedger(db)
    ledger.accept([ConversionRequest("before", 1)], 1.0)
    ledger.close()
    raw = sqlite3.connect(db)
    raw.execute("ALTER TABLE conversions DROP COLUMN work_seconds")  # as the earlier version made it
    raw.commit()
    raw.close()

    ledger = SQLiteLedger(db)
    try:
        assert ledger.get("before") is not None
        ledger.claim([Claim(ConversionRequest("after", 1), Route.NEW, "1", "listed")], 2.0)
        taken = ledger.mark_dispatching([ledger.get("after")], "b", 3.0)
        ledger.mark_dispatched([Dispatched("after", taken[0].fence, "job")], 3.0)
        ledger.mark_finished([Finish("after", taken[0].fence, ConversionState.SUCCEEDED, "", 1.25)], 9.0)
        assert ledger.get("after").work_seconds == 1.25
        assert ledger.get("before").work_seconds is None
    finally:
        ledger.close()
    SQLiteLedger(db).close()  # opening it again changes nothing
