"""How the cycle claims its intake: through the ledger's batch port when it has one, else through
``OwnershipStore`` with a record per conversion. Only adapts between the two ports; routing is
decided by the cycle and ownership by the ledger, never here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from controller.core.domain import ConversionRequest, Path
from controller.core.ports import BatchClaims, Claim, Claimed, OwnershipStore, RouteGroups, Waiting


def batch_claims(store: OwnershipStore) -> BatchClaims:
    """The ledger itself when it claims by columns, else an adapter over its record-based port."""
    if isinstance(store, BatchClaims):
        return store
    return ClaimsByRecord(store)


@dataclass(frozen=True, slots=True)
class _WaitingRequests(Waiting):
    """``Waiting`` that keeps the requests it was read from: ``OwnershipStore.claim`` takes them."""

    requests: Sequence[ConversionRequest]


class ClaimsByRecord:
    """``BatchClaims`` over ``OwnershipStore.unclaimed`` and ``.claim``, for a ledger that has no
    batch port of its own (the DynamoDB ledger): the same answers, a record per conversion."""

    def __init__(self, store: OwnershipStore) -> None:
        self._store = store

    def waiting(self, limit: int) -> Waiting:
        records = self._store.unclaimed(limit)
        return _WaitingRequests(
            tuple(r.conversion_id for r in records),
            tuple(r.tenant_id for r in records),
            tuple(r.request for r in records),
        )

    def claim_waiting(self, waiting: Waiting, routes: RouteGroups, now: float) -> Claimed:
        if not isinstance(waiting, _WaitingRequests):
            raise TypeError("claim_waiting takes what this adapter's waiting() returned")
        by_tenant = waiting.route_by_tenant(routes)
        claims = [
            Claim(req, route.path, route.flag_version, route.reason)
            for req, route in zip(
                waiting.requests, map(by_tenant.__getitem__, waiting.tenant_ids), strict=True
            )
        ]
        owned = self._store.claim(claims, now)
        created = [i for i, o in enumerate(owned) if o.created]
        per_path: Counter[Path] = Counter(claims[i].path for i in created)
        return Claimed(created, dict(per_path))
