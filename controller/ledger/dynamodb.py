"""The ownership ledger on DynamoDB, shared by every controller replica of a deployment.

Every transition is a conditional write on the conversion's state, fence and path, so two
replicas racing for the same conversion cannot both win. Counters and per-minute decision totals
move in the same ``TransactWriteItems`` as the transition they count, so ``counts()`` and the
dashboard never scan; state queries go through the ``by_state`` index and tenant queries through
``by_tenant`` (see ``controller.ledger.dynamodb_schema``, which Terraform reads too). This module only
stores; it never decides who should own what.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from controller.core.domain import ConversionRecord, ConversionRequest, ConversionState, Ownership, Path
from controller.core.errors import ConflictError, LedgerError, NotFoundError
from controller.core.ports import AcceptResult, Claim, Counts, Dispatched, Finish
from controller.ledger import dynamodb_schema as schema
from controller.plumbing.aws import Retrier, describe, error_code, transient
from flags.snapshot import FlagSnapshot

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.literals import ScalarAttributeTypeType
    from mypy_boto3_dynamodb.type_defs import AttributeDefinitionTypeDef, TransactWriteItemTypeDef

S = ConversionState
AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

COUNTER_SHARDS = 4  # counter items per (state, path): concurrent transactions rarely meet on one
TRANSACTION_ACTIONS = 100  # TransactWriteItems' documented maximum
_CONVERSIONS_PER_TRANSACTION = 90  # the rest of the 100 is left for counter and decision items
_BATCH_GET_KEYS = 100  # BatchGetItem's documented maximum
_MAX_ROUNDS = 12  # transaction rounds before a contended write gives up (each round backs off)
_PATH_CACHE_LIMIT = 200_000

_SEQ_KEY = "meta#seq"
_FLAG_KEY = "flag#lkg"
_DECISIONS = "decisions"
_CONVERSION_STATE_KEYS = [f"{S.RECEIVED.value}#-"] + [
    f"{state.value}#{path.value}" for state in S if state is not S.RECEIVED for path in Path
]


def _s(value: str) -> AttributeValue:
    return {"S": value}


def _n(value: float) -> AttributeValue:
    return {"N": str(value) if isinstance(value, int) else repr(float(value))}


def _num(item: Item, name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value is not None else None


def _str(item: Item, name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value is not None else None


def _key(conversion_id: str) -> Item:
    return {schema.HASH_KEY: _s(f"conv#{conversion_id}")}


def state_key(state: ConversionState, path: Path | None) -> str:
    """The ``by_state`` partition a conversion in ``state`` on ``path`` sits in."""
    return f"{state.value}#{path.value if path is not None else '-'}"


def _record(item: Item) -> ConversionRecord:
    path = _str(item, "path")
    return ConversionRecord(
        conversion_id=str(item["conversion_id"]["S"]),
        tenant_id=int(item["tenant_id"]["N"]),
        params=json.loads(item["params"]["S"]),
        state=ConversionState(item["state"]["S"]),
        path=Path(path) if path else None,
        flag_version=_str(item, "flag_version"),
        reason=_str(item, "reason") or "",
        job_ref=_str(item, "job_ref"),
        intent=_str(item, "intent"),
        fence=int(item.get("fence", {"N": "0"})["N"]),
        attempts=int(item.get("attempts", {"N": "0"})["N"]),
        received_at=_num(item, "received_at"),
        claimed_at=_num(item, "claimed_at"),
        dispatched_at=_num(item, "dispatched_at"),
        finished_at=_num(item, "finished_at"),
        updated_at=_num(item, "updated_at"),
        job_started_at=_num(item, "job_started_at"),
        job_finished_at=_num(item, "job_finished_at"),
    )


def _job_times(f: Finish) -> dict[str, AttributeValue]:
    """The attributes keeping the job's own timing of a finished attempt, when it gave one."""
    out: dict[str, AttributeValue] = {}
    if f.job_started_at is not None:
        out["job_started_at"] = _n(f.job_started_at)
    if f.job_finished_at is not None:
        out["job_finished_at"] = _n(f.job_finished_at)
    return out


def _seq(item: Item) -> int:
    return int(item[schema.STATE_INDEX_RANGE_KEY]["N"])


def _params(params: Mapping[str, str]) -> str:
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class _Write:
    """One conversion's conditional write inside a transaction, and how it moves the counters."""

    conversion_id: str
    action: dict[str, Any]
    leaves: str | None = None  # the by_state partition it leaves (a counter goes down)
    enters: str | None = None  # the partition it enters (a counter goes up)
    decision: tuple[int, str, str] | None = None  # (minute, path, flag version) of a new claim


@dataclass(slots=True)
class _Move:
    """A transition to apply: from one state (and fence) to another, on the path the record is on."""

    conversion_id: str
    from_state: ConversionState
    to_state: ConversionState
    fence: int | None
    path: Path | None  # the path the record is believed to be on (checked in the condition)
    sets: dict[str, AttributeValue] = field(default_factory=dict)
    removes: tuple[str, ...] = ()
    increments: tuple[str, ...] = ()
    decrements: tuple[str, ...] = ()
    new_path: Path | None = None  # the path the move puts the record on (a claim), else unchanged
    to_path_none: bool = False  # the move drops the path (an operator's requeue)
    decision: tuple[int, str, str] | None = None  # (minute, path, flag version) of a new claim


class DynamoDBLedger:
    """The ledger port on one DynamoDB table (``CUTOVER_LEDGER=dynamodb://TABLE``)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        retention_seconds: float = 30 * 86400,
        retrier: Retrier | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.retention_seconds = retention_seconds
        self._retrier = retrier or Retrier()
        self._rng = rng or random.Random()  # noqa: S311 - spreads writes over counter shards, not secrets
        self._paths: dict[str, Path | None] = {}
        self._lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise LedgerError(f"ledger dynamodb://{self.table}: {what} failed ({describe(exc)})") from exc

    def _call(self, fn: Callable[[], Any]) -> Any:
        return self._retrier.call(fn, retry_if=transient)

    def _remember(self, conversion_id: str, path: Path | None) -> None:
        with self._lock:
            if len(self._paths) >= _PATH_CACHE_LIMIT:
                self._paths.clear()
            self._paths[conversion_id] = path

    def _records(self, items: Sequence[Item]) -> list[ConversionRecord]:
        out = [_record(i) for i in items]
        for r in out:
            self._remember(r.conversion_id, r.path)
        return out

    def close(self) -> None:
        """Close the DynamoDB client."""
        self.client.close()

    def ping(self) -> None:
        """Raise ``LedgerError`` unless the table answers (one small GetItem)."""
        with self._errors("ping"):
            self._call(
                lambda: self.client.get_item(
                    TableName=self.table, Key={schema.HASH_KEY: _s(_SEQ_KEY)}, ProjectionExpression="pk"
                )
            )

    # -- the transaction engine --------------------------------------------------------------

    def _counter_actions(self, writes: Sequence[_Write]) -> list[dict[str, Any]]:
        deltas: dict[str, int] = {}
        decisions: dict[tuple[int, str, str], int] = {}
        for w in writes:
            if w.leaves is not None:
                deltas[w.leaves] = deltas.get(w.leaves, 0) - 1
            if w.enters is not None:
                deltas[w.enters] = deltas.get(w.enters, 0) + 1
            if w.decision is not None:
                decisions[w.decision] = decisions.get(w.decision, 0) + 1
        shard = self._rng.randrange(COUNTER_SHARDS)
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {schema.HASH_KEY: _s(f"counter#{key}#{shard}")},
                    "UpdateExpression": "ADD #n :d",
                    "ExpressionAttributeNames": {"#n": "n"},
                    "ExpressionAttributeValues": {":d": _n(delta)},
                }
            }
            for key, delta in sorted(deltas.items())
            if delta != 0
        ]
        by_minute: dict[int, dict[str, int]] = {}
        for (minute, path, version), n in decisions.items():
            by_minute.setdefault(minute, {})[f"d|{path}|{version}"] = n
        for minute, counts in sorted(by_minute.items()):
            names = {"#sk": schema.STATE_INDEX_HASH_KEY, "#sq": schema.STATE_INDEX_RANGE_KEY}
            names["#ttl"] = schema.TTL_ATTRIBUTE
            values: dict[str, AttributeValue] = {
                ":sk": _s(_DECISIONS),
                ":m": _n(minute),
                ":exp": _n(int(minute * 60 + self.retention_seconds)),
            }
            adds = []
            for i, (attr, n) in enumerate(sorted(counts.items())):
                names[f"#d{i}"] = attr
                values[f":c{i}"] = _n(n)
                adds.append(f"#d{i} :c{i}")
            actions.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {schema.HASH_KEY: _s(f"{_DECISIONS}#{minute}#{shard}")},
                        "UpdateExpression": "SET #sk = :sk, #sq = :m, #ttl = :exp ADD " + ", ".join(adds),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        return actions

    def _transact(self, writes: Sequence[_Write], now: float) -> tuple[list[_Write], dict[str, Item | None]]:
        """Apply ``writes`` in transactions; returns those applied and, for each refused by its
        condition, the item as it stood (None when it does not exist)."""
        done: list[_Write] = []
        refused: dict[str, Item | None] = {}
        pending = list(writes)
        rounds = 0
        while pending:
            chunk = pending[:_CONVERSIONS_PER_TRANSACTION]
            actions = [w.action for w in chunk] + self._counter_actions(chunk)
            token = str(uuid.uuid4())  # a retried call after an unknown outcome is applied once
            try:
                self._retrier.call(
                    partial(
                        self.client.transact_write_items,
                        TransactItems=cast("list[TransactWriteItemTypeDef]", actions),
                        ClientRequestToken=token,
                    ),
                    retry_if=lambda e: transient(e) or error_code(e) == "TransactionInProgressException",
                )
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                response = cast(dict[str, Any], exc.response)
                reasons: list[dict[str, Any]] = list(response.get("CancellationReasons", []))
                again: list[_Write] = []
                for i, w in enumerate(chunk):
                    reason = reasons[i] if i < len(reasons) else {}
                    if reason.get("Code") == "ConditionalCheckFailed":
                        refused[w.conversion_id] = reason.get("Item")
                    else:
                        again.append(w)
                codes = {str(r.get("Code", "None")) for r in reasons} - {
                    "None",
                    "ConditionalCheckFailed",
                    "TransactionConflict",
                    "ThrottlingError",
                    "ProvisionedThroughputExceeded",
                }
                if codes:
                    raise LedgerError(
                        f"ledger dynamodb://{self.table}: transaction refused ({', '.join(sorted(codes))})"
                    ) from exc
                if len(again) == len(chunk):
                    # Nothing was refused on its own merits: a conflict with another writer.
                    rounds += 1
                    if rounds >= _MAX_ROUNDS:
                        raise LedgerError(
                            f"ledger dynamodb://{self.table}: writes kept conflicting with other writers"
                        ) from exc
                    self._retrier.sleep(self._retrier.backoff.delay(min(rounds, 6), self._retrier.rng))
                pending = again + pending[len(chunk) :]
                continue
            done.extend(chunk)
            pending = pending[len(chunk) :]
        return done, refused

    def _update(self, move: _Move, path: Path | None) -> _Write:
        names = {"#state": "state", "#sk": schema.STATE_INDEX_HASH_KEY}
        values: dict[str, AttributeValue] = {":from": _s(move.from_state.value)}
        condition = "#state = :from"
        if move.fence is not None:
            condition += " AND fence = :fence"
            values[":fence"] = _n(move.fence)
        if path is not None:
            names["#path"] = "path"
            condition += " AND #path = :path"
            values[":path"] = _s(path.value)
        to_path = None if move.to_path_none else (move.new_path or path)
        sets = {"state": _s(move.to_state.value), **move.sets}
        parts = ["#sk = :sk"]
        values[":sk"] = _s(state_key(move.to_state, to_path))
        for i, (attr, value) in enumerate(sets.items()):
            names[f"#s{i}"] = attr
            values[f":s{i}"] = value
            parts.append(f"#s{i} = :s{i}")
        for i, attr in enumerate(move.increments):
            names[f"#i{i}"] = attr
            values[":one"] = _n(1)
            parts.append(f"#i{i} = #i{i} + :one")
        for i, attr in enumerate(move.decrements):
            names[f"#d{i}"] = attr
            values[":one"] = _n(1)
            parts.append(f"#d{i} = #d{i} - :one")
        expression = "SET " + ", ".join(parts)
        if move.removes:
            for i, attr in enumerate(move.removes):
                names[f"#r{i}"] = attr
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(move.removes)))
        return _Write(
            conversion_id=move.conversion_id,
            action={
                "Update": {
                    "TableName": self.table,
                    "Key": _key(move.conversion_id),
                    "UpdateExpression": expression,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            leaves=state_key(move.from_state, path),
            enters=state_key(move.to_state, to_path),
            decision=move.decision,
        )

    def _known_paths(self, conversion_ids: Sequence[str]) -> dict[str, Path | None]:
        with self._lock:
            known = {c: self._paths[c] for c in conversion_ids if c in self._paths}
        missing = [c for c in conversion_ids if c not in known]
        for i in range(0, len(missing), _BATCH_GET_KEYS):
            for item in self._batch_get(
                [_key(c) for c in missing[i : i + _BATCH_GET_KEYS]], "conversion_id, #p"
            ):
                path = _str(item, "path")
                cid = str(item["conversion_id"]["S"])
                known[cid] = Path(path) if path else None
                self._remember(cid, known[cid])
        return known

    def _batch_get(self, keys: list[Item], projection: str | None = None) -> list[Item]:
        out: list[Item] = []
        request: dict[str, Any] = {"Keys": keys, "ConsistentRead": True}
        if projection is not None:
            request["ProjectionExpression"] = projection
            request["ExpressionAttributeNames"] = {"#p": "path"}
        pending: dict[str, Any] = {self.table: request}
        rounds = 0
        while pending:
            answer = self._call(partial(self.client.batch_get_item, RequestItems=pending))
            out.extend(answer.get("Responses", {}).get(self.table, []))
            pending = dict(answer.get("UnprocessedKeys") or {})
            if pending:
                rounds += 1
                if rounds >= _MAX_ROUNDS:
                    raise LedgerError(f"ledger dynamodb://{self.table}: reads kept being throttled")
                self._retrier.sleep(self._retrier.backoff.delay(min(rounds, 6), self._retrier.rng))
        return out

    def _apply(self, moves: Sequence[_Move], now: float) -> tuple[list[str], dict[str, Item | None]]:
        """Apply moves whose conditions hold; a move refused only because the cached path was
        stale is retried once on the path the record is really on."""
        seen: set[str] = set()
        unique = []
        for m in moves:
            if m.conversion_id not in seen:
                seen.add(m.conversion_id)
                unique.append(m)
        unknown = [m.conversion_id for m in unique if m.path is None and m.from_state is not S.RECEIVED]
        paths = self._known_paths(unknown) if unknown else {}
        writes = []
        for m in unique:
            path = m.path if m.path is not None else paths.get(m.conversion_id)
            if path is None and m.from_state is not S.RECEIVED:
                continue  # no such conversion: nothing to move
            writes.append(self._update(m, path))
        done, refused = self._transact(writes, now)
        retry: list[_Write] = []
        by_id = {m.conversion_id: m for m in unique}
        for cid, item in list(refused.items()):
            m = by_id[cid]
            if item is None or _str(item, "state") != m.from_state.value:
                continue
            if m.fence is not None and int(item.get("fence", {"N": "-1"})["N"]) != m.fence:
                continue
            real = _str(item, "path")
            if real is None:
                continue
            self._remember(cid, Path(real))
            retry.append(self._update(m, Path(real)))
            del refused[cid]
        if retry:
            more, again = self._transact(retry, now)
            done.extend(more)
            refused.update(again)
        for w in done:
            m = by_id[w.conversion_id]
            if m.to_path_none:
                self._remember(w.conversion_id, None)
        return [w.conversion_id for w in done], refused

    def _reserve_seq(self, count: int) -> int:
        """Reserve ``count`` receipt numbers; returns the first."""
        answer = self._call(
            lambda: self.client.update_item(
                TableName=self.table,
                Key={schema.HASH_KEY: _s(_SEQ_KEY)},
                UpdateExpression="ADD #n :k",
                ExpressionAttributeNames={"#n": "n"},
                ExpressionAttributeValues={":k": _n(count)},
                ReturnValues="UPDATED_NEW",
            )
        )
        last = int(answer["Attributes"]["n"]["N"])
        return last - count + 1

    def _conversion_item(
        self,
        request: ConversionRequest,
        seq: int,
        state: ConversionState,
        now: float,
        **extra: AttributeValue,
    ) -> Item:
        item: Item = {
            **_key(request.conversion_id),
            "kind": _s("conversion"),
            "conversion_id": _s(request.conversion_id),
            schema.TENANT_INDEX_HASH_KEY: _n(int(request.tenant_id)),
            "params": _s(_params(request.params)),
            "state": _s(state.value),
            "reason": _s(""),
            "fence": _n(0),
            "attempts": _n(0),
            schema.TENANT_INDEX_RANGE_KEY: _n(now),
            "updated_at": _n(now),
            schema.STATE_INDEX_RANGE_KEY: _n(seq),
        }
        item.update(extra)
        return item

    def _put_new(self, item: Item, enters: str, decision: tuple[int, str, str] | None = None) -> _Write:
        return _Write(
            conversion_id=str(item["conversion_id"]["S"]),
            action={
                "Put": {
                    "TableName": self.table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": schema.HASH_KEY},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            enters=enters,
            decision=decision,
        )

    # -- intake and claims -------------------------------------------------------------------

    def accept(self, requests: Sequence[ConversionRequest], now: float) -> AcceptResult:
        """Record new requests; a known id (or one repeated in ``requests``) is a duplicate."""
        firsts: dict[str, ConversionRequest] = {}
        for r in requests:
            firsts.setdefault(r.conversion_id, r)
        with self._errors("accept"):
            accepted: set[str] = set()
            if firsts:
                first = self._reserve_seq(len(firsts))
                writes = []
                for i, req in enumerate(firsts.values()):
                    item = self._conversion_item(req, first + i, S.RECEIVED, now)
                    item[schema.STATE_INDEX_HASH_KEY] = _s(state_key(S.RECEIVED, None))
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
        minute = int(now // 60)
        created: set[str] = set()
        existing: dict[str, Item] = {}
        with self._errors("claim"):
            todo = list(firsts.values())
            for _ in range(3):  # a request accepted between our two writes is claimed on the next pass
                if not todo:
                    break
                writes = [
                    self._update(
                        _Move(
                            c.request.conversion_id,
                            S.RECEIVED,
                            S.CLAIMED,
                            None,
                            None,
                            sets=self._claim_sets(c, now),
                            new_path=c.path,
                            decision=(minute, c.path.value, c.flag_version or ""),
                        ),
                        None,
                    )
                    for c in todo
                ]
                done, refused = self._transact(writes, now)
                created.update(w.conversion_id for w in done)
                missing = [firsts[cid] for cid, item in refused.items() if item is None]
                existing.update({cid: item for cid, item in refused.items() if item is not None})
                todo = []
                if missing:
                    first = self._reserve_seq(len(missing))
                    inserts = []
                    for i, c in enumerate(missing):
                        key = state_key(S.CLAIMED, c.path)
                        item = self._conversion_item(
                            c.request,
                            first + i,
                            S.CLAIMED,
                            now,
                            **{schema.STATE_INDEX_HASH_KEY: _s(key)},
                            **self._claim_sets(c, now),
                        )
                        inserts.append(self._put_new(item, key, (minute, c.path.value, c.flag_version or "")))
                    done, refused = self._transact(inserts, now)
                    created.update(w.conversion_id for w in done)
                    for cid, old in refused.items():
                        if old is not None and _str(old, "state") == S.RECEIVED.value:
                            todo.append(firsts[cid])
                        elif old is not None:
                            existing[cid] = old
            if todo:
                existing.update(self._get_many([c.request.conversion_id for c in todo]))
        out: list[Ownership] = []
        given: set[str] = set()
        for c in claims:
            cid = c.request.conversion_id
            if cid in created and cid not in given:
                given.add(cid)
                self._remember(cid, c.path)
                out.append(
                    Ownership(
                        ConversionRecord(
                            conversion_id=cid,
                            tenant_id=c.request.tenant_id,
                            params=dict(c.request.params),
                            state=S.CLAIMED,
                            path=c.path,
                            flag_version=c.flag_version,
                            reason=c.reason,
                            claimed_at=now,
                            updated_at=now,
                        ),
                        True,
                    )
                )
                continue
            held = existing.get(cid) or self._get_many([cid]).get(cid)
            if held is None:
                raise LedgerError(
                    f"ledger dynamodb://{self.table}: conversion {cid!r} vanished during a claim"
                )
            out.append(Ownership(self._records([held])[0], False))
        return out

    @staticmethod
    def _claim_sets(c: Claim, now: float) -> dict[str, AttributeValue]:
        sets: dict[str, AttributeValue] = {
            "path": _s(c.path.value),
            "reason": _s(c.reason),
            "claimed_at": _n(now),
            "updated_at": _n(now),
        }
        if c.flag_version is not None:
            sets["flag_version"] = _s(c.flag_version)
        return sets

    def _get_many(self, conversion_ids: Sequence[str]) -> dict[str, Item]:
        out: dict[str, Item] = {}
        for i in range(0, len(conversion_ids), _BATCH_GET_KEYS):
            for item in self._batch_get([_key(c) for c in conversion_ids[i : i + _BATCH_GET_KEYS]]):
                out[str(item["conversion_id"]["S"])] = item
        return out

    # -- dispatch ----------------------------------------------------------------------------

    def pending_dispatch(self, path: Path, limit: int) -> list[ConversionRecord]:
        """Conversions owned by ``path`` and not yet handed to it, oldest claim first."""
        with self._errors("pending_dispatch"):
            return self._records(self._partition(state_key(S.CLAIMED, path), limit=limit))

    def mark_dispatching(
        self, records: Sequence[ConversionRecord], intent: str, now: float
    ) -> list[ConversionRecord]:
        """Record the intent to submit, each under a new fence; returns the records this call took."""
        moves = [
            _Move(
                r.conversion_id,
                S.CLAIMED,
                S.DISPATCHING,
                r.fence,
                r.path,
                sets={"intent": _s(intent), "fence": _n(r.fence + 1), "updated_at": _n(now)},
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
            _Move(
                d.conversion_id,
                S.DISPATCHING,
                S.DISPATCHED,
                d.fence,
                None,
                sets={"job_ref": _s(d.job_ref), "dispatched_at": _n(now), "updated_at": _n(now)},
            )
            for d in items
        ]
        with self._errors("mark_dispatched"):
            done, _ = self._apply(moves, now)
        return _in_order([d.conversion_id for d in items], done)

    def release(self, conversion_ids: Sequence[tuple[str, int]], now: float, reason: str) -> int:
        """Return intents to CLAIMED when the backend confirmed nothing was started."""
        moves = [
            _Move(
                cid,
                S.DISPATCHING,
                S.CLAIMED,
                fence,
                None,
                sets={"reason": _s(reason), "updated_at": _n(now)},
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
                        filter_values={":older": _n(older_than)},
                    )
                )
        found.sort(key=_seq)
        return self._records(found[:limit])

    def in_flight(self, path: Path, limit: int) -> list[ConversionRecord]:
        """Conversions a backend holds (DISPATCHED) on ``path``."""
        with self._errors("in_flight"):
            return self._records(self._partition(state_key(S.DISPATCHED, path), limit=limit))

    # -- outcomes ----------------------------------------------------------------------------

    def mark_finished(self, finishes: Sequence[Finish], now: float) -> list[str]:
        """Record outcomes for attempts still current; finished records expire after the retention."""
        for f in finishes:
            if not f.state.terminal:
                raise ValueError(f"{f.state} is not a terminal state")
        expires = _n(int(now + self.retention_seconds))
        moves = [
            _Move(
                f.conversion_id,
                S.DISPATCHED,
                f.state,
                f.fence,
                None,
                sets={
                    "reason": _s(f.reason),
                    "finished_at": _n(now),
                    "updated_at": _n(now),
                    schema.TTL_ATTRIBUTE: expires,
                    **_job_times(f),
                },
            )
            for f in finishes
        ]
        with self._errors("mark_finished"):
            done, _ = self._apply(moves, now)
        return _in_order([f.conversion_id for f in finishes], done)

    def resubmit(self, conversion_id: str, fence: int, reason: str, now: float) -> bool:
        """Put a failed attempt back to CLAIMED on the same path, for a fresh dispatch."""
        move = _Move(
            conversion_id,
            S.DISPATCHED,
            S.CLAIMED,
            fence,
            None,
            sets={"reason": _s(reason), "updated_at": _n(now)},
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
            record = _record(item)
            if record.state is not S.FAILED:
                raise ConflictError(
                    f"conversion {conversion_id!r} is {record.state.value}; only a failed "
                    "conversion can be requeued"
                )
            move = _Move(
                conversion_id,
                S.FAILED,
                S.RECEIVED,
                None,
                record.path,
                # Routed afresh, retries and all: the attempt count starts again.
                sets={"reason": _s("requeued by operator"), "attempts": _n(0), "updated_at": _n(now)},
                removes=(
                    "path",
                    "flag_version",
                    "job_ref",
                    "intent",
                    "claimed_at",
                    "dispatched_at",
                    "finished_at",
                    "job_started_at",
                    "job_finished_at",
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
            job_started_at=None,
            job_finished_at=None,
        )

    # -- reads -------------------------------------------------------------------------------

    def _partition(
        self,
        key: str,
        *,
        limit: int,
        after_seq: int | None = None,
        filter_expression: str | None = None,
        filter_values: dict[str, AttributeValue] | None = None,
    ) -> list[Item]:
        """Up to ``limit`` items of one ``by_state`` partition in receipt order."""
        out: list[Item] = []
        values: dict[str, AttributeValue] = {":k": _s(key), **(filter_values or {})}
        names = {"#k": schema.STATE_INDEX_HASH_KEY}
        condition = "#k = :k"
        if after_seq is not None:
            names["#q"] = schema.STATE_INDEX_RANGE_KEY
            condition += " AND #q > :after"
            values[":after"] = _n(after_seq)
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": schema.STATE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": True,
        }
        if filter_expression is not None:
            request["FilterExpression"] = filter_expression
        start: dict[str, Any] | None = None
        while len(out) < limit:
            page_request = dict(request, Limit=min(1000, max(limit - len(out), 50)))
            if start is not None:
                page_request["ExclusiveStartKey"] = start
            answer = self._call(partial(self.client.query, **page_request))
            out.extend(answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if not start:
                break
        return out[:limit]

    def get(self, conversion_id: str) -> ConversionRecord | None:
        """One conversion's record (a strongly consistent read), or None."""
        with self._errors("get"):
            answer = self._call(
                lambda: self.client.get_item(
                    TableName=self.table, Key=_key(conversion_id), ConsistentRead=True
                )
            )
        item = answer.get("Item")
        return self._records([item])[0] if item else None

    def counts(self) -> Counts:
        """Conversions per state and path, from the counter items (one BatchGetItem, no scan)."""
        keys = [
            {schema.HASH_KEY: _s(f"counter#{key}#{shard}")}
            for key in _CONVERSION_STATE_KEYS
            for shard in range(COUNTER_SHARDS)
        ]
        with self._errors("counts"):
            items = self._batch_get(keys)
        by_key: dict[str, int] = {}
        for item in items:
            _, state, path, _shard = str(item[schema.HASH_KEY]["S"]).split("#")
            by_key[f"{state}#{path}"] = by_key.get(f"{state}#{path}", 0) + int(item.get("n", {"N": "0"})["N"])
        by_state: dict[ConversionState, int] = {}
        by_path: dict[tuple[Path, ConversionState], int] = {}
        for key, n in by_key.items():
            if n == 0:
                continue
            state_word, path_word = key.split("#")
            st = ConversionState(state_word)
            by_state[st] = by_state.get(st, 0) + n
            if path_word != "-":
                by_path[(Path(path_word), st)] = n
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
        """A page of conversions matching the filters, in receipt order, and the next page's cursor."""
        if tenant_id is not None:
            return self._tenant_page(tenant_id, state, path, after, limit)
        after_seq: int | None = None
        if after is not None:
            try:
                after_seq = int(after)
            except ValueError as exc:
                raise ValueError(f"cursor {after!r} is not one this ledger gave out") from exc
        keys = [
            k
            for k in _CONVERSION_STATE_KEYS
            if (state is None or k.split("#")[0] == state.value)
            and (path is None or k.split("#")[1] == path.value)
        ]
        items: list[Item] = []
        with self._errors("query"):
            for k in keys:
                items.extend(self._partition(k, limit=limit + 1, after_seq=after_seq))
        items.sort(key=_seq)
        page = items[: limit + 1]
        records = self._records(page[:limit])
        cursor = str(_seq(page[limit - 1])) if len(page) > limit else None
        return records, cursor

    def _tenant_items(
        self,
        tenant_id: int,
        *,
        newest_first: bool,
        want: int,
        start: tuple[float, int] | None,
        keep: Callable[[Item], bool],
    ) -> list[Item]:
        """``want`` of a tenant's items in (received time, receipt number) order, without a scan.

        The index orders by received time only; items received at the same instant are read as a
        whole group so that sorting them by receipt number never cuts a group wrongly.
        """
        names = {"#t": schema.TENANT_INDEX_HASH_KEY}
        values: dict[str, AttributeValue] = {":t": _n(tenant_id)}
        condition = "#t = :t"
        if start is not None:
            names["#r"] = schema.TENANT_INDEX_RANGE_KEY
            condition += " AND #r <= :r" if newest_first else " AND #r >= :r"
            values[":r"] = _n(start[0])

        def order(item: Item) -> tuple[float, int]:
            return (_num(item, schema.TENANT_INDEX_RANGE_KEY) or 0.0, _seq(item))

        def beyond(item: Item) -> bool:
            if start is None:
                return True
            return order(item) < start if newest_first else order(item) > start

        out: list[Item] = []
        page_start: dict[str, Any] | None = None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": schema.TENANT_INDEX,
                "KeyConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ScanIndexForward": not newest_first,
                "Limit": 500,
            }
            if page_start is not None:
                request["ExclusiveStartKey"] = page_start
            answer = self._call(partial(self.client.query, **request))
            page: list[Item] = answer.get("Items", [])
            out.extend(i for i in page if beyond(i) and keep(i))
            page_start = answer.get("LastEvaluatedKey")
            if not page_start or not page:
                break
            if len(out) >= want:
                out.sort(key=order, reverse=newest_first)
                boundary = order(out[want - 1])[0]
                last = order(page[-1])[0]
                if (last < boundary) if newest_first else (last > boundary):
                    break
        out.sort(key=order, reverse=newest_first)
        return out[:want]

    def _tenant_page(
        self,
        tenant_id: int,
        state: ConversionState | None,
        path: Path | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[ConversionRecord], str | None]:
        start: tuple[float, int] | None = None
        if after is not None:
            try:
                received, seq = after.split(":")
                start = (float(received), int(seq))
            except ValueError as exc:
                raise ValueError(f"cursor {after!r} is not one this ledger gave out") from exc

        def keep(item: Item) -> bool:
            if state is not None and _str(item, "state") != state.value:
                return False
            return path is None or _str(item, "path") == path.value

        with self._errors("query"):
            items = self._tenant_items(tenant_id, newest_first=False, want=limit + 1, start=start, keep=keep)
        records = self._records(items[:limit])
        cursor = None
        if len(items) > limit:
            last = items[limit - 1]
            cursor = f"{_num(last, schema.TENANT_INDEX_RANGE_KEY)!r}:{_seq(last)}"
        return records, cursor

    def by_tenant(self, tenant_id: int, limit: int = 1000) -> list[ConversionRecord]:
        """A tenant's conversions, newest first (through the tenant index)."""
        with self._errors("by_tenant"):
            items = self._tenant_items(
                tenant_id, newest_first=True, want=limit, start=None, keep=lambda _: True
            )
        return self._records(items)

    def decisions_since(self, since: float) -> list[tuple[int, Path, str, int]]:
        """Claims per minute (epoch minute), path and flag version since ``since``."""
        totals: dict[tuple[int, str, str], int] = {}
        with self._errors("decisions_since"):
            request: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": schema.STATE_INDEX,
                "KeyConditionExpression": "#k = :k AND #q >= :m",
                "ExpressionAttributeNames": {
                    "#k": schema.STATE_INDEX_HASH_KEY,
                    "#q": schema.STATE_INDEX_RANGE_KEY,
                },
                "ExpressionAttributeValues": {":k": _s(_DECISIONS), ":m": _n(int(since // 60))},
            }
            start: dict[str, Any] | None = None
            while True:
                page_request = dict(request)
                if start is not None:
                    page_request["ExclusiveStartKey"] = start
                answer = self._call(partial(self.client.query, **page_request))
                for item in answer.get("Items", []):
                    minute = _seq(item)
                    for attr, value in item.items():
                        if attr.startswith("d|"):
                            _, path, version = attr.split("|", 2)
                            key = (minute, path, version)
                            totals[key] = totals.get(key, 0) + int(value["N"])
                start = answer.get("LastEvaluatedKey")
                if not start:
                    break
        return [(m, Path(p), v, n) for (m, p, v), n in sorted(totals.items()) if n]

    def tenant_activity(self, since: float) -> dict[int, int]:
        """Conversions received per tenant since ``since``: a scan of the tenant index (only
        conversions carry a tenant), filtered on receipt time. Costly on a large table, so only
        ``cutover flag plan`` asks, once per command."""
        counts: dict[int, int] = {}
        with self._errors("tenant_activity"):
            request: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": schema.TENANT_INDEX,
                "FilterExpression": "#r >= :since",
                "ProjectionExpression": "#t",
                "ExpressionAttributeNames": {
                    "#r": schema.TENANT_INDEX_RANGE_KEY,
                    "#t": schema.TENANT_INDEX_HASH_KEY,
                },
                "ExpressionAttributeValues": {":since": _n(since)},
            }
            start: dict[str, Any] | None = None
            while True:
                page_request = dict(request)
                if start is not None:
                    page_request["ExclusiveStartKey"] = start
                answer = self._call(partial(self.client.scan, **page_request))
                for item in answer.get("Items", []):
                    tenant = int(item[schema.TENANT_INDEX_HASH_KEY]["N"])
                    counts[tenant] = counts.get(tenant, 0) + 1
                start = answer.get("LastEvaluatedKey")
                if not start:
                    break
        return counts

    # -- flag, leases ------------------------------------------------------------------------

    def save_flag(self, snapshot: FlagSnapshot) -> None:
        """Persist the last-known-good flag as its own item."""
        value = snapshot.to_json()
        with self._errors("save_flag"):
            self._call(
                lambda: self.client.put_item(
                    TableName=self.table,
                    Item={
                        schema.HASH_KEY: _s(_FLAG_KEY),
                        "value": _s(value),
                        "updated_at": _n(snapshot.fetched_at),
                    },
                )
            )

    def load_flag(self) -> FlagSnapshot | None:
        """The persisted last-known-good flag, if any."""
        with self._errors("load_flag"):
            answer = self._call(
                lambda: self.client.get_item(
                    TableName=self.table, Key={schema.HASH_KEY: _s(_FLAG_KEY)}, ConsistentRead=True
                )
            )
        item = answer.get("Item")
        if not item:
            return None
        return FlagSnapshot.from_json(item["value"]["S"])

    def get_value(self, key: str) -> str | None:
        """A small value kept by name (``pk = "kv#<key>"``), or None."""
        with self._errors("get_value"):
            answer = self._call(
                lambda: self.client.get_item(
                    TableName=self.table, Key={schema.HASH_KEY: _s(f"kv#{key}")}, ConsistentRead=True
                )
            )
        item = answer.get("Item")
        return _str(item, "value") if item else None

    def put_value(self, key: str, value: str, now: float) -> None:
        """Keep a small value by name, replacing what was there."""
        with self._errors("put_value"):
            self._call(
                lambda: self.client.put_item(
                    TableName=self.table,
                    Item={schema.HASH_KEY: _s(f"kv#{key}"), "value": _s(value), "updated_at": _n(now)},
                )
            )

    def try_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the named lease with a conditional put; False while another holder has it."""
        return self._conditionally(
            f"lease {name}",
            lambda: self.client.put_item(
                TableName=self.table,
                Item={
                    schema.HASH_KEY: _s(f"lease#{name}"),
                    "holder": _s(holder),
                    "lease_expires": _n(now + ttl),
                },
                ConditionExpression="attribute_not_exists(#pk) OR holder = :h OR lease_expires < :now",
                ExpressionAttributeNames={"#pk": schema.HASH_KEY},
                ExpressionAttributeValues={":h": _s(holder), ":now": _n(now)},
            ),
        )

    def end_lease(self, name: str, holder: str) -> bool:
        """Delete the lease item on condition that ``holder`` has it."""
        return self._conditionally(
            f"ending lease {name}",
            lambda: self.client.delete_item(
                TableName=self.table,
                Key={schema.HASH_KEY: _s(f"lease#{name}")},
                ConditionExpression="holder = :h",
                ExpressionAttributeValues={":h": _s(holder)},
            ),
        )

    def _conditionally(self, what: str, write: Callable[[], Any]) -> bool:
        """Make a conditional write: False when its condition did not hold."""
        with self._errors(what):
            try:
                self._call(write)
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True


def _in_order(wanted: Sequence[str], done: Sequence[str]) -> list[str]:
    got = set(done)
    out = []
    for cid in wanted:
        if cid in got:
            got.discard(cid)
            out.append(cid)
    return out


def _attribute(name: str, kind: str) -> AttributeDefinitionTypeDef:
    return {"AttributeName": name, "AttributeType": cast("ScalarAttributeTypeType", kind)}


def create_table(client: DynamoDBClient, table: str) -> None:
    """Create the ledger table with the schema Terraform also builds (for tests and local trials)."""
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            _attribute(schema.HASH_KEY, schema.HASH_KEY_TYPE),
            _attribute(schema.STATE_INDEX_HASH_KEY, schema.STATE_INDEX_HASH_KEY_TYPE),
            _attribute(schema.STATE_INDEX_RANGE_KEY, schema.STATE_INDEX_RANGE_KEY_TYPE),
            _attribute(schema.TENANT_INDEX_HASH_KEY, schema.TENANT_INDEX_HASH_KEY_TYPE),
            _attribute(schema.TENANT_INDEX_RANGE_KEY, schema.TENANT_INDEX_RANGE_KEY_TYPE),
        ],
        KeySchema=[{"AttributeName": schema.HASH_KEY, "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": schema.STATE_INDEX,
                "KeySchema": [
                    {"AttributeName": schema.STATE_INDEX_HASH_KEY, "KeyType": "HASH"},
                    {"AttributeName": schema.STATE_INDEX_RANGE_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": schema.TENANT_INDEX,
                "KeySchema": [
                    {"AttributeName": schema.TENANT_INDEX_HASH_KEY, "KeyType": "HASH"},
                    {"AttributeName": schema.TENANT_INDEX_RANGE_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    )
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    client.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE},
    )
