"""The plumbing every part of the DynamoDB ledger stands on: the client and table, error mapping and
retries, the cache of the path each conversion is on, and the reads the other parts build on (a
consistent batch get, one ``by_state`` partition in receipt order).

It implements no port method and never writes; the parts in this package add those as mixins over
``LedgerBase``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from controller.core.domain import ConversionRecord, Path
from controller.core.errors import LedgerError
from controller.ledger.dynamodb import schema
from controller.ledger.dynamodb.codec import AttributeValue, Item, conversion_key, number, text, to_record
from controller.plumbing.aws import Retrier, describe, transient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BATCH_GET_KEYS = 100  # BatchGetItem's documented maximum
MAX_ROUNDS = 12  # rounds before a contended write or a throttled read gives up (each round backs off)
_PATH_CACHE_LIMIT = 200_000


class LedgerBase:
    """One DynamoDB table and the client that reaches it, with the calls every part shares."""

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

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise LedgerError(f"ledger dynamodb://{self.table}: {what} failed ({describe(exc)})") from exc

    def _call(self, fn: Callable[[], Any]) -> Any:
        return self._retrier.call(fn, retry_if=transient)

    def _back_off(self, rounds: int) -> None:
        self._retrier.sleep(self._retrier.backoff.delay(min(rounds, 6), self._retrier.rng))

    def _remember(self, conversion_id: str, path: Path | None) -> None:
        with self._lock:
            if len(self._paths) >= _PATH_CACHE_LIMIT:
                self._paths.clear()
            self._paths[conversion_id] = path

    def _records(self, items: Sequence[Item]) -> list[ConversionRecord]:
        out = [to_record(i) for i in items]
        for r in out:
            self._remember(r.conversion_id, r.path)
        return out

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
                if rounds >= MAX_ROUNDS:
                    raise LedgerError(f"ledger dynamodb://{self.table}: reads kept being throttled")
                self._back_off(rounds)
        return out

    def _get_many(self, conversion_ids: Sequence[str]) -> dict[str, Item]:
        out: dict[str, Item] = {}
        for i in range(0, len(conversion_ids), BATCH_GET_KEYS):
            for item in self._batch_get([conversion_key(c) for c in conversion_ids[i : i + BATCH_GET_KEYS]]):
                out[str(item["conversion_id"]["S"])] = item
        return out

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
        values: dict[str, AttributeValue] = {":k": text(key), **(filter_values or {})}
        names = {"#k": schema.STATE_INDEX_HASH_KEY}
        condition = "#k = :k"
        if after_seq is not None:
            names["#q"] = schema.STATE_INDEX_RANGE_KEY
            condition += " AND #q > :after"
            values[":after"] = number(after_seq)
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
