"""The DynamoDB ledger's dispatch: the queues of owned work each path has not been handed yet, the
intent recorded before each submit (under a new fence), the job reference after it, and the intents
a crash left behind.

Every change is a fenced conditional write through ``Writes``, so a late or repeated update cannot
move a conversion backwards. Never submits anything itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.ports import Dispatched
from controller.ledger.dynamodb.codec import Item, number, seq_of, state_key, text
from controller.ledger.dynamodb.writes import Move, Writes, in_order

S = ConversionState


class Dispatch(Writes):
    """The dispatch half of the ownership role, from ``pending_dispatch`` to ``in_flight``."""

    def pending_dispatch(self, path: Path, limit: int) -> list[ConversionRecord]:
        """Conversions owned by ``path`` and not yet handed to it, oldest claim first."""
        with self._errors("pending_dispatch"):
            return self._records(self._partition(state_key(S.CLAIMED, path), limit=limit))

    def mark_dispatching(
        self, records: Sequence[ConversionRecord], intent: str, now: float
    ) -> list[ConversionRecord]:
        """Record the intent to submit, each under a new fence; returns the records this call took."""
        moves = [
            Move(
                r.conversion_id,
                S.CLAIMED,
                S.DISPATCHING,
                r.fence,
                r.path,
                sets={"intent": text(intent), "fence": number(r.fence + 1), "updated_at": number(now)},
                increments=("attempts",),
            )
            for r in records
            if r.path is not None
        ]
        with self._errors("mark_dispatching"):
            done, _ = self._apply(moves, now)
        took = set(done)
        out: list[ConversionRecord] = []
        for r in records:
            if r.conversion_id in took:
                took.discard(r.conversion_id)
                out.append(
                    replace(
                        r,
                        state=S.DISPATCHING,
                        intent=intent,
                        fence=r.fence + 1,
                        attempts=r.attempts + 1,
                        updated_at=now,
                    )
                )
        return out

    def mark_dispatched(self, items: Sequence[Dispatched], now: float) -> list[str]:
        """Record job references for intents still current; returns the ids recorded."""
        moves = [
            Move(
                d.conversion_id,
                S.DISPATCHING,
                S.DISPATCHED,
                d.fence,
                None,
                sets={"job_ref": text(d.job_ref), "dispatched_at": number(now), "updated_at": number(now)},
            )
            for d in items
        ]
        with self._errors("mark_dispatched"):
            done, _ = self._apply(moves, now)
        return in_order([d.conversion_id for d in items], done)

    def release(self, conversion_ids: Sequence[tuple[str, int]], now: float, reason: str) -> int:
        """Return intents to CLAIMED when the backend confirmed nothing was started."""
        moves = [
            Move(
                cid,
                S.DISPATCHING,
                S.CLAIMED,
                fence,
                None,
                sets={"reason": text(reason), "updated_at": number(now)},
                removes=("intent",),
                decrements=("attempts",),  # nothing was started: the attempt does not count
            )
            for cid, fence in conversion_ids
        ]
        with self._errors("release"):
            done, _ = self._apply(moves, now)
        return len(done)

    def intents(self, older_than: float, limit: int) -> list[ConversionRecord]:
        """Intents recorded before ``older_than`` that never got a job reference."""
        found: list[Item] = []
        with self._errors("intents"):
            for path in Path:
                found.extend(
                    self._partition(
                        state_key(S.DISPATCHING, path),
                        limit=limit,
                        filter_expression="updated_at < :older",
                        filter_values={":older": number(older_than)},
                    )
                )
        found.sort(key=seq_of)
        return self._records(found[:limit])

    def in_flight(self, path: Path, limit: int) -> list[ConversionRecord]:
        """Conversions a backend holds (DISPATCHED) on ``path``."""
        with self._errors("in_flight"):
            return self._records(self._partition(state_key(S.DISPATCHED, path), limit=limit))
