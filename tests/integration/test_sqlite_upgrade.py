"""A ledger file written before the job-timing columns existed opens, keeps its rows and gains them."""

from __future__ import annotations

import sqlite3

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.ports import Claim, Dispatched, Finish
from controller.ledger.sqlite import SCHEMA, SQLiteLedger


def test_an_older_ledger_file_gains_the_job_timing_columns(tmp_path):
    """The release before kept no job timing: its rows read back with none, new finishes keep them."""
    path = tmp_path / "old.db"
    old_schema = SCHEMA.replace(",\n    job_started_at REAL,\n    job_finished_at REAL", "")
    assert "job_started_at" not in old_schema
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
        assert (old.tenant_id, old.state, old.job_started_at) == (7, ConversionState.RECEIVED, None)
        ledger.accept([ConversionRequest("new", 8, {})], 2.0)
        owned = ledger.claim([Claim(ConversionRequest("new", 8, {}), Path.NEW, "v1", "listed")], 3.0)
        taken = ledger.mark_dispatching([owned[0].record], "b1", 4.0)
        ledger.mark_dispatched([Dispatched("new", taken[0].fence, "j1")], 5.0)
        ledger.mark_finished([Finish("new", taken[0].fence, ConversionState.SUCCEEDED, "", 6.0, 9.0)], 10.0)
        assert (again.get("new").job_started_at, again.get("new").job_finished_at) == (6.0, 9.0)
    finally:
        ledger.close()
        again.close()
