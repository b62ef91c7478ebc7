"""What an operator's requeue makes of a failed conversion: the one definition every ledger writes.

Pure: a record and the time in, the record the ledger must hold afterwards out. It never reads or
writes a ledger; each ledger checks, in its own transaction, that the conversion is still FAILED
when it writes ``REQUEUE_FIELDS`` of ``requeued``'s answer.
"""

from __future__ import annotations

from dataclasses import replace

from controller.core.domain import ConversionRecord, ConversionState
from controller.core.errors import ConflictError
from controller.core.transitions import allowed

S = ConversionState

REQUEUE_REASON = "requeued by operator"

# Every field a requeue rewrites. A ledger writes all of them, cleared ones included, so what a
# requeue leaves never depends on what the failed attempt had set.
REQUEUE_FIELDS: tuple[str, ...] = (
    "state",
    "path",
    "flag_version",
    "reason",
    "job_ref",
    "intent",
    "attempts",
    "claimed_at",
    "dispatched_at",
    "finished_at",
    "updated_at",
    "work_seconds",
    "work_started_at",
    "slot_at",
)


def requeued(record: ConversionRecord, now: float) -> ConversionRecord:
    """The record a requeue at ``now`` leaves of the failed ``record``.

    Back in the intake (RECEIVED) and owned by no path, without the failed ownership's flag version,
    job, intent, timestamps or run time, so the next cycle routes it afresh; its attempts count from zero, so
    it gets its retries again. The request and its receipt time stay. So does the fence: it only
    ever grows, so an update still on its way from the failed attempt cannot match the next one.

    Raises ``ConflictError`` unless the state machine lets ``record`` go back to RECEIVED, which only
    a FAILED conversion may.
    """
    if not allowed(record.state, S.RECEIVED):
        raise ConflictError(
            f"conversion {record.conversion_id!r} is {record.state.value}; only a failed "
            "conversion can be requeued"
        )
    return replace(
        record,
        state=S.RECEIVED,
        path=None,
        flag_version=None,
        reason=REQUEUE_REASON,
        job_ref=None,
        intent=None,
        attempts=0,
        claimed_at=None,
        dispatched_at=None,
        finished_at=None,
        updated_at=now,
        work_seconds=None,
        work_started_at=None,
        slot_at=None,
    )
