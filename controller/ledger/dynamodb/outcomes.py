"""The DynamoDB ledger's outcomes: a finished attempt (which then expires after the retention), a
clone-and-resubmit on the same path, and an operator's requeue of a failed conversion.

Every change is a fenced conditional write through ``Writes``; none of them decides whether a job
succeeded or whether to retry it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from controller.core.domain import ConversionRecord, ConversionState
from controller.core.errors import ConflictError, NotFoundError
from controller.core.ports import Finish
from controller.ledger.dynamodb import schema
from controller.ledger.dynamodb.codec import number, text, to_record
from controller.ledger.dynamodb.writes import Move, Writes, in_order

S = ConversionState


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
                },
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
            if record.state is not S.FAILED:
                raise ConflictError(
                    f"conversion {conversion_id!r} is {record.state.value}; only a failed "
                    "conversion can be requeued"
                )
            move = Move(
                conversion_id,
                S.FAILED,
                S.RECEIVED,
                None,
                record.path,
                # Routed afresh, retries and all: the attempt count starts again.
                sets={
                    "reason": text("requeued by operator"),
                    "attempts": number(0),
                    "updated_at": number(now),
                },
                removes=(
                    "path",
                    "flag_version",
                    "job_ref",
                    "intent",
                    "claimed_at",
                    "dispatched_at",
                    "finished_at",
                    schema.TTL_ATTRIBUTE,
                ),
                to_path_none=True,
            )
            done, _ = self._apply([move], now)
        if not done:
            raise ConflictError(f"conversion {conversion_id!r} changed while it was being requeued")
        return replace(
            record,
            state=S.RECEIVED,
            path=None,
            flag_version=None,
            job_ref=None,
            intent=None,
            reason="requeued by operator",
            attempts=0,
            claimed_at=None,
            dispatched_at=None,
            finished_at=None,
            updated_at=now,
        )
