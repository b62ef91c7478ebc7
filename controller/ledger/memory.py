"""The ownership ledger in memory: for simulations and tests, never for a controller that runs work.

It keeps nothing across processes and nothing after the object goes, so it protects no promise
of ownership. It implements the whole ``Ledger`` port with the same compare-and-set transitions
as the SQLite ledger and passes the same contract suite; what it adds is speed: reading the
conversions in one state costs what it returns, which a simulation of thousands of cycles needs.
One thread at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import islice

from controller.core import resend
from controller.core.domain import ConversionRecord, ConversionRequest, ConversionState, Ownership, Path
from controller.core.errors import NotFoundError
from controller.core.ports import AcceptResult, Claim, Counts, Dispatched, Finish, FinishedConversion
from controller.core.requeue import requeued
from controller.ledger.evidence import finished
from flags.snapshot import FlagSnapshot

S = ConversionState


class _Index:
    """The conversions in one (state, path), in receipt order, as ``ORDER BY seq`` would give them."""

    __slots__ = ("ids", "last", "ordered")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.last = -1
        self.ordered = True

    def add(self, conversion_id: str, seq: int) -> None:
        self.ids[conversion_id] = seq
        if seq < self.last:
            self.ordered = False  # sorted again at the next read, once
        else:
            self.last = seq

    def first(self, limit: int) -> Iterator[str]:
        if not self.ordered:
            self.ids = dict(sorted(self.ids.items(), key=lambda item: item[1]))
            self.ordered = True
        return islice(self.ids, limit)


class MemoryLedger:
    """The ledger port in one process's memory."""

    def __init__(self) -> None:
        self._records: dict[str, ConversionRecord] = {}
        self._seq: dict[str, int] = {}
        self._order: list[str] = []  # conversion ids by receipt number
        self._index: dict[tuple[ConversionState, Path | None], _Index] = {}
        self._counts: dict[tuple[ConversionState, Path | None], int] = {}
        self._tenants: dict[int, list[str]] = {}
        self._decisions: dict[tuple[int, Path, str], int] = {}
        self._values: dict[str, str] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._flag: FlagSnapshot | None = None

    # -- bookkeeping ---------------------------------------------------------------------------

    def _bucket(self, state: ConversionState, path: Path | None) -> _Index:
        index = self._index.get((state, path))
        if index is None:
            index = self._index[(state, path)] = _Index()
        return index

    def _put(self, new: ConversionRecord, old: ConversionRecord | None) -> None:
        cid = new.conversion_id
        if old is not None:
            del self._bucket(old.state, old.path).ids[cid]
            self._counts[(old.state, old.path)] -= 1
        self._records[cid] = new
        self._bucket(new.state, new.path).add(cid, self._seq[cid])
        self._counts[(new.state, new.path)] = self._counts.get((new.state, new.path), 0) + 1

    def _new(self, request: ConversionRequest, now: float) -> ConversionRecord:
        cid = request.conversion_id
        self._seq[cid] = len(self._order)
        self._order.append(cid)
        self._tenants.setdefault(request.tenant_id, []).append(cid)
        return ConversionRecord(
            cid, request.tenant_id, dict(request.params), S.RECEIVED, received_at=now, updated_at=now
        )

    def _current(
        self, conversion_id: str, state: ConversionState, fence: int | None
    ) -> ConversionRecord | None:
        record = self._records.get(conversion_id)
        if record is None or record.state is not state or (fence is not None and record.fence != fence):
            return None
        return record

    def _listed(self, state: ConversionState, path: Path | None, limit: int) -> list[ConversionRecord]:
        index = self._index.get((state, path))
        if index is None:
            return []
        records = self._records
        return [records[cid] for cid in index.first(limit)]

    def close(self) -> None:
        return None

    def ping(self) -> None:
        return None

    # -- intake and claims -----------------------------------------------------------------------

    def accept(self, requests: Sequence[ConversionRequest], now: float) -> AcceptResult:
        resend.within(requests)
        # Checked before anything is recorded: a conflict leaves the whole batch out.
        again = [req for req in requests if req.conversion_id in self._records]
        resend.refuse_conflicts(
            {r.conversion_id: self._records[r.conversion_id].request for r in again}, again
        )
        out = AcceptResult()
        for req in requests:
            if req.conversion_id in self._records:
                out.duplicates.append(req.conversion_id)
                continue
            self._put(self._new(req, now), None)
            out.accepted.append(req.conversion_id)
        return out

    def unclaimed(self, limit: int) -> list[ConversionRecord]:
        return self._listed(S.RECEIVED, None, limit)

    def claim(self, claims: Sequence[Claim], now: float) -> list[Ownership]:
        out: list[Ownership] = []
        for c in claims:
            old = self._records.get(c.request.conversion_id)
            if old is None:
                old = self._new(c.request, now)
                self._put(old, None)
            if old.state is not S.RECEIVED:
                out.append(Ownership(old, False))
                continue
            new = replace(
                old,
                state=S.CLAIMED,
                path=c.path,
                flag_version=c.flag_version,
                reason=c.reason,
                claimed_at=now,
                updated_at=now,
            )
            self._put(new, old)
            key = (int(now // 60), c.path, c.flag_version or "")
            self._decisions[key] = self._decisions.get(key, 0) + 1
            out.append(Ownership(new, True))
        return out

    # -- dispatch ------------------------------------------------------------------------------

    def pending_dispatch(self, path: Path, limit: int) -> list[ConversionRecord]:
        return self._listed(S.CLAIMED, path, limit)

    def mark_dispatching(
        self, records: Sequence[ConversionRecord], intent: str, now: float
    ) -> list[ConversionRecord]:
        taken = []
        for r in records:
            old = self._current(r.conversion_id, S.CLAIMED, r.fence)
            if old is None:
                continue
            new = replace(
                old,
                state=S.DISPATCHING,
                intent=intent,
                fence=old.fence + 1,
                attempts=old.attempts + 1,
                updated_at=now,
            )
            self._put(new, old)
            taken.append(new)
        return taken

    def mark_dispatched(self, items: Sequence[Dispatched], now: float) -> list[str]:
        done = []
        for d in items:
            old = self._current(d.conversion_id, S.DISPATCHING, d.fence)
            if old is None:
                continue
            self._put(
                replace(old, state=S.DISPATCHED, job_ref=d.job_ref, dispatched_at=now, updated_at=now), old
            )
            done.append(d.conversion_id)
        return done

    def release(self, conversion_ids: Sequence[tuple[str, int]], now: float, reason: str) -> int:
        released = 0
        for cid, fence in conversion_ids:
            old = self._current(cid, S.DISPATCHING, fence)
            if old is None:
                continue
            # Nothing was started, so the attempt does not count against the resubmits.
            new = replace(
                old, state=S.CLAIMED, intent=None, reason=reason, attempts=old.attempts - 1, updated_at=now
            )
            self._put(new, old)
            released += 1
        return released

    def intents(self, older_than: float, limit: int) -> list[ConversionRecord]:
        found = [
            r
            for path in Path
            for r in self._listed(S.DISPATCHING, path, len(self._records))
            if (r.updated_at or 0.0) < older_than
        ]
        return sorted(found, key=lambda r: self._seq[r.conversion_id])[:limit]

    def in_flight(self, path: Path, limit: int) -> list[ConversionRecord]:
        return self._listed(S.DISPATCHED, path, limit)

    # -- outcomes ------------------------------------------------------------------------------

    def mark_finished(self, finishes: Sequence[Finish], now: float) -> list[str]:
        for f in finishes:
            if not f.state.terminal:
                raise ValueError(f"{f.state} is not a terminal state")
        done = []
        for f in finishes:
            old = self._current(f.conversion_id, S.DISPATCHED, f.fence)
            if old is None:
                continue
            new = replace(
                old,
                state=f.state,
                reason=f.reason,
                finished_at=now,
                updated_at=now,
                work_seconds=f.work_seconds,
                work_started_at=f.work_started_at,
                slot_at=f.slot_at,
            )
            self._put(new, old)
            done.append(f.conversion_id)
        return done

    def resubmit(self, conversion_id: str, fence: int, reason: str, now: float) -> bool:
        old = self._current(conversion_id, S.DISPATCHED, fence)
        if old is None:
            return False
        new = replace(old, state=S.CLAIMED, intent=None, job_ref=None, reason=reason, updated_at=now)
        self._put(new, old)
        return True

    def requeue(self, conversion_id: str, now: float) -> ConversionRecord:
        old = self._records.get(conversion_id)
        if old is None:
            raise NotFoundError(f"conversion {conversion_id!r} is not in the ledger")
        new = requeued(old, now)
        self._put(new, old)
        return new

    # -- reads ---------------------------------------------------------------------------------

    def get(self, conversion_id: str) -> ConversionRecord | None:
        return self._records.get(conversion_id)

    def counts(self) -> Counts:
        by_state: dict[ConversionState, int] = {}
        by_path: dict[tuple[Path, ConversionState], int] = {}
        for (state, path), n in self._counts.items():
            if n:
                by_state[state] = by_state.get(state, 0) + n
                if path is not None:
                    by_path[(path, state)] = n
        return Counts(by_state, by_path)

    def query(
        self,
        *,
        state: ConversionState | None = None,
        path: Path | None = None,
        tenant_id: int | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[ConversionRecord], str | None]:
        start = 0
        if after is not None:
            try:
                start = int(after) + 1
            except ValueError as exc:
                raise ValueError(f"cursor {after!r} is not one this ledger gave out") from exc
        found: list[tuple[int, ConversionRecord]] = []
        for seq in range(start, len(self._order)):
            r = self._records[self._order[seq]]
            if (
                (state is None or r.state is state)
                and (path is None or r.path is path)
                and (tenant_id is None or r.tenant_id == tenant_id)
            ):
                found.append((seq, r))
                if len(found) > limit:
                    break
        cursor = str(found[limit - 1][0]) if len(found) > limit else None
        return [r for _, r in found[:limit]], cursor

    def by_tenant(self, tenant_id: int, limit: int = 1000) -> list[ConversionRecord]:
        ids = self._tenants.get(tenant_id, [])
        return [self._records[cid] for cid in reversed(ids[-limit:])] if limit > 0 else []

    def finished_since(self, since: float) -> list[FinishedConversion]:
        out: list[FinishedConversion] = []
        for state in (S.SUCCEEDED, S.FAILED):
            for path in Path:
                for record in self._listed(state, path, len(self._order)):
                    row = finished(record)
                    if row is not None and row.finished_at >= since:
                        out.append(row)
        return out

    def latest_on_path(self, path: Path) -> ConversionRecord | None:
        """The conversion owned by ``path`` that arrived last."""
        for cid in reversed(self._order):
            if self._records[cid].path is path:
                return self._records[cid]
        return None

    def decisions_since(self, since: float) -> list[tuple[int, Path, str, int]]:
        first = int(since // 60)
        return sorted((m, p, v, n) for (m, p, v), n in self._decisions.items() if m >= first and n)

    def tenant_activity(self, since: float) -> dict[int, int]:
        out: dict[int, int] = {}
        for r in self._records.values():
            if r.received_at is not None and r.received_at >= since:
                out[r.tenant_id] = out.get(r.tenant_id, 0) + 1
        return out

    # -- flag, values, leases --------------------------------------------------------------------

    def save_flag(self, snapshot: FlagSnapshot) -> None:
        self._flag = snapshot

    def load_flag(self) -> FlagSnapshot | None:
        return self._flag

    def get_value(self, key: str) -> str | None:
        return self._values.get(key)

    def put_value(self, key: str, value: str, now: float) -> None:
        self._values[key] = value

    def try_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        held = self._leases.get(name)
        if held is not None and held[0] != holder and held[1] >= now:
            return False
        self._leases[name] = (holder, now + ttl)
        return True

    def end_lease(self, name: str, holder: str) -> bool:
        held = self._leases.get(name)
        if held is None or held[0] != holder:
            return False
        del self._leases[name]
        return True

    def __repr__(self) -> str:
        return f"MemoryLedger({len(self._records)} conversions)"
