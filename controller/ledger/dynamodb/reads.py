"""The DynamoDB ledger's reads: one record, the counters, pages of records by state, path or tenant,
and the per-minute decision and per-tenant receipt totals.

State queries go through the ``by_state`` index and tenant queries through ``by_tenant``; only
``tenant_activity`` scans (an index), and only ``cutover flag plan`` asks for it. Never writes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.ports import Counts
from controller.ledger import evidence
from controller.ledger.dynamodb import schema
from controller.ledger.dynamodb.base import LedgerBase
from controller.ledger.dynamodb.codec import (
    CONVERSION_STATE_KEYS,
    COUNTER_SHARDS,
    DECISIONS,
    AttributeValue,
    Item,
    conversion_key,
    counter_key,
    number,
    number_of,
    seq_of,
    text,
    text_of,
)


class Reads(LedgerBase):
    """The ledger's queries (``LedgerQueries``) and its read of one record."""

    def get(self, conversion_id: str) -> ConversionRecord | None:
        """One conversion's record (a strongly consistent read), or None."""
        with self._errors("get"):
            answer = self._call(
                lambda: self.client.get_item(
                    TableName=self.table, Key=conversion_key(conversion_id), ConsistentRead=True
                )
            )
        item = answer.get("Item")
        return self._records([item])[0] if item else None

    def counts(self) -> Counts:
        """Conversions per state and path, from the counter items (one BatchGetItem, no scan)."""
        keys = [counter_key(key, shard) for key in CONVERSION_STATE_KEYS for shard in range(COUNTER_SHARDS)]
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
            for k in CONVERSION_STATE_KEYS
            if (state is None or k.split("#")[0] == state.value)
            and (path is None or k.split("#")[1] == path.value)
        ]
        items: list[Item] = []
        with self._errors("query"):
            for k in keys:
                items.extend(self._partition(k, limit=limit + 1, after_seq=after_seq))
        items.sort(key=seq_of)
        page = items[: limit + 1]
        records = self._records(page[:limit])
        cursor = str(seq_of(page[limit - 1])) if len(page) > limit else None
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
        order = _received_order

        def beyond(item: Item) -> bool:
            if start is None:
                return True
            return order(item) < start if newest_first else order(item) > start

        request = self._tenant_query(tenant_id, newest_first, start)
        out: list[Item] = []
        page_start: dict[str, Any] | None = None
        while True:
            page_request = dict(request)
            if page_start is not None:
                page_request["ExclusiveStartKey"] = page_start
            answer = self._call(partial(self.client.query, **page_request))
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

    def _tenant_query(
        self, tenant_id: int, newest_first: bool, start: tuple[float, int] | None
    ) -> dict[str, Any]:
        """The tenant index query for ``tenant_id``'s items from ``start``'s received time on (or back,
        newest first), a page at a time."""
        names = {"#t": schema.TENANT_INDEX_HASH_KEY}
        values: dict[str, AttributeValue] = {":t": number(tenant_id)}
        condition = "#t = :t"
        if start is not None:
            names["#r"] = schema.TENANT_INDEX_RANGE_KEY
            condition += " AND #r <= :r" if newest_first else " AND #r >= :r"
            values[":r"] = number(start[0])
        return {
            "TableName": self.table,
            "IndexName": schema.TENANT_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not newest_first,
            "Limit": 500,
        }

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
            if state is not None and text_of(item, "state") != state.value:
                return False
            return path is None or text_of(item, "path") == path.value

        with self._errors("query"):
            items = self._tenant_items(tenant_id, newest_first=False, want=limit + 1, start=start, keep=keep)
        records = self._records(items[:limit])
        cursor = None
        if len(items) > limit:
            last = items[limit - 1]
            cursor = f"{number_of(last, schema.TENANT_INDEX_RANGE_KEY)!r}:{seq_of(last)}"
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
                "ExpressionAttributeValues": {":k": text(DECISIONS), ":m": number(int(since // 60))},
            }
            start: dict[str, Any] | None = None
            while True:
                page_request = dict(request)
                if start is not None:
                    page_request["ExclusiveStartKey"] = start
                answer = self._call(partial(self.client.query, **page_request))
                for item in answer.get("Items", []):
                    minute = seq_of(item)
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
                "ExpressionAttributeValues": {":since": number(since)},
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

    def finished_since(self, since: float) -> list[evidence.FinishedConversion]:
        """Conversions that succeeded or failed at or after ``since``, for the rollout gates: paged
        through the state index, which is ordered by receipt, not by finish (the TTL bounds it)."""
        return evidence.finished_through_query(self, since)


def _received_order(item: Item) -> tuple[float, int]:
    """Where a conversion's item sorts in its tenant's history: received time, then receipt number."""
    return (number_of(item, schema.TENANT_INDEX_RANGE_KEY) or 0.0, seq_of(item))
