"""The DynamoDB ledger's intake and claims: recording new requests, and the first-wins claim that
makes a path a conversion's owner.

A claim is a conditional write from RECEIVED, or a conditional put of a new item for a request the
intake has not seen; either way only one claim of a conversion ever succeeds. Never decides the path:
the claim carries it.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.core import resend
from controller.core.domain import ConversionRecord, ConversionRequest, ConversionState, Ownership
from controller.core.errors import LedgerError
from controller.core.ports import AcceptResult, Claim
from controller.ledger.dynamodb import schema
from controller.ledger.dynamodb.codec import (
    AttributeValue,
    Item,
    conversion_item,
    number,
    state_key,
    text,
    text_of,
    to_record,
)
from controller.ledger.dynamodb.writes import Move, Writes

S = ConversionState


class Claims(Writes):
    """``accept``, ``unclaimed`` and ``claim`` of the ownership role."""

    def accept(self, requests: Sequence[ConversionRequest], now: float) -> AcceptResult:
        """Record new requests; a known id (or one repeated in ``requests``) is a duplicate, and one
        with other content a ``ConflictError`` that records nothing."""
        resend.within(requests)
        firsts: dict[str, ConversionRequest] = {}
        for r in requests:
            firsts.setdefault(r.conversion_id, r)
        with self._errors("accept"):
            accepted: set[str] = set()
            if firsts:
                # Checked before anything is written, so a conflict records nothing of the batch.
                known = {cid: to_record(item).request for cid, item in self._get_many(list(firsts)).items()}
                resend.refuse_conflicts(known, firsts.values())
                first = self._reserve_seq(len(firsts))
                writes = []
                for i, req in enumerate(firsts.values()):
                    item = conversion_item(req, first + i, S.RECEIVED, now)
                    item[schema.STATE_INDEX_HASH_KEY] = text(state_key(S.RECEIVED, None))
                    writes.append(self._put_new(item, state_key(S.RECEIVED, None)))
                done, _ = self._transact(writes, now)
                accepted = {w.conversion_id for w in done}
        out = AcceptResult()
        taken: set[str] = set()
        for r in requests:
            if r.conversion_id in accepted and r.conversion_id not in taken:
                taken.add(r.conversion_id)
                out.accepted.append(r.conversion_id)
            else:
                out.duplicates.append(r.conversion_id)
        for cid in accepted:
            self._remember(cid, None)
        return out

    def unclaimed(self, limit: int) -> list[ConversionRecord]:
        """Requests in the intake that no path owns yet, oldest first."""
        with self._errors("unclaimed"):
            return self._records(self._partition(state_key(S.RECEIVED, None), limit=limit))

    def claim(self, claims: Sequence[Claim], now: float) -> list[Ownership]:
        """Record each decision unless the conversion is owned already; the first claim wins."""
        firsts: dict[str, Claim] = {}
        for c in claims:
            firsts.setdefault(c.request.conversion_id, c)
        with self._errors("claim"):
            created, existing = self._claim_firsts(firsts, now)
        return self._ownerships(claims, created, existing, now)

    def _claim_firsts(self, firsts: dict[str, Claim], now: float) -> tuple[set[str], dict[str, Item]]:
        """Claim each conversion from the intake, or put it in claimed when the intake never had it;
        returns the ids this call claimed and the items of those another claim owns."""
        created: set[str] = set()
        existing: dict[str, Item] = {}
        todo = list(firsts.values())
        for _ in range(3):  # a request accepted between our two writes is claimed on the next pass
            if not todo:
                break
            done, refused = self._transact([self._update(_claim_move(c, now), None) for c in todo], now)
            created.update(w.conversion_id for w in done)
            missing = [firsts[cid] for cid, item in refused.items() if item is None]
            existing.update({cid: item for cid, item in refused.items() if item is not None})
            put, held, received = self._put_claimed(missing, now)
            created.update(put)
            existing.update(held)
            todo = [firsts[cid] for cid in received]
        if todo:
            existing.update(self._get_many([c.request.conversion_id for c in todo]))
        return created, existing

    def _put_claimed(
        self, claims: Sequence[Claim], now: float
    ) -> tuple[set[str], dict[str, Item], list[str]]:
        """Put new items, already claimed, for requests the intake does not hold; returns the ids put,
        the items of those someone else put first, and the ids the intake accepted meanwhile."""
        if not claims:
            return set(), {}, []
        first = self._reserve_seq(len(claims))
        inserts = []
        for i, c in enumerate(claims):
            key = state_key(S.CLAIMED, c.path)
            item = conversion_item(
                c.request,
                first + i,
                S.CLAIMED,
                now,
                **{schema.STATE_INDEX_HASH_KEY: text(key)},
                **_claim_sets(c, now),
            )
            inserts.append(self._put_new(item, key, _decision(c, now)))
        done, refused = self._transact(inserts, now)
        held: dict[str, Item] = {}
        received: list[str] = []
        for cid, old in refused.items():
            if old is not None and text_of(old, "state") == S.RECEIVED.value:
                received.append(cid)
            elif old is not None:
                held[cid] = old
        return {w.conversion_id for w in done}, held, received

    def _ownerships(
        self, claims: Sequence[Claim], created: set[str], existing: dict[str, Item], now: float
    ) -> list[Ownership]:
        """One answer per claim, in order: the first claim of a conversion this call claimed gets the
        record it made, every other one the owner's record."""
        out: list[Ownership] = []
        given: set[str] = set()
        for c in claims:
            cid = c.request.conversion_id
            if cid in created and cid not in given:
                given.add(cid)
                self._remember(cid, c.path)
                out.append(Ownership(_claimed_record(c, now), True))
                continue
            held = existing.get(cid) or self._get_many([cid]).get(cid)
            if held is None:
                raise LedgerError(
                    f"ledger dynamodb://{self.table}: conversion {cid!r} vanished during a claim"
                )
            out.append(Ownership(self._records([held])[0], False))
        return out


def _decision(c: Claim, now: float) -> tuple[int, str, str]:
    """The per-minute decision total a claim adds to: (epoch minute, path, flag version)."""
    return (int(now // 60), c.path.value, c.flag_version or "")


def _claim_move(c: Claim, now: float) -> Move:
    """The move of a request from the intake to its owner, ``c.path``."""
    return Move(
        c.request.conversion_id,
        S.RECEIVED,
        S.CLAIMED,
        None,
        None,
        sets=_claim_sets(c, now),
        new_path=c.path,
        decision=_decision(c, now),
    )


def _claimed_record(c: Claim, now: float) -> ConversionRecord:
    """The record a successful claim leaves, built without reading it back."""
    return ConversionRecord(
        conversion_id=c.request.conversion_id,
        tenant_id=c.request.tenant_id,
        params=dict(c.request.params),
        state=S.CLAIMED,
        path=c.path,
        flag_version=c.flag_version,
        reason=c.reason,
        claimed_at=now,
        updated_at=now,
    )


def _claim_sets(c: Claim, now: float) -> dict[str, AttributeValue]:
    """The attributes a claim sets on a conversion's item."""
    sets: dict[str, AttributeValue] = {
        "path": text(c.path.value),
        "reason": text(c.reason),
        "claimed_at": number(now),
        "updated_at": number(now),
    }
    if c.flag_version is not None:
        sets["flag_version"] = text(c.flag_version)
    return sets
