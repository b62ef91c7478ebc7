"""How the DynamoDB ledger's values look in the table: attribute values, item keys, and conversion
items to ``ConversionRecord`` and back.

Pure: values in, values out. It never holds a client or makes a call; the key schema's names are
``schema``'s, which Terraform reads too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from controller.core.domain import ConversionRecord, ConversionRequest, ConversionState, Path
from controller.ledger.dynamodb import schema

S = ConversionState
AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

COUNTER_SHARDS = 4  # counter items per (state, path): concurrent transactions rarely meet on one

SEQ_KEY = "meta#seq"
FLAG_KEY = "flag#lkg"
DECISIONS = "decisions"
CONVERSION_STATE_KEYS = [f"{S.RECEIVED.value}#-"] + [
    f"{state.value}#{path.value}" for state in S if state is not S.RECEIVED for path in Path
]


def text(value: str) -> AttributeValue:
    """A string attribute value."""
    return {"S": value}


def number(value: float) -> AttributeValue:
    """A number attribute value; a float keeps its exact repr."""
    return {"N": str(value) if isinstance(value, int) else repr(float(value))}


def number_of(item: Item, name: str) -> float | None:
    """The number attribute ``name`` of ``item``, or None when it has none."""
    value = item.get(name)
    return float(value["N"]) if value is not None else None


def text_of(item: Item, name: str) -> str | None:
    """The string attribute ``name`` of ``item``, or None when it has none."""
    value = item.get(name)
    return str(value["S"]) if value is not None else None


def conversion_key(conversion_id: str) -> Item:
    """The primary key of a conversion's item."""
    return {schema.HASH_KEY: text(f"conv#{conversion_id}")}


def counter_key(state_key: str, shard: int) -> Item:
    """The primary key of one shard of the counter of a ``by_state`` partition."""
    return {schema.HASH_KEY: text(f"counter#{state_key}#{shard}")}


def state_key(state: ConversionState, path: Path | None) -> str:
    """The ``by_state`` partition a conversion in ``state`` on ``path`` sits in."""
    return f"{state.value}#{path.value if path is not None else '-'}"


def to_record(item: Item) -> ConversionRecord:
    """The record a conversion's item holds."""
    path = text_of(item, "path")
    return ConversionRecord(
        conversion_id=str(item["conversion_id"]["S"]),
        tenant_id=int(item["tenant_id"]["N"]),
        params=json.loads(item["params"]["S"]),
        state=ConversionState(item["state"]["S"]),
        path=Path(path) if path else None,
        flag_version=text_of(item, "flag_version"),
        reason=text_of(item, "reason") or "",
        job_ref=text_of(item, "job_ref"),
        intent=text_of(item, "intent"),
        fence=int(item.get("fence", {"N": "0"})["N"]),
        attempts=int(item.get("attempts", {"N": "0"})["N"]),
        received_at=number_of(item, "received_at"),
        claimed_at=number_of(item, "claimed_at"),
        dispatched_at=number_of(item, "dispatched_at"),
        finished_at=number_of(item, "finished_at"),
        updated_at=number_of(item, "updated_at"),
        work_seconds=number_of(item, "work_seconds"),
        work_started_at=number_of(item, "work_started_at"),
        slot_at=number_of(item, "slot_at"),
    )


def item_update(
    record: ConversionRecord, names: Sequence[str]
) -> tuple[dict[str, AttributeValue], list[str]]:
    """What writing the fields ``names`` of ``record`` to its item sets, and which attributes it
    removes: a field that is None has no attribute. States and paths are written by their words."""
    sets: dict[str, AttributeValue] = {}
    removes: list[str] = []
    for name in names:
        value = getattr(record, name)
        if value is None:
            removes.append(name)
        elif isinstance(value, str):
            sets[name] = text(str(value))
        elif isinstance(value, int | float):
            sets[name] = number(value)
        else:
            raise TypeError(f"field {name!r} of a conversion record is not one string or number attribute")
    return sets, removes


def seq_of(item: Item) -> int:
    """The receipt number of a conversion's item (or the minute of a decisions item)."""
    return int(item[schema.STATE_INDEX_RANGE_KEY]["N"])


def params_text(params: Mapping[str, str]) -> str:
    """A request's params as stored: canonical JSON, so equal params are equal strings."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


def conversion_item(
    request: ConversionRequest,
    seq: int,
    state: ConversionState,
    now: float,
    **extra: AttributeValue,
) -> Item:
    """A new conversion's item, received at ``now`` as receipt number ``seq``."""
    item: Item = {
        **conversion_key(request.conversion_id),
        "kind": text("conversion"),
        "conversion_id": text(request.conversion_id),
        schema.TENANT_INDEX_HASH_KEY: number(int(request.tenant_id)),
        "params": text(params_text(request.params)),
        "state": text(state.value),
        "reason": text(""),
        "fence": number(0),
        "attempts": number(0),
        schema.TENANT_INDEX_RANGE_KEY: number(now),
        "updated_at": number(now),
        schema.STATE_INDEX_RANGE_KEY: number(seq),
    }
    item.update(extra)
    return item
