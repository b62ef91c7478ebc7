"""The DynamoDB ledger's items kept by name beside the conversions: the last-known-good flag
(``pk = "flag#lkg"``), leases (``pk = "lease#<name>"``, taken and given up by conditional writes) and
small values such as finder watermarks (``pk = "kv#<key>"``).

One item each, never in a transaction with a conversion; nothing here reads or moves a conversion.
"""

from __future__ import annotations

from controller.ledger.dynamodb import schema
from controller.ledger.dynamodb.codec import FLAG_KEY, number, text, text_of
from controller.ledger.dynamodb.writes import Writes
from flags.snapshot import FlagSnapshot


class FlagAndLeases(Writes):
    """The flag, lease and value roles (``FlagStore``, ``LeaseStore``, ``ValueStore``)."""

    def save_flag(self, snapshot: FlagSnapshot) -> None:
        """Persist the last-known-good flag as its own item."""
        value = snapshot.to_json()
        with self._errors("save_flag"):
            self._call(
                lambda: self.client.put_item(
                    TableName=self.table,
                    Item={
                        schema.HASH_KEY: text(FLAG_KEY),
                        "value": text(value),
                        "updated_at": number(snapshot.fetched_at),
                    },
                )
            )

    def load_flag(self) -> FlagSnapshot | None:
        """The persisted last-known-good flag, if any."""
        with self._errors("load_flag"):
            answer = self._call(
                lambda: self.client.get_item(
                    TableName=self.table, Key={schema.HASH_KEY: text(FLAG_KEY)}, ConsistentRead=True
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
                    TableName=self.table, Key={schema.HASH_KEY: text(f"kv#{key}")}, ConsistentRead=True
                )
            )
        item = answer.get("Item")
        return text_of(item, "value") if item else None

    def put_value(self, key: str, value: str, now: float) -> None:
        """Keep a small value by name, replacing what was there."""
        with self._errors("put_value"):
            self._call(
                lambda: self.client.put_item(
                    TableName=self.table,
                    Item={
                        schema.HASH_KEY: text(f"kv#{key}"),
                        "value": text(value),
                        "updated_at": number(now),
                    },
                )
            )

    def try_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the named lease with a conditional put; False while another holder has it."""
        return self._conditionally(
            f"lease {name}",
            lambda: self.client.put_item(
                TableName=self.table,
                Item={
                    schema.HASH_KEY: text(f"lease#{name}"),
                    "holder": text(holder),
                    "lease_expires": number(now + ttl),
                },
                ConditionExpression="attribute_not_exists(#pk) OR holder = :h OR lease_expires < :now",
                ExpressionAttributeNames={"#pk": schema.HASH_KEY},
                ExpressionAttributeValues={":h": text(holder), ":now": number(now)},
            ),
        )

    def end_lease(self, name: str, holder: str) -> bool:
        """Delete the lease item on condition that ``holder`` has it."""
        return self._conditionally(
            f"ending lease {name}",
            lambda: self.client.delete_item(
                TableName=self.table,
                Key={schema.HASH_KEY: text(f"lease#{name}")},
                ConditionExpression="holder = :h",
                ExpressionAttributeValues={":h": text(holder)},
            ),
        )
