"""Shadow runs in the SQLite ledger: a table of their own beside the conversions.

A shadow's row is linked to its conversion by ``conversion_id`` only; no statement here reads or
writes the conversions table, so a shadow cannot change the conversion it shadows. Every
transition is a compare-and-set on state (and fence), in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import fields, replace
from typing import Any, Protocol

from controller.core.ports import ShadowFinish
from controller.core.shadow import ShadowKind, ShadowRecord, ShadowState, ShadowVerdict

SHADOW_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    shadow_id TEXT NOT NULL UNIQUE,
    conversion_id TEXT NOT NULL,
    tenant_id INTEGER NOT NULL,
    params TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    flag_version TEXT,
    reason TEXT NOT NULL DEFAULT '',
    job_ref TEXT,
    intent TEXT,
    fence INTEGER NOT NULL DEFAULT 0,
    preemptions INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    verdict TEXT,
    detail TEXT NOT NULL DEFAULT '',
    created_at REAL,
    dispatched_at REAL,
    finished_at REAL,
    compared_at REAL,
    cleaned_at REAL,
    updated_at REAL,
    work_seconds REAL,
    work_started_at REAL,
    slot_at REAL
);
CREATE INDEX IF NOT EXISTS shadows_by_state ON shadows (state, seq);
CREATE INDEX IF NOT EXISTS shadows_by_tenant ON shadows (tenant_id, created_at);
"""

_COLUMNS = (
    "shadow_id, conversion_id, tenant_id, params, kind, state, flag_version, reason, job_ref, intent, "
    "fence, preemptions, output, verdict, detail, created_at, dispatched_at, finished_at, compared_at, "
    "cleaned_at, updated_at, work_seconds, work_started_at, slot_at"
)
# Columns added after the shadows table first shipped: a file made before them gets them when opened.
ADDED_SHADOW_COLUMNS = (("work_seconds", "REAL"), ("work_started_at", "REAL"), ("slot_at", "REAL"))


_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))
if tuple(f.name for f in fields(ShadowRecord)) != _NAMES:
    raise RuntimeError("the shadows columns must list ShadowRecord's fields in their order")


def _record(row: tuple[Any, ...]) -> ShadowRecord:
    values = dict(zip(_NAMES, row, strict=True))
    values["params"] = json.loads(values["params"])
    values["kind"] = ShadowKind(values["kind"])
    values["state"] = ShadowState(values["state"])
    values["verdict"] = ShadowVerdict(values["verdict"]) if values["verdict"] else None
    return ShadowRecord(**values)


class _Store(Protocol):
    """What the shadow statements need of the ledger they are part of."""

    def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def _each(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> list[bool]: ...


class SQLiteShadows:
    """The ``ShadowStore`` port, mixed into ``SQLiteLedger``."""

    def add_shadows(self: _Store, shadows: Sequence[ShadowRecord], now: float) -> list[str]:
        applied = self._each(
            "INSERT OR IGNORE INTO shadows (shadow_id, conversion_id, tenant_id, params, kind, state, "
            "flag_version, reason, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
            [
                (
                    s.shadow_id,
                    s.conversion_id,
                    s.tenant_id,
                    json.dumps(s.params, sort_keys=True, separators=(",", ":")),
                    s.kind.value,
                    s.flag_version,
                    s.reason,
                    now,
                    now,
                )
                for s in shadows
            ],
        )
        return [s.shadow_id for s, ok in zip(shadows, applied, strict=True) if ok]

    def shadows(
        self: _Store,
        states: Sequence[ShadowState],
        *,
        kind: ShadowKind | None = None,
        tenant_id: int | None = None,
        compared_before: float | None = None,
        limit: int = 1000,
    ) -> list[ShadowRecord]:
        where = [f"state IN ({', '.join('?' for _ in states)})"]
        args: list[Any] = [s.value for s in states]
        if kind is not None:
            where.append("kind = ?")
            args.append(kind.value)
        if tenant_id is not None:
            where.append("tenant_id = ?")
            args.append(tenant_id)
        if compared_before is not None:
            where.append("compared_at < ? AND cleaned_at IS NULL AND output IS NOT NULL")
            args.append(compared_before)
        rows = self._read(
            f"SELECT {_COLUMNS} FROM shadows WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", (*args, limit)
        )
        return [_record(r) for r in rows]

    def shadows_since(self: _Store, tenant_id: int, since: float) -> int:
        rows = self._read(
            "SELECT count(*) FROM shadows WHERE tenant_id = ? AND created_at >= ? AND kind = 'new'",
            (tenant_id, since),
        )
        return int(rows[0][0])

    def mark_shadows_dispatching(
        self: _Store, shadows: Sequence[ShadowRecord], intent: str, now: float
    ) -> list[ShadowRecord]:
        applied = self._each(
            "UPDATE shadows SET state = 'dispatching', intent = ?, fence = fence + 1, updated_at = ? "
            "WHERE shadow_id = ? AND state = 'pending' AND fence = ?",
            [(intent, now, s.shadow_id, s.fence) for s in shadows],
        )
        return [
            replace(s, state=ShadowState.DISPATCHING, intent=intent, fence=s.fence + 1, updated_at=now)
            for s, ok in zip(shadows, applied, strict=True)
            if ok
        ]

    def mark_shadows_dispatched(self: _Store, items: Sequence[tuple[str, int, str]], now: float) -> list[str]:
        applied = self._each(
            "UPDATE shadows SET state = 'dispatched', job_ref = ?, dispatched_at = ?, updated_at = ? "
            "WHERE shadow_id = ? AND state = 'dispatching' AND fence = ?",
            [(job_ref, now, now, sid, fence) for sid, fence, job_ref in items],
        )
        return [item[0] for item, ok in zip(items, applied, strict=True) if ok]

    def release_shadows(
        self: _Store, items: Sequence[tuple[str, int]], now: float, reason: str, *, preempted: bool = False
    ) -> int:
        applied = self._each(
            "UPDATE shadows SET state = 'pending', intent = NULL, job_ref = NULL, reason = ?, "
            "preemptions = preemptions + ?, updated_at = ? "
            "WHERE shadow_id = ? AND state IN ('dispatching', 'dispatched') AND fence = ?",
            [(reason, int(preempted), now, sid, fence) for sid, fence in items],
        )
        return sum(applied)

    def finish_shadows(self: _Store, finishes: Sequence[ShadowFinish], now: float) -> list[str]:
        for f in finishes:
            if not f.state.ran:
                raise ValueError(f"{f.state} is not how a shadow run ends")
        applied = self._each(
            "UPDATE shadows SET state = ?, output = ?, reason = ?, finished_at = ?, updated_at = ?, "
            "work_seconds = ?, work_started_at = ?, slot_at = ? "
            "WHERE shadow_id = ? AND state = 'dispatched' AND fence = ?",
            [
                (
                    f.state.value,
                    f.output,
                    f.reason,
                    now,
                    now,
                    f.work_seconds,
                    f.work_started_at,
                    f.slot_at,
                    f.shadow_id,
                    f.fence,
                )
                for f in finishes
            ],
        )
        return [f.shadow_id for f, ok in zip(finishes, applied, strict=True) if ok]

    def skip_shadows(self: _Store, shadow_ids: Sequence[str], reason: str, now: float) -> int:
        applied = self._each(
            "UPDATE shadows SET state = 'skipped', reason = ?, updated_at = ? "
            "WHERE shadow_id = ? AND state = 'pending'",
            [(reason, now, sid) for sid in shadow_ids],
        )
        return sum(applied)

    def record_comparison(
        self: _Store, shadow_id: str, verdict: ShadowVerdict, detail: str, note: str, now: float
    ) -> bool:
        with self._write() as db:
            cur = db.execute(
                "UPDATE shadows SET state = 'compared', verdict = ?, detail = ?, "
                "reason = CASE WHEN ? = '' THEN reason ELSE ? END, compared_at = ?, updated_at = ? "
                "WHERE shadow_id = ? AND state IN ('succeeded', 'failed')",
                (verdict.value, detail, note, note, now, now, shadow_id),
            )
            return cur.rowcount == 1

    def mark_cleaned(self: _Store, shadow_id: str, now: float) -> bool:
        with self._write() as db:
            cur = db.execute(
                "UPDATE shadows SET cleaned_at = ?, updated_at = ? "
                "WHERE shadow_id = ? AND cleaned_at IS NULL",
                (now, now, shadow_id),
            )
            return cur.rowcount == 1
