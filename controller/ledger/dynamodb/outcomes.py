"""The DynamoDB ledger's outcomes: a finished attempt (which then expires after the retention), a
clone-and-resubmit on the same path, and an operator's requeue of a failed conversion.

Every change is a conditional write on the state (and, for an attempt, its fence) through ``Writes``;
none of them decides whether a job succeeded, whether to retry it or what a requeue resets.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.core.domain import ConversionRecord, ConversionState
from controller.core.errors import ConflictError, NotFoundError
from controller.core.ports import Finish
from controller.core.requeue import REQUEUE_FIELDS, requeued
from controller.ledger.dynamodb import schema
from controller.ledger.dynamodb.codec import AttributeValue, item_update, number, text, to_record
from controller.ledger.dynamodb.writes import Move, Writes, in_order

S = ConversionState
# the job's own account of the attempt, and when it took its slot, when they were given
_WORK = ("work_seconds", "work_started_at", "slot_at")


def _work(f: Finish) -> dict[str, AttributeValue]:
    """The attributes keeping the job's own timing of a finished attempt, those it gave."""
    return {name: number(value) for name in _WORK if (value := getattr(f, name)) is not None}


class Outcomes(Writes):
    """``mark_finished``, ``resubmit`` and ``requeue`` of the ownership role."""

    def mark_finished(self, finishes: Sequence[Finish], now: float) -> list[str]:
        """Record outcomes for attempts still current; finished records expire after the retention."""
        for f in finishes:
            if not f.state.terminal:
                raise ValueError(f"{f.state} is not a terminal state")
        expires = number(int(now + self.retention_seconds))
        moves = [
            Move(
                f.conversion_id,
                S.DISPATCHED,
                f.state,
                f.fence,
                None,
                sets={
                    "reason": text(f.reason),
                    "finished_at": number(now),
                    "updated_at": number(now),
                    schema.TTL_ATTRIBUTE: expires,
                    **_work(f),
                },
                removes=tuple(name for name in _WORK if getattr(f, name) is None),
            )
            for f in finishes
        ]
        with self._errors("mark_finished"):
            done, _ = self._apply(moves, now)
        return in_order([f.conversion_id for f in finishes], done)

    def resubmit(self, conversion_id: str, fence: int, reason: str, now: float) -> bool:
        """Put a failed attempt back to CLAIMED on the same path, for a fresh dispatch."""
        move = Move(
            conversion_id,
            S.DISPATCHED,
            S.CLAIMED,
            fence,
            None,
            sets={"reason": text(reason), "updated_at": number(now)},
            removes=("intent", "job_ref"),
        )
        with self._errors("resubmit"):
            done, _ = self._apply([move], now)
        return bool(done)

    def requeue(self, conversion_id: str, now: float) -> ConversionRecord:
        """Free a FAILED conversion so the next cycle routes it afresh (an operator's act)."""
        with self._errors("requeue"):
            item = self._get_many([conversion_id]).get(conversion_id)
            if item is None:
                raise NotFoundError(f"conversion {conversion_id!r} is not in the ledger")
            record = to_record(item)
            freed = requeued(record, now)
            # The move writes the state, with its by_state partition; the codec the rest.
            sets, removes = item_update(freed, [name for name in REQUEUE_FIELDS if name != "state"])
            move = Move(
                conversion_id,
                record.state,
                freed.state,
                None,
                record.path,
                sets=sets,
                # No longer finished, so no longer due to expire with the finished records.
                removes=(*removes, schema.TTL_ATTRIBUTE),
                to_path_none=freed.path is None,
            )
            done, _ = self._apply([move], now)
        if not done:
            raise ConflictError(f"conversion {conversion_id!r} changed while it was being requeued")
        return freed
