"""DynamoDB ledger write cost: write request units (WRU) per conversion, through its whole life.

Runs the DynamoDB ledger against a moto server on 127.0.0.1 (the one the AWS tests use,
``tests.aws.moto_world``) and records every call it sends with a botocore hook. moto reports no
consumed capacity for ``TransactWriteItems``, so the units are worked out from those calls with
DynamoDB's published rules for on-demand tables:

- a write inside ``TransactWriteItems`` (Put, Update, Delete, ConditionCheck) costs 2 WRU per KB
  of item, rounded up; an ordinary ``PutItem`` / ``UpdateItem`` / ``DeleteItem`` 1 WRU per KB;
- each global secondary index the item is in costs 1 WRU per KB more when a write changes an
  attribute it projects, and 2 when the write changes the index's key (the old entry is deleted and
  the new one put). The ledger's two indexes project everything (``create_table``); a conversion
  is in both, and every transition changes its ``by_state`` key.

Item sizes are measured (DynamoDB's size rules, on every item of the table after each phase), so
the rounding to whole KB is checked, not assumed: the figures are exact for items under 1 KB.

Phases, on one table: ``intake`` (``accept`` in batches, ``--intake-batch``), ``route_claim``
(``Controller.run_cycle`` with no backends until every conversion is claimed) and ``the_rest``
(cycles with in-memory backends until every conversion has succeeded: dispatch intent, job
recorded, outcome). The per-row-counter reference is what the same claims would cost if each
conversion's transition moved its two counters and its decision total itself, as triggers do: three
more transactional items per conversion. Prints one JSON object.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from typing import Any

from harness import MemoryBackend, arguments, emit, goal, machine

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.engine.cycle import Controller, CycleConfig
from controller.ledger.dynamodb import DynamoDBLedger, create_table
from controller.ledger.dynamodb.schema import STATE_INDEX_HASH_KEY
from controller.plumbing.aws import Retrier
from tests.aws.moto_world import MotoServer, World
from tests.fakes import FakeFlags

TABLE = "bench-ledger"
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
INDEXES = 2  # by_state and by_tenant, both with every attribute projected
GOAL_CLAIM_WRU = 8.0  # below the per-row-counter reference's 8 table WRU per claim, by design


def _options(parser: Any) -> None:
    # moto copies the whole table for each transaction, so its time grows with the square of the
    # conversions; the units per conversion settle once the count is a multiple of the 90 a
    # transaction carries.
    parser.add_argument("--conversions", type=int, default=360)
    parser.add_argument("--tenants", type=int, default=60)
    parser.add_argument("--intake-batch", type=int, default=180)


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values (strings and numbers)."""
    return sum(len(name.encode()) + value_bytes(value) for name, value in item.items())


def value_bytes(value: dict[str, Any]) -> int:
    (kind, v), *_ = value.items()
    if kind == "S":
        return len(str(v).encode())
    if kind == "N":
        digits = str(v).lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_bytes(x) + 1 for k, x in v.items())
    if kind == "L":
        return 3 + sum(value_bytes(x) + 1 for x in v)
    return len(str(v).encode())


def largest_kb(client: Any) -> dict[str, int]:  # on a client whose calls are not counted
    """The largest item of each kind in the table, in whole KB (what a write of it is charged)."""
    out: dict[str, int] = {}
    for page in client.get_paginator("scan").paginate(TableName=TABLE):
        for item in page["Items"]:
            kind = kind_of(item["pk"]["S"])
            out[kind] = max(out.get(kind, 0), math.ceil(item_bytes(item) / 1024))
    return out


def kind_of(pk: str) -> str:
    return pk.split("#", 1)[0] if "#" in pk else pk


def units(sent: list[tuple[str, dict[str, Any]]], kb: dict[str, int]) -> dict[str, Any]:
    """WRU of the writes ``sent``, for the table and the indexes, and the items written by kind."""
    table = indexes = 0
    items: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for operation, params in sent:
        calls[operation] += 1
        if operation not in WRITES:
            continue
        if operation == "TransactWriteItems":
            actions = [(kind, body) for action in params["TransactItems"] for kind, body in action.items()]
            rate = 2
        else:
            actions = [(operation.removesuffix("Item"), params)]
            rate = 1
        for kind, body in actions:
            key = body.get("Item") or body.get("Key") or {}
            what = kind_of(key["pk"]["S"])
            size = kb.get(what, 1)
            items[what] += 1
            table += rate * size
            if what == "conv" and kind != "ConditionCheck":
                indexes += index_units(kind, body) * size
    return {
        "calls": dict(sorted(calls.items())),
        "items": dict(sorted(items.items())),
        "largest_item_kb": dict(sorted(kb.items())),
        "table": table,
        "indexes": indexes,
    }


def index_units(kind: str, body: dict[str, Any]) -> int:
    """Index writes of one conversion write: a new item enters both indexes; a transition moves
    its ``by_state`` entry (delete and put) and rewrites its ``by_tenant`` one."""
    if kind == "Put":
        return INDEXES
    names = body.get("ExpressionAttributeNames", {}).values()
    moves_state = STATE_INDEX_HASH_KEY in names
    return (2 if moves_state else 1) + (INDEXES - 1)


def per_conversion(phase: dict[str, Any], n: int) -> dict[str, float]:
    return {
        "table_wru": round(phase["table"] / n, 3),
        "index_wru": round(phase["indexes"] / n, 3),
        "total_wru": round((phase["table"] + phase["indexes"]) / n, 3),
        "write_calls": round(sum(c for op, c in phase["calls"].items() if op in WRITES) / n, 4),
        "counter_and_decision_items": round(
            sum(c for k, c in phase["items"].items() if k in ("counter", "decisions")) / n, 4
        ),
    }


def main() -> None:
    args = arguments(__doc__, _options)
    if args.smoke:
        args.conversions, args.tenants, args.intake_batch = 90, 10, 45
    n = args.conversions
    server = MotoServer()
    world = World(server)
    rng = random.Random(3)
    requests = [
        ConversionRequest(f"conv-{i:06d}", rng.randint(1, args.tenants), {"report": "monthly"})
        for i in range(n)
    ]
    flags = FakeFlags.none()
    flags.publish("7", set(range(1, args.tenants + 1, 2)))
    phases: dict[str, dict[str, Any]] = {}
    try:
        client, reader = world.client("dynamodb"), world.client("dynamodb", hooked=False)
        create_table(reader, TABLE)
        ledger = DynamoDBLedger(client, TABLE, retrier=Retrier(sleep=lambda _: None))
        world.calls.clear()
        for i in range(0, n, args.intake_batch):
            ledger.accept(requests[i : i + args.intake_batch], time.time())
        phases["intake"] = units(world.calls.sent, largest_kb(reader))
        world.calls.clear()
        controller = Controller(ledger=ledger, flags=flags, backends={}, config=CycleConfig(max_claims=n))
        cycles = 0
        while ledger.counts().state(ConversionState.RECEIVED):
            controller.run_cycle()
            cycles += 1
        phases["route_claim"] = units(world.calls.sent, largest_kb(reader)) | {"cycles": cycles}
        claimed = ledger.counts()
        world.calls.clear()
        backends = {p: MemoryBackend(p) for p in Path}
        controller = Controller(
            ledger=ledger,
            flags=flags,
            backends=dict(backends),
            # A long lease: moto takes seconds over a batch that DynamoDB writes in milliseconds, and
            # a dispatch that ran short would be released and tried again, at a cost of its own.
            config=CycleConfig(budget=n, max_claims=n, legacy_max_threads=n, lease_seconds=3600),
        )
        cycles = 0
        while ledger.counts().state(ConversionState.SUCCEEDED) < n and cycles < 50:
            controller.run_cycle()
            for b in backends.values():
                b.tick()
            cycles += 1
        phases["the_rest"] = units(world.calls.sent, largest_kb(reader)) | {"cycles": cycles}
        final = ledger.counts()
        ledger.close()
    finally:
        server.stop()
    figures = {name: per_conversion(phase, n) for name, phase in phases.items()}
    life = sum(f["total_wru"] for f in figures.values())
    claim_table = figures["route_claim"]["table_wru"]
    emit(
        {
            "benchmark": "dynamodb_writes",
            "smoke": args.smoke,
            "machine": machine(),
            "inputs": {"conversions": n, "tenants": args.tenants, "intake_batch": args.intake_batch},
            "phases": phases,
            "per_conversion": figures,
            "life_total_wru_per_conversion": round(life, 3),
            "per_row_counters_reference": {
                "route_claim_table_wru": round(claim_table + 3 * 2, 3),
                "note": "the same claims with each conversion moving two counters and one decision total",
            },
            "goals": {"route_claim_table_wru_per_conversion": goal(claim_table, GOAL_CLAIM_WRU, "<")},
            "checks": {
                "all_claimed": claimed.state(ConversionState.CLAIMED) == n,
                "all_succeeded": final.state(ConversionState.SUCCEEDED) == n,
                "new_path_count_matches_flag": claimed.path_state(Path.NEW, ConversionState.CLAIMED)
                == sum(1 for r in requests if r.tenant_id % 2 == 1),
            },
        }
    )


if __name__ == "__main__":
    main()
