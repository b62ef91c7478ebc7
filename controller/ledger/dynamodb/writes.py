"""The DynamoDB ledger's transaction engine: every change to a conversion is a conditional write,
applied in ``TransactWriteItems`` together with the counter and per-minute decision items it moves.

A ``Move`` says which transition to make (from state and fence, on the path the record is on); the
engine turns it into a ``Write``, finds paths it does not know, sends the writes in transactions,
retries those that only conflicted with another writer and reports the ones a condition refused.
It never decides which transition is due: the parts in this package say that.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from controller.core.domain import ConversionState, Path
from controller.core.errors import LedgerError
from controller.ledger.dynamodb import schema
from controller.ledger.dynamodb.base import BATCH_GET_KEYS, MAX_ROUNDS, LedgerBase
from controller.ledger.dynamodb.codec import (
    COUNTER_SHARDS,
    DECISIONS,
    SEQ_KEY,
    AttributeValue,
    Item,
    conversion_key,
    counter_key,
    number,
    state_key,
    text,
    text_of,
)
from controller.plumbing.aws import error_code, transient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

S = ConversionState

TRANSACTION_ACTIONS = 100  # TransactWriteItems' documented maximum
_CONVERSIONS_PER_TRANSACTION = 90  # the rest of the 100 is left for counter and decision items
# Cancellation reasons a transaction meets in ordinary work: none (another item cancelled it), a
# refusing condition (reported), contention or throttling (sent again). Any other is a fault.
_ORDINARY_REASONS = frozenset(
    {
        "None",
        "ConditionalCheckFailed",
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
    }
)


@dataclass(slots=True)
class Write:
    """One conversion's conditional write inside a transaction, and how it moves the counters."""

    conversion_id: str
    action: dict[str, Any]
    leaves: str | None = None  # the by_state partition it leaves (a counter goes down)
    enters: str | None = None  # the partition it enters (a counter goes up)
    decision: tuple[int, str, str] | None = None  # (minute, path, flag version) of a new claim


@dataclass(slots=True)
class Move:
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


class Writes(LedgerBase):
    """The conditional writes of the ledger, one transaction engine for every transition."""

    def _counter_actions(self, writes: Sequence[Write]) -> list[dict[str, Any]]:
        """The counter and decision updates that go in one transaction with ``writes``."""
        deltas, decisions = _tally(writes)
        shard = self._rng.randrange(COUNTER_SHARDS)
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": counter_key(key, shard),
                    "UpdateExpression": "ADD #n :d",
                    "ExpressionAttributeNames": {"#n": "n"},
                    "ExpressionAttributeValues": {":d": number(delta)},
                }
            }
            for key, delta in sorted(deltas.items())
            if delta != 0
        ]
        by_minute: dict[int, dict[str, int]] = {}
        for (minute, path, version), n in decisions.items():
            by_minute.setdefault(minute, {})[f"d|{path}|{version}"] = n
        actions.extend(self._decisions_action(m, counts, shard) for m, counts in sorted(by_minute.items()))
        return actions

    def _decisions_action(self, minute: int, counts: dict[str, int], shard: int) -> dict[str, Any]:
        """The update adding ``counts`` to one shard of a minute's decisions item, which expires
        after the retention like the conversions it counts."""
        names = {"#sk": schema.STATE_INDEX_HASH_KEY, "#sq": schema.STATE_INDEX_RANGE_KEY}
        names["#ttl"] = schema.TTL_ATTRIBUTE
        values: dict[str, AttributeValue] = {
            ":sk": text(DECISIONS),
            ":m": number(minute),
            ":exp": number(int(minute * 60 + self.retention_seconds)),
        }
        adds = []
        for i, (attr, n) in enumerate(sorted(counts.items())):
            names[f"#d{i}"] = attr
            values[f":c{i}"] = number(n)
            adds.append(f"#d{i} :c{i}")
        return {
            "Update": {
                "TableName": self.table,
                "Key": {schema.HASH_KEY: text(f"{DECISIONS}#{minute}#{shard}")},
                "UpdateExpression": "SET #sk = :sk, #sq = :m, #ttl = :exp ADD " + ", ".join(adds),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _transact(self, writes: Sequence[Write], now: float) -> tuple[list[Write], dict[str, Item | None]]:
        """Apply ``writes`` in transactions; returns those applied and, for each refused by its
        condition, the item as it stood (None when it does not exist)."""
        done: list[Write] = []
        refused: dict[str, Item | None] = {}
        pending = list(writes)
        rounds = 0
        while pending:
            chunk = pending[:_CONVERSIONS_PER_TRANSACTION]
            try:
                self._send(chunk)
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                more, again = self._refusals(chunk, exc)
                refused.update(more)
                if len(again) == len(chunk):
                    # Nothing was refused on its own merits: a conflict with another writer.
                    rounds += 1
                    if rounds >= MAX_ROUNDS:
                        raise LedgerError(
                            f"ledger dynamodb://{self.table}: writes kept conflicting with other writers"
                        ) from exc
                    self._back_off(rounds)
                pending = again + pending[len(chunk) :]
                continue
            done.extend(chunk)
            pending = pending[len(chunk) :]
        return done, refused

    def _send(self, chunk: Sequence[Write]) -> None:
        """One ``TransactWriteItems`` of ``chunk`` and the counter updates it makes."""
        actions = [w.action for w in chunk] + self._counter_actions(chunk)
        token = str(uuid.uuid4())  # a retried call after an unknown outcome is applied once
        self._retrier.call(
            partial(
                self.client.transact_write_items,
                TransactItems=cast("list[TransactWriteItemTypeDef]", actions),
                ClientRequestToken=token,
            ),
            retry_if=lambda e: transient(e) or error_code(e) == "TransactionInProgressException",
        )

    def _refusals(
        self, chunk: Sequence[Write], exc: ClientError
    ) -> tuple[dict[str, Item | None], list[Write]]:
        """Sort a cancelled transaction's writes: those a condition refused (with the item as it stood)
        and those to send again. Any other reason to cancel is a ``LedgerError``."""
        response = cast(dict[str, Any], exc.response)
        reasons: list[dict[str, Any]] = list(response.get("CancellationReasons", []))
        refused: dict[str, Item | None] = {}
        again: list[Write] = []
        for i, w in enumerate(chunk):
            reason = reasons[i] if i < len(reasons) else {}
            if reason.get("Code") == "ConditionalCheckFailed":
                refused[w.conversion_id] = reason.get("Item")
            else:
                again.append(w)
        codes = {str(r.get("Code", "None")) for r in reasons} - _ORDINARY_REASONS
        if codes:
            raise LedgerError(
                f"ledger dynamodb://{self.table}: transaction refused ({', '.join(sorted(codes))})"
            ) from exc
        return refused, again

    def _update(self, move: Move, path: Path | None) -> Write:
        names = {"#state": "state", "#sk": schema.STATE_INDEX_HASH_KEY}
        values: dict[str, AttributeValue] = {":from": text(move.from_state.value)}
        condition = "#state = :from"
        if move.fence is not None:
            condition += " AND fence = :fence"
            values[":fence"] = number(move.fence)
        if path is not None:
            names["#path"] = "path"
            condition += " AND #path = :path"
            values[":path"] = text(path.value)
        to_path = None if move.to_path_none else (move.new_path or path)
        sets = {"state": text(move.to_state.value), **move.sets}
        parts = ["#sk = :sk"]
        values[":sk"] = text(state_key(move.to_state, to_path))
        for i, (attr, value) in enumerate(sets.items()):
            names[f"#s{i}"] = attr
            values[f":s{i}"] = value
            parts.append(f"#s{i} = :s{i}")
        for i, attr in enumerate(move.increments):
            names[f"#i{i}"] = attr
            values[":one"] = number(1)
            parts.append(f"#i{i} = #i{i} + :one")
        for i, attr in enumerate(move.decrements):
            names[f"#d{i}"] = attr
            values[":one"] = number(1)
            parts.append(f"#d{i} = #d{i} - :one")
        expression = "SET " + ", ".join(parts)
        if move.removes:
            for i, attr in enumerate(move.removes):
                names[f"#r{i}"] = attr
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(move.removes)))
        return Write(
            conversion_id=move.conversion_id,
            action={
                "Update": {
                    "TableName": self.table,
                    "Key": conversion_key(move.conversion_id),
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
        for i in range(0, len(missing), BATCH_GET_KEYS):
            for item in self._batch_get(
                [conversion_key(c) for c in missing[i : i + BATCH_GET_KEYS]], "conversion_id, #p"
            ):
                path = text_of(item, "path")
                cid = str(item["conversion_id"]["S"])
                known[cid] = Path(path) if path else None
                self._remember(cid, known[cid])
        return known

    def _apply(self, moves: Sequence[Move], now: float) -> tuple[list[str], dict[str, Item | None]]:
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
        retry: list[Write] = []
        by_id = {m.conversion_id: m for m in unique}
        for cid, item in list(refused.items()):
            m = by_id[cid]
            if item is None or text_of(item, "state") != m.from_state.value:
                continue
            if m.fence is not None and int(item.get("fence", {"N": "-1"})["N"]) != m.fence:
                continue
            real = text_of(item, "path")
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
                Key={schema.HASH_KEY: text(SEQ_KEY)},
                UpdateExpression="ADD #n :k",
                ExpressionAttributeNames={"#n": "n"},
                ExpressionAttributeValues={":k": number(count)},
                ReturnValues="UPDATED_NEW",
            )
        )
        last = int(answer["Attributes"]["n"]["N"])
        return last - count + 1

    def _put_new(self, item: Item, enters: str, decision: tuple[int, str, str] | None = None) -> Write:
        return Write(
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


def in_order(wanted: Sequence[str], done: Sequence[str]) -> list[str]:
    """The ids of ``wanted`` that are in ``done``, in ``wanted``'s order, each once."""
    got = set(done)
    out = []
    for cid in wanted:
        if cid in got:
            got.discard(cid)
            out.append(cid)
    return out


def _tally(writes: Sequence[Write]) -> tuple[dict[str, int], dict[tuple[int, str, str], int]]:
    """How ``writes`` move each ``by_state`` partition's counter, and the claims they add per
    (minute, path, flag version)."""
    deltas: dict[str, int] = {}
    decisions: dict[tuple[int, str, str], int] = {}
    for w in writes:
        if w.leaves is not None:
            deltas[w.leaves] = deltas.get(w.leaves, 0) - 1
        if w.enters is not None:
            deltas[w.enters] = deltas.get(w.enters, 0) + 1
        if w.decision is not None:
            decisions[w.decision] = decisions.get(w.decision, 0) + 1
    return deltas, decisions
