"""The rollout gates' evidence read through the ``LedgerQueries.query`` port alone, so that a ledger
without a cheaper way (DynamoDB, whose state index is ordered by receipt, not by finish) can offer
it in one line. Reads only; pages through every finished conversion the ledger still keeps.
"""

from __future__ import annotations

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.ports import FinishedConversion, LedgerQueries

__all__ = ["FinishedConversion", "finished", "finished_through_query"]

PAGE = 1000


def finished(record: ConversionRecord) -> FinishedConversion | None:
    """The gates' view of a finished record, or None for one still at work or without a path."""
    if not record.state.terminal or record.path is None or record.finished_at is None:
        return None
    started = record.dispatched_at
    return FinishedConversion(
        tenant_id=record.tenant_id,
        path=record.path,
        state=record.state,
        attempts=record.attempts,
        claimed_at=record.claimed_at if record.claimed_at is not None else record.finished_at,
        finished_at=record.finished_at,
        seconds=None if started is None else max(0.0, record.finished_at - started),
        work_seconds=record.work_seconds,
    )


def finished_through_query(queries: LedgerQueries, since: float) -> list[FinishedConversion]:
    """Every conversion that succeeded or failed at or after ``since``, page by page."""
    out: list[FinishedConversion] = []
    for state in (ConversionState.SUCCEEDED, ConversionState.FAILED):
        for path in Path:
            cursor: str | None = None
            while True:
                records, cursor = queries.query(state=state, path=path, after=cursor, limit=PAGE)
                for record in records:
                    row = finished(record)
                    if row is not None and row.finished_at >= since:
                        out.append(row)
                if cursor is None:
                    break
    return out
