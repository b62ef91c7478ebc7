"""The ownership ledger on SQLite: the embedded default, safe for several processes on one file.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, so two processes racing for the same
conversion are serialised by SQLite's write lock and exactly one of them wins. The counters and
per-minute decision totals move in the same transaction as the rows they count, once per batch
(a claim of 20,000 conversions adds to three counters, not 40,000 times), so ``counts()`` and the
dashboard never scan the conversions table and a crash never leaves them apart from the rows.
Files written by an older version are upgraded when opened (``SCHEMA_VERSION``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from functools import lru_cache
from pathlib import Path as FsPath
from typing import Any

from controller.core import resend
from controller.core.domain import (
    ConversionRecord,
    ConversionRequest,
    ConversionState,
    Ownership,
    Path,
)
from controller.core.errors import LedgerError, NotFoundError
from controller.core.ports import (
    AcceptResult,
    Claim,
    Claimed,
    Counts,
    Dispatched,
    Finish,
    FinishedConversion,
    RouteGroups,
    Waiting,
)
from controller.core.requeue import REQUEUE_FIELDS, requeued
from controller.ledger.sqlite_shadows import ADDED_SHADOW_COLUMNS, SHADOW_SCHEMA, SQLiteShadows
from flags.snapshot import FlagSnapshot

S = ConversionState

# Schema 0 kept the counters with per-row triggers, about half the cost of each claim. Schema 1
# keeps them in the code, per batch; opening a file of schema 0 drops the triggers and keeps the
# counters and decision totals as they are (they were exact). Columns and tables added since
# (``work_seconds``, ``work_started_at``, ``slot_at``, the shadows table and its timings) are
# added to a file of either schema when it is opened.
SCHEMA_VERSION = 1
_OLD_TRIGGERS = ("count_insert", "count_update", "count_delete", "decision_on_claim", "decision_on_insert")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        conversion_id TEXT NOT NULL UNIQUE,
        tenant_id INTEGER NOT NULL,
        params TEXT NOT NULL,
        state TEXT NOT NULL,
        path TEXT,
        flag_version TEXT,
        reason TEXT NOT NULL DEFAULT '',
        job_ref TEXT,
        intent TEXT,
        fence INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at REAL,
        claimed_at REAL,
        dispatched_at REAL,
        finished_at REAL,
        updated_at REAL,
        work_seconds REAL,
        work_started_at REAL,
        slot_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS conversions_by_state ON conversions (state, path, seq)",
    # By tenant alone: each entry is (tenant_id, seq), so a tenant's history comes out in order, and
    # a change of state (every claim, dispatch and finish) leaves this index untouched. An index
    # that also held the state was rewritten at a random place on every transition, doubling a
    # claim's cost.
    "DROP INDEX IF EXISTS conversions_by_tenant",
    "CREATE INDEX IF NOT EXISTS conversions_by_tenant_seq ON conversions (tenant_id)",
    """CREATE TABLE IF NOT EXISTS counters (
        state TEXT NOT NULL,
        path TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (state, path)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS decisions_by_minute (
        minute INTEGER NOT NULL,
        path TEXT NOT NULL,
        flag_version TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (minute, path, flag_version)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
)

_ADD_TO_COUNTER = (
    "INSERT INTO counters (state, path, n) VALUES (?, ?, ?) "
    "ON CONFLICT (state, path) DO UPDATE SET n = n + excluded.n"
)
_ADD_TO_DECISIONS = (
    "INSERT INTO decisions_by_minute (minute, path, flag_version, n) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (minute, path, flag_version) DO UPDATE SET n = n + excluded.n"
)
# Where the conversions a batch moved are now; the batch's ids go in as one JSON array (CROSS JOIN
# keeps SQLite walking the array and probing the id index, never the table).
_MOVED = (
    "SELECT c.state, coalesce(c.path, '') FROM json_each(?) AS j "
    "CROSS JOIN conversions AS c ON c.conversion_id = j.value"
)

_COLUMNS = (
    "conversion_id, tenant_id, params, state, path, flag_version, reason, job_ref, intent, "
    "fence, attempts, received_at, claimed_at, dispatched_at, finished_at, updated_at, work_seconds, "
    "work_started_at, slot_at"
)
# Columns added after the first release: a ledger file made before them gets them when opened.
_ADDED_COLUMNS = (("work_seconds", "REAL"), ("work_started_at", "REAL"), ("slot_at", "REAL"))
_FLAG_KEY = "flag:last_known_good"


_STATES = {s.value: s for s in ConversionState}
_PATHS = {p.value: p for p in Path}

# ``_record`` passes the columns by position (a third cheaper than by keyword, and it runs for
# every row a cycle reads), so the column list must stay in the record's field order.
if tuple(f.name for f in fields(ConversionRecord)) != tuple(c.strip() for c in _COLUMNS.split(",")):
    raise RuntimeError("_COLUMNS must list ConversionRecord's fields in their order")


@lru_cache(maxsize=1024)
def _decoded_params(text: str) -> dict[str, str]:
    # Conversions of one batch mostly share their params: decode each text once. Never handed
    # out as it is: every record gets its own copy.
    decoded: dict[str, str] = json.loads(text)
    return decoded


def _record(row: tuple[Any, ...]) -> ConversionRecord:
    path = row[4]
    return ConversionRecord(
        row[0],
        row[1],
        dict(_decoded_params(row[2])),
        _STATES.get(row[3]) or ConversionState(row[3]),
        (_PATHS.get(path) or Path(path)) if path else None,
        *row[5:],
    )


# One encoder for every request: json.dumps with options builds a new one per call, which cost
# as much as the INSERT itself.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def _params(params: dict[str, str]) -> str:
    return _encode(params)


_PATH_VALUES = {p: p.value for p in Path}
_CLAIMED = S.CLAIMED
_DISPATCHING = S.DISPATCHING
_CLAIM_RECEIVED = (
    "UPDATE conversions SET state = 'claimed', path = ?, flag_version = ?, reason = ?, "
    "claimed_at = ?, updated_at = ? WHERE conversion_id = ? AND state = 'received'"
)

# Columns are named as the record's fields (checked against _COLUMNS above), so the core's list of
# what a requeue rewrites names them too.
_REQUEUE_SET = ", ".join(f"{name} = ?" for name in REQUEUE_FIELDS)


def _column(value: object) -> object:
    """A record field as its column holds it: states and paths by their words."""
    return value.value if isinstance(value, (ConversionState, Path)) else value


_INSERT_CLAIMED = (
    "INSERT OR IGNORE INTO conversions (conversion_id, tenant_id, params, state, path, flag_version, "
    "reason, received_at, claimed_at, updated_at) VALUES (?, ?, ?, 'claimed', ?, ?, ?, ?, ?, ?)"
)
_RECEIVED = (S.RECEIVED.value, "")


def _nothing(db: sqlite3.Connection) -> None:
    """A write that moves no counter."""


class _Undo(Exception):
    """Raised inside a write to roll it back on purpose."""


# Changes to the counters, by (state, path): what one write moved, added in its own transaction.
Tally = Counter[tuple[str, str]]


def _add_counts(db: sqlite3.Connection, tally: Tally) -> None:
    rows = [(state, path, n) for (state, path), n in tally.items() if n]
    if rows:
        db.executemany(_ADD_TO_COUNTER, rows)


def _add_decisions(db: sqlite3.Connection, now: float, decided: Counter[tuple[str, str]]) -> None:
    """Claims made at ``now`` by (path, flag version), to their minute (truncated, as SQLite's CAST)."""
    minute = int(now / 60)
    rows = [(minute, path, version, n) for (path, version), n in decided.items() if n]
    if rows:
        db.executemany(_ADD_TO_DECISIONS, rows)


def _moved(source: ConversionState, landed: Tally) -> Tally:
    """The counter changes of conversions that left ``source`` and are now as ``landed`` counts them."""
    tally: Tally = Counter()
    for (state, path), n in landed.items():
        tally[(source.value, path)] -= n
        tally[(state, path)] += n
    return tally


def _claimed(c: Claim, now: float) -> ConversionRecord:
    """The record a successful claim leaves, built without reading it back (fields in order)."""
    req = c.request
    return ConversionRecord(
        req.conversion_id,
        req.tenant_id,
        dict(req.params),
        _CLAIMED,
        c.path,
        c.flag_version,
        c.reason,
        None,  # job_ref
        None,  # intent
        0,  # fence
        0,  # attempts
        None,  # received_at
        now,  # claimed_at
        None,  # dispatched_at
        None,  # finished_at
        now,  # updated_at
    )


def _dispatching(r: ConversionRecord, intent: str, now: float) -> ConversionRecord:
    """``r`` as ``mark_dispatching`` leaves it (fields in order; ``dataclasses.replace`` is slow)."""
    return ConversionRecord(
        r.conversion_id,
        r.tenant_id,
        r.params,
        _DISPATCHING,
        r.path,
        r.flag_version,
        r.reason,
        r.job_ref,
        intent,
        r.fence + 1,
        r.attempts + 1,
        r.received_at,
        r.claimed_at,
        r.dispatched_at,
        r.finished_at,
        now,
        r.work_seconds,
        r.work_started_at,
        r.slot_at,
    )


class SQLiteLedger(SQLiteShadows):
    """The ledger port on one SQLite file in WAL mode; one connection per thread (and the shadow
    store, in a table of its own)."""

    def __init__(self, path: FsPath, *, busy_timeout_ms: int = 30_000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._schema_seen = -1  # PRAGMA schema_version when the schema was last found to be ours
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"ledger {path}: cannot create its directory ({exc.strerror})") from exc
        try:
            self._upgrade()
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {path}: cannot create the schema ({exc})") from exc

    def _upgrade(self) -> None:
        """Create the schema, or bring a file of an older one to ``SCHEMA_VERSION`` and the columns
        this version records, in one transaction."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"ledger {self.path}: written by a newer cutover (schema {version}; this one "
                    f"knows up to {SCHEMA_VERSION}); upgrade this one"
                )
            for statement in SCHEMA:
                db.execute(statement)
            # The shadows' schema is plain CREATE statements, no trigger bodies: ';' ends each one.
            for statement in SHADOW_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, added in (("conversions", _ADDED_COLUMNS), ("shadows", ADDED_SHADOW_COLUMNS)):
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in added:
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            # Also on a file already upgraded: an older version opened since re-created them.
            for trigger in _OLD_TRIGGERS:
                db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- connections -------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: cannot open ({exc})") from exc
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: cannot start a write ({exc})") from exc
        try:
            self._check_schema(db)
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise LedgerError(f"ledger {self.path}: commit failed ({exc})") from exc

    def _check_schema(self, db: sqlite3.Connection) -> None:
        """Refuse to write while the per-row counter triggers of schema 0 are back.

        An older version opening this file re-creates them; from then on they would count every
        change a second time. The schema cookie moves on any schema change, so the usual cost is
        one pragma per transaction.
        """
        (cookie,) = db.execute("PRAGMA schema_version").fetchone()
        if cookie == self._schema_seen:
            return
        names = ", ".join("?" * len(_OLD_TRIGGERS))
        back = db.execute(
            f"SELECT name FROM sqlite_master WHERE type = 'trigger' AND name IN ({names}) ORDER BY name",
            _OLD_TRIGGERS,
        ).fetchall()
        if back:
            raise LedgerError(
                f"ledger {self.path}: an older cutover opened this file and put back its counter "
                f"triggers ({', '.join(n for (n,) in back)}), which would count each change twice; "
                "stop every older process, then restart this one (it upgrades the file again)"
            )
        self._schema_seen = cookie

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._connection().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: read failed ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    def ping(self) -> None:
        self._read("SELECT 1")

    # -- intake and claims -------------------------------------------------------------------

    def accept(self, requests: Sequence[ConversionRequest], now: float) -> AcceptResult:
        resend.within(requests)
        sql = (
            "INSERT OR IGNORE INTO conversions "
            "(conversion_id, tenant_id, params, state, received_at, updated_at) "
            "VALUES (?, ?, ?, 'received', ?, ?)"
        )
        rows = [(req.conversion_id, req.tenant_id, _params(req.params), now, now) for req in requests]
        received = Counter({_RECEIVED: len(rows)})
        if not rows or self._all_apply(sql, rows, lambda db: _add_counts(db, received)):
            applied = [True] * len(rows)
        else:
            with self._write() as db:
                applied = [db.execute(sql, row).rowcount == 1 for row in rows]
                again = [req for req, new in zip(requests, applied, strict=True) if not new]
                # Compared inside the same transaction: a conflict rolls the whole batch back.
                resend.refuse_conflicts(self._known(db, again), again)
                _add_counts(db, Counter({_RECEIVED: sum(applied)}))
        accepted: list[str] = []
        duplicates: list[str] = []
        for req, new in zip(requests, applied, strict=True):
            (accepted if new else duplicates).append(req.conversion_id)
        return AcceptResult(accepted, duplicates)

    def _known(
        self, db: sqlite3.Connection, requests: Sequence[ConversionRequest]
    ) -> dict[str, ConversionRequest]:
        """What the ledger holds for the ids of ``requests``, read in the caller's transaction."""
        out: dict[str, ConversionRequest] = {}
        ids = sorted({r.conversion_id for r in requests})
        for start in range(0, len(ids), 500):  # under SQLite's limit of bound variables
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in db.execute(
                f"SELECT {_COLUMNS} FROM conversions WHERE conversion_id IN ({marks})", chunk
            ).fetchall():
                out[row[0]] = _record(row).request
        return out

    def unclaimed(self, limit: int) -> list[ConversionRecord]:
        # A received request has no path yet (intake and requeue leave it NULL); saying so lets
        # SQLite walk (state, path, seq) in order and stop at ``limit``, instead of sorting every
        # waiting request on each cycle of a burst.
        rows = self._read(
            f"SELECT {_COLUMNS} FROM conversions WHERE state = 'received' AND path IS NULL "
            "ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [_record(r) for r in rows]

    def waiting(self, limit: int) -> Waiting:
        rows = self._read(
            "SELECT conversion_id, tenant_id FROM conversions WHERE state = 'received' AND path IS NULL "
            "ORDER BY seq LIMIT ?",
            (limit,),
        )
        if not rows:
            return Waiting((), ())
        ids, tenants = zip(*rows, strict=True)
        return Waiting(ids, tenants)

    def claim_waiting(self, waiting: Waiting, routes: RouteGroups, now: float) -> Claimed:
        waiting.route_by_tenant(routes)  # refuses a batch some tenant has no single route for
        # The bind values a route's conversions share, made once per route and handed out per tenant.
        shared: dict[int, tuple[str, str | None, str, float, float]] = {}
        for route, tenants in routes:
            shared.update(
                dict.fromkeys(tenants, (_PATH_VALUES[route.path], route.flag_version, route.reason, now, now))
            )
        ids, tenant_ids = waiting.conversion_ids, waiting.tenant_ids
        rows = [
            (path, version, reason, at, at, cid)
            for cid, (path, version, reason, at, _) in zip(
                ids, map(shared.__getitem__, tenant_ids), strict=True
            )
        ]
        per_tenant = Counter(tenant_ids)
        per_route = [
            (route, sum(map(per_tenant.__getitem__, tenants & per_tenant.keys())))
            for route, tenants in routes
        ]

        def count(db: sqlite3.Connection) -> None:
            tally: Tally = Counter()
            decided: Counter[tuple[str, str]] = Counter()
            for route, n in per_route:
                tally[_RECEIVED] -= n
                tally[(S.CLAIMED.value, route.path.value)] += n
                decided[(route.path.value, route.flag_version or "")] += n
            _add_counts(db, tally)
            _add_decisions(db, now, decided)

        if self._all_apply(_CLAIM_RECEIVED, rows, count):
            per_path: Counter[Path] = Counter()
            for route, n in per_route:
                per_path[route.path] += n
            return Claimed(range(len(rows)), {p: n for p, n in per_path.items() if n})
        return self._claim_each(rows, now)

    def _claim_each(self, rows: Sequence[tuple[Any, ...]], now: float) -> Claimed:
        """``claim_waiting`` one conversion at a time, when some of the batch is owned already."""
        created: list[int] = []
        tally: Tally = Counter()
        decided: Counter[tuple[str, str]] = Counter()
        with self._write() as db:
            for i, row in enumerate(rows):
                if db.execute(_CLAIM_RECEIVED, row).rowcount == 1:
                    created.append(i)
                    path, version = row[0], row[1]
                    tally[_RECEIVED] -= 1
                    tally[(S.CLAIMED.value, path)] += 1
                    decided[(path, version or "")] += 1
            _add_counts(db, tally)
            _add_decisions(db, now, decided)
        per_path = {_PATHS[path]: n for (state, path), n in tally.items() if state == S.CLAIMED.value}
        return Claimed(created, per_path)

    def claim(self, claims: Sequence[Claim], now: float) -> list[Ownership]:
        if self._claim_all_received(claims, now):
            return [Ownership(_claimed(c, now), True) for c in claims]
        out: list[Ownership] = []
        with self._write() as db:
            tally: Tally = Counter()
            decided: Counter[tuple[str, str]] = Counter()
            for c in claims:
                req, path = c.request, c.path.value
                row = (path, c.flag_version, c.reason, now, now, req.conversion_id)
                if db.execute(_CLAIM_RECEIVED, row).rowcount == 1:
                    tally[_RECEIVED] -= 1
                elif (
                    db.execute(
                        _INSERT_CLAIMED,
                        (req.conversion_id, req.tenant_id, _params(req.params), *row[:3], now, now, now),
                    ).rowcount
                    != 1
                ):
                    held = db.execute(
                        f"SELECT {_COLUMNS} FROM conversions WHERE conversion_id = ?", (req.conversion_id,)
                    ).fetchone()
                    out.append(Ownership(_record(held), False))
                    continue
                tally[(S.CLAIMED.value, path)] += 1
                decided[(path, c.flag_version or "")] += 1
                out.append(Ownership(_claimed(c, now), True))
            _add_counts(db, tally)
            _add_decisions(db, now, decided)
        return out

    def _claim_all_received(self, claims: Sequence[Claim], now: float) -> bool:
        """Claim the whole batch in one statement when every request is still in the intake."""
        rows = [
            (_PATH_VALUES[c.path], c.flag_version, c.reason, now, now, c.request.conversion_id)
            for c in claims
        ]

        def count_all(db: sqlite3.Connection) -> None:
            tally: Tally = Counter()
            decided: Counter[tuple[str, str]] = Counter()
            for c in claims:
                tally[(S.CLAIMED.value, c.path.value)] += 1
                decided[(c.path.value, c.flag_version or "")] += 1
            tally[_RECEIVED] -= len(claims)
            _add_counts(db, tally)
            _add_decisions(db, now, decided)

        return self._all_apply(_CLAIM_RECEIVED, rows, count_all)

    def _all_apply(
        self, sql: str, rows: Sequence[tuple[Any, ...]], count: Callable[[sqlite3.Connection], None]
    ) -> bool:
        """Run ``sql`` for every row in one executemany, and keep it only if every run changed a row.

        Each write here is a compare-and-set on one conversion: it changes that row or none. In a
        cycle they almost always all apply, and one statement for the batch saves a round trip
        per conversion; the summed row count proves it, and ``count`` then moves the counters in
        the same transaction. If any did not apply (another writer got there first, or a
        conversion is in the batch twice), the transaction is rolled back and the caller goes one
        by one. A whole transaction rather than a savepoint: a savepoint journals every page it
        touches, which costs a third of the statement.
        """
        try:
            with self._write() as db:
                if db.executemany(sql, rows).rowcount != len(rows):
                    raise _Undo
                count(db)
        except _Undo:
            return False
        return True

    def _each(
        self,
        sql: str,
        rows: Sequence[tuple[Any, ...]],
        count: Callable[[sqlite3.Connection, Sequence[bool]], None] | None = None,
    ) -> list[bool]:
        """Run ``sql`` once per row in one transaction; whether each run changed its row. ``count``
        moves the counters by what changed, in the same transaction; rows of a table no counter
        follows (the shadows) need none."""
        if not rows:
            return []
        everything = [True] * len(rows)
        if self._all_apply(sql, rows, (lambda db: count(db, everything)) if count else _nothing):
            return everything
        with self._write() as db:
            applied = [db.execute(sql, row).rowcount == 1 for row in rows]
            if count:
                count(db, applied)
            return applied

    def _move_each(
        self, sql: str, rows: Sequence[tuple[Any, ...]], ids: Sequence[str], source: ConversionState
    ) -> list[bool]:
        """``_each`` for a transition out of ``source`` that keeps each conversion's path.

        Every transition changes the state, so a conversion moves at most once per call, and after
        the writes the batch's ids tell where what moved has landed.
        """

        def count(db: sqlite3.Connection, applied: Sequence[bool]) -> None:
            moved = [cid for cid, ok in zip(ids, applied, strict=True) if ok]
            if moved:
                landed: Tally = Counter(db.execute(_MOVED, (json.dumps(moved),)).fetchall())
                _add_counts(db, _moved(source, landed))

        return self._each(sql, rows, count)

    # -- dispatch ----------------------------------------------------------------------------

    def pending_dispatch(self, path: Path, limit: int) -> list[ConversionRecord]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM conversions WHERE state = 'claimed' AND path = ? ORDER BY seq LIMIT ?",
            (path.value, limit),
        )
        return [_record(r) for r in rows]

    def mark_dispatching(
        self, records: Sequence[ConversionRecord], intent: str, now: float
    ) -> list[ConversionRecord]:
        applied = self._move_each(
            "UPDATE conversions SET state = 'dispatching', intent = ?, fence = fence + 1, "
            "attempts = attempts + 1, updated_at = ? "
            "WHERE conversion_id = ? AND state = 'claimed' AND fence = ?",
            [(intent, now, r.conversion_id, r.fence) for r in records],
            [r.conversion_id for r in records],
            S.CLAIMED,
        )
        return [_dispatching(r, intent, now) for r, ok in zip(records, applied, strict=True) if ok]

    def mark_dispatched(self, items: Sequence[Dispatched], now: float) -> list[str]:
        applied = self._move_each(
            "UPDATE conversions SET state = 'dispatched', job_ref = ?, dispatched_at = ?, "
            "updated_at = ? WHERE conversion_id = ? AND state = 'dispatching' AND fence = ?",
            [(d.job_ref, now, now, d.conversion_id, d.fence) for d in items],
            [d.conversion_id for d in items],
            S.DISPATCHING,
        )
        return [d.conversion_id for d, ok in zip(items, applied, strict=True) if ok]

    def release(self, conversion_ids: Sequence[tuple[str, int]], now: float, reason: str) -> int:
        # Nothing was started, so the attempt does not count against the resubmits.
        applied = self._move_each(
            "UPDATE conversions SET state = 'claimed', intent = NULL, reason = ?, "
            "attempts = attempts - 1, updated_at = ? "
            "WHERE conversion_id = ? AND state = 'dispatching' AND fence = ?",
            [(reason, now, cid, fence) for cid, fence in conversion_ids],
            [cid for cid, _ in conversion_ids],
            S.DISPATCHING,
        )
        return sum(applied)

    def intents(self, older_than: float, limit: int) -> list[ConversionRecord]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM conversions WHERE state = 'dispatching' AND updated_at < ? "
            "ORDER BY seq LIMIT ?",
            (older_than, limit),
        )
        return [_record(r) for r in rows]

    def in_flight(self, path: Path, limit: int) -> list[ConversionRecord]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM conversions WHERE state = 'dispatched' AND path = ? "
            "ORDER BY seq LIMIT ?",
            (path.value, limit),
        )
        return [_record(r) for r in rows]

    # -- outcomes ----------------------------------------------------------------------------

    def mark_finished(self, finishes: Sequence[Finish], now: float) -> list[str]:
        for f in finishes:
            if not f.state.terminal:
                raise ValueError(f"{f.state} is not a terminal state")
        applied = self._move_each(
            "UPDATE conversions SET state = ?, reason = ?, finished_at = ?, updated_at = ?, "
            "work_seconds = ?, work_started_at = ?, slot_at = ? "
            "WHERE conversion_id = ? AND state = 'dispatched' AND fence = ?",
            [
                (
                    f.state.value,
                    f.reason,
                    now,
                    now,
                    f.work_seconds,
                    f.work_started_at,
                    f.slot_at,
                    f.conversion_id,
                    f.fence,
                )
                for f in finishes
            ],
            [f.conversion_id for f in finishes],
            S.DISPATCHED,
        )
        return [f.conversion_id for f, ok in zip(finishes, applied, strict=True) if ok]

    def resubmit(self, conversion_id: str, fence: int, reason: str, now: float) -> bool:
        with self._write() as db:
            moved = db.execute(
                "UPDATE conversions SET state = 'claimed', intent = NULL, job_ref = NULL, "
                "reason = ?, updated_at = ? "
                "WHERE conversion_id = ? AND state = 'dispatched' AND fence = ? RETURNING path",
                (reason, now, conversion_id, fence),
            ).fetchall()
            if moved:
                (path,) = moved[0]
                _add_counts(db, _moved(S.DISPATCHED, Counter({(S.CLAIMED.value, path or ""): 1})))
            return bool(moved)

    def requeue(self, conversion_id: str, now: float) -> ConversionRecord:
        with self._write() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM conversions WHERE conversion_id = ?", (conversion_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"conversion {conversion_id!r} is not in the ledger")
            record = _record(row)
            freed = requeued(record, now)
            db.execute(
                f"UPDATE conversions SET {_REQUEUE_SET} WHERE conversion_id = ? AND state = 'failed'",
                (*(_column(getattr(freed, name)) for name in REQUEUE_FIELDS), conversion_id),
            )
            failed = (S.FAILED.value, record.path.value if record.path else "")
            _add_counts(db, Counter({failed: -1, _RECEIVED: 1}))
        return freed

    # -- reads -------------------------------------------------------------------------------

    def get(self, conversion_id: str) -> ConversionRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM conversions WHERE conversion_id = ?", (conversion_id,))
        return _record(rows[0]) if rows else None

    def counts(self) -> Counts:
        by_state: dict[ConversionState, int] = {}
        by_path: dict[tuple[Path, ConversionState], int] = {}
        for state, path, n in self._read("SELECT state, path, n FROM counters WHERE n != 0"):
            st = ConversionState(state)
            by_state[st] = by_state.get(st, 0) + n
            if path:
                by_path[(Path(path), st)] = n
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
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            where.append("state = ?")
            args.append(state.value)
        if path is not None:
            where.append("path = ?")
            args.append(path.value)
        if tenant_id is not None:
            where.append("tenant_id = ?")
            args.append(tenant_id)
        if after is not None:
            try:
                seq = int(after)
            except ValueError as exc:
                raise ValueError(f"cursor {after!r} is not one this ledger gave out") from exc
            where.append("seq > ?")
            args.append(seq)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self._read(
            f"SELECT seq, {_COLUMNS} FROM conversions {clause} ORDER BY seq LIMIT ?", (*args, limit + 1)
        )
        records = [_record(r[1:]) for r in rows[:limit]]
        cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return records, cursor

    def decisions_since(self, since: float) -> list[tuple[int, Path, str, int]]:
        """Claims per minute (epoch minute), path and flag version since ``since``."""
        rows = self._read(
            "SELECT minute, path, flag_version, n FROM decisions_by_minute WHERE minute >= ? ORDER BY minute",
            (int(since // 60),),
        )
        return [(m, Path(p), v, n) for m, p, v, n in rows]

    def tenant_activity(self, since: float) -> dict[int, int]:
        """Conversions received per tenant since ``since`` (epoch seconds): the load each tenant brings."""
        rows = self._read(
            "SELECT tenant_id, count(*) FROM conversions WHERE received_at >= ? GROUP BY tenant_id", (since,)
        )
        return {int(t): int(n) for t, n in rows}

    def finished_since(self, since: float) -> list[FinishedConversion]:
        """Conversions that succeeded or failed at or after ``since``, for the rollout gates."""
        rows = self._read(
            "SELECT tenant_id, path, state, attempts, coalesce(claimed_at, finished_at), finished_at, "
            "max(0.0, finished_at - dispatched_at), work_seconds FROM conversions "
            "WHERE state IN ('succeeded', 'failed') AND path IS NOT NULL AND finished_at >= ?",
            (since,),
        )
        return [
            FinishedConversion(int(t), _PATHS[p], _STATES[st], int(a), c, f, s, w)
            for t, p, st, a, c, f, s, w in rows
        ]

    def by_tenant(self, tenant_id: int, limit: int = 1000) -> list[ConversionRecord]:
        """A tenant's conversions, newest first."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM conversions WHERE tenant_id = ? ORDER BY seq DESC LIMIT ?",
            (tenant_id, limit),
        )
        return [_record(r) for r in rows]

    def latest_on_path(self, path: Path) -> ConversionRecord | None:
        """The conversion owned by ``path`` that arrived last: one index walk per owned state."""
        per_state = (
            f"SELECT * FROM (SELECT seq, {_COLUMNS} FROM conversions WHERE state = ? AND path = ? "
            "ORDER BY seq DESC LIMIT 1)"
        )
        states = [s.value for s in ConversionState if s is not S.RECEIVED]
        sql = " UNION ALL ".join([per_state] * len(states)) + " ORDER BY seq DESC LIMIT 1"
        rows = self._read(sql, [arg for state in states for arg in (state, path.value)])
        return _record(rows[0][1:]) if rows else None

    def in_flight_by_tenant(self) -> dict[int, dict[Path, int]]:
        """Conversions owned and not finished, per tenant and path (walks the state index only)."""
        rows = self._read(
            "SELECT tenant_id, path, count(*) FROM conversions "
            "WHERE state IN ('claimed', 'dispatching', 'dispatched') GROUP BY tenant_id, path"
        )
        out: dict[int, dict[Path, int]] = {}
        for tenant_id, path, n in rows:
            if path:
                out.setdefault(tenant_id, {})[Path(path)] = n
        return out

    def recent(self, state: ConversionState, limit: int) -> list[ConversionRecord]:
        """The latest conversions in ``state``, newest first (one index walk per path)."""
        per_path = (
            f"SELECT * FROM (SELECT seq, {_COLUMNS} FROM conversions WHERE state = ? AND path = ? "
            "ORDER BY seq DESC LIMIT ?)"
        )
        rows = self._read(
            f"{per_path} UNION ALL {per_path} ORDER BY seq DESC LIMIT ?",
            (state.value, Path.LEGACY.value, limit, state.value, Path.NEW.value, limit, limit),
        )
        return [_record(r[1:]) for r in rows]

    # -- flag, leases ------------------------------------------------------------------------

    def save_flag(self, snapshot: FlagSnapshot) -> None:
        value = snapshot.to_json()
        with self._write() as db:
            db.execute(
                "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (_FLAG_KEY, value, snapshot.fetched_at),
            )

    def load_flag(self) -> FlagSnapshot | None:
        rows = self._read("SELECT value FROM kv WHERE key = ?", (_FLAG_KEY,))
        if not rows:
            return None
        return FlagSnapshot.from_json(rows[0][0])

    def get_value(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM kv WHERE key = ?", ("value:" + key,))
        return str(rows[0][0]) if rows else None

    def put_value(self, key: str, value: str, now: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                ("value:" + key, value, now),
            )

    def try_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
                (name, holder, now + ttl, now),
            )
            return cur.rowcount == 1

    def end_lease(self, name: str, holder: str) -> bool:
        with self._write() as db:
            cur = db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
            return cur.rowcount == 1
