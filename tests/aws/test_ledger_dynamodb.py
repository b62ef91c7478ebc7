"""The DynamoDB ledger over the wire (moto server): first-wins claims across threads and processes,
fenced transitions, no table scans, counters without scans, expiry of finished records, and the same
answers as the SQLite ledger for the same history."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from pathlib import Path as FsPath
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from controller.core.domain import ConversionRecord, ConversionRequest, ConversionState, Path
from controller.core.errors import ConflictError, LedgerError, NotFoundError
from controller.core.ports import Claim, Dispatched, Finish, Ledger
from controller.ledger.dynamodb import DynamoDBLedger, create_table, schema
from controller.ledger.sqlite import SQLiteLedger
from controller.plumbing.aws import Backoff, Retrier
from flags.snapshot import FlagSnapshot
from tests.aws.moto_world import TABLE, World

S = ConversionState
REPO = FsPath(__file__).resolve().parents[2]


def request(cid: str, tenant: int = 7) -> ConversionRequest:
    return ConversionRequest(cid, tenant, {"form": "all"})


def claim(cid: str, path: Path, tenant: int = 7, version: str | None = "v1") -> Claim:
    return Claim(request(cid, tenant), path, version, f"tenant {tenant} routed to {path.value}")


def dispatch(ledger: Ledger, path: Path, now: float, job: str = "job") -> list[ConversionRecord]:
    taken = ledger.mark_dispatching(ledger.pending_dispatch(path, 1000), "intent-1", now)
    ledger.mark_dispatched(
        [Dispatched(r.conversion_id, r.fence, f"{job}-{r.conversion_id}") for r in taken], now
    )
    return taken


# -- ownership under contention ----------------------------------------------------------------


def test_threads_sharing_one_table_never_claim_a_conversion_twice(world: World) -> None:
    """Four controllers (threads, each with its own client) race for the same 32 conversions with
    different decisions: every conversion is created by exactly one of them, and all agree on it."""
    client = world.client("dynamodb")
    create_table(client, TABLE)
    ids = [f"c-{i:03d}" for i in range(32)]
    DynamoDBLedger(client, TABLE).accept([request(c) for c in ids], 1.0)
    results: dict[int, list[Any]] = {}

    def controller(n: int) -> None:
        ledger = DynamoDBLedger(world.client("dynamodb", hooked=False), TABLE)
        path = Path.NEW if n % 2 else Path.LEGACY
        order = ids[:]
        random.Random(n).shuffle(order)
        results[n] = ledger.claim([claim(c, path, version=f"v{n}") for c in order], 2.0 + n)

    threads = [threading.Thread(target=controller, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    winners: dict[str, int] = {}
    for n, owned in results.items():
        for o in owned:
            if o.created:
                assert o.record.conversion_id not in winners, f"{o.record.conversion_id} claimed twice"
                winners[o.record.conversion_id] = n
    assert sorted(winners) == ids
    ledger = DynamoDBLedger(client, TABLE)
    for n, owned in results.items():
        for o in owned:
            stored = ledger.get(o.record.conversion_id)
            assert stored is not None
            assert stored.flag_version == f"v{winners[o.record.conversion_id]}"
            assert (o.record.path, o.record.flag_version) == (stored.path, stored.flag_version), n
    counts = ledger.counts()
    assert counts.state(S.CLAIMED) == 32
    assert counts.state(S.RECEIVED) == 0
    by_path = counts.path_state(Path.NEW, S.CLAIMED) + counts.path_state(Path.LEGACY, S.CLAIMED)
    assert by_path == 32


CLAIMER = """
import json, sys
import boto3
from controller.ledger.dynamodb import DynamoDBLedger
from controller.core.domain import ConversionRequest, Path
from controller.core.ports import Claim
url, n, ids = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
ledger = DynamoDBLedger(client, "{table}")
path = Path.NEW if n % 2 else Path.LEGACY
owned = ledger.claim([Claim(ConversionRequest(c, 7), path, f"v{{n}}", "race") for c in ids], 10.0 + n)
print(json.dumps([o.record.conversion_id for o in owned if o.created]))
"""


def test_processes_sharing_one_table_never_claim_a_conversion_twice(world: World) -> None:
    """Three controller processes claim the same 90 conversions (some never accepted, so the claim
    has to create them): each conversion is created by exactly one process."""
    client = world.client("dynamodb")
    create_table(client, TABLE)
    ids = [f"p-{i:03d}" for i in range(90)]
    DynamoDBLedger(client, TABLE).accept([request(c) for c in ids[:45]], 1.0)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLAIMER.format(table=TABLE),
                world.url,
                str(n),
                json.dumps(ids[n:] + ids[:n]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            text=True,
        )
        for n in range(3)
    ]
    created: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        created.extend(json.loads(out))
    assert sorted(created) == sorted(ids)
    assert DynamoDBLedger(client, TABLE).counts().state(S.CLAIMED) == 90


# -- every transition is fenced ------------------------------------------------------------------


def test_every_transition_is_a_conditional_write_on_state_and_fence(
    dynamo_ledger: DynamoDBLedger, world: World
) -> None:
    """Claims are conditional puts/updates on the state; every later transition names the state,
    the fence and the path in its condition, so a late or stale writer changes nothing."""
    ledger = dynamo_ledger
    ledger.accept([request("a"), request("b")], 1.0)
    ledger.claim([claim("a", Path.NEW), claim("z", Path.LEGACY)], 2.0)
    dispatch(ledger, Path.NEW, 3.0)
    record = ledger.get("a")
    assert record is not None
    ledger.mark_finished([Finish("a", record.fence, S.FAILED, "exit 1")], 4.0)
    ledger.requeue("a", 5.0)

    conditions: list[tuple[str, str]] = []
    for params in world.calls.params("TransactWriteItems"):
        for action in params["TransactItems"]:
            kind, body = next(iter(action.items()))
            key = body.get("Key", body.get("Item", {}))[schema.HASH_KEY]["S"]
            if key.startswith("conv#"):
                conditions.append((kind, body["ConditionExpression"]))
    assert ("Put", "attribute_not_exists(#pk)") in conditions  # intake, and the claim of "z"
    fenced = [c for kind, c in conditions if kind == "Update" and "fence" in c]
    assert len(fenced) == 3  # dispatching, dispatched, finished
    assert all("#state = :from" in c and "#path = :path" in c for c in fenced)
    assert all("#state = :from" in c for kind, c in conditions if kind == "Update")


def test_a_stale_fence_changes_nothing(dynamo_ledger: DynamoDBLedger) -> None:
    """A late result of an earlier attempt (an old fence) is refused; the current attempt's is recorded."""
    ledger = dynamo_ledger
    ledger.claim([claim("a", Path.NEW)], 1.0)
    first = dispatch(ledger, Path.NEW, 2.0)[0]
    assert ledger.resubmit("a", first.fence, "attempt 1 failed", 3.0)
    second = dispatch(ledger, Path.NEW, 4.0, job="again")[0]
    assert second.fence == first.fence + 1

    assert ledger.mark_finished([Finish("a", first.fence, S.SUCCEEDED, "late")], 5.0) == []
    assert ledger.mark_dispatched([Dispatched("a", first.fence, "old-job")], 5.0) == []
    assert not ledger.resubmit("a", first.fence, "late", 5.0)
    assert ledger.mark_finished([Finish("a", second.fence, S.SUCCEEDED, "s3://out")], 6.0) == ["a"]
    record = ledger.get("a")
    assert record is not None
    assert (record.state, record.reason, record.job_ref, record.attempts) == (
        S.SUCCEEDED,
        "s3://out",
        "again-a",
        2,
    )


def test_a_transition_finds_the_path_another_replica_changed(world: World, retrier: Retrier) -> None:
    """A replica that remembers an old path for a conversion (requeued and re-routed by another
    replica meanwhile) still moves it: the refused write is retried on the path the record is on."""
    client = world.client("dynamodb")
    create_table(client, TABLE)
    one = DynamoDBLedger(client, TABLE, retrier=retrier)
    two = DynamoDBLedger(world.client("dynamodb"), TABLE, retrier=retrier)
    one.claim([claim("a", Path.LEGACY)], 1.0)
    taken = dispatch(one, Path.LEGACY, 2.0)[0]
    one.mark_finished([Finish("a", taken.fence, S.FAILED, "build failed")], 3.0)
    two.requeue("a", 4.0)
    two.claim([claim("a", Path.NEW, version="v2")], 5.0)
    again = two.mark_dispatching(two.pending_dispatch(Path.NEW, 10), "intent-2", 6.0)[0]

    assert one.mark_dispatched([Dispatched("a", again.fence, "job-new")], 7.0) == ["a"]
    record = one.get("a")
    assert record is not None
    assert (record.path, record.state, record.job_ref) == (Path.NEW, S.DISPATCHED, "job-new")
    assert one.counts().path_state(Path.NEW, S.DISPATCHED) == 1
    assert one.counts().path_state(Path.LEGACY, S.FAILED) == 0


# -- reads without scans -------------------------------------------------------------------------


def test_the_hot_path_queries_indexes_and_never_scans(dynamo_ledger: DynamoDBLedger, world: World) -> None:
    """Everything the cycle and the status page read goes through GetItem, BatchGetItem or a Query
    on one of the two indexes; no Scan is ever sent."""
    ledger = dynamo_ledger
    ledger.accept([request(f"c{i}", tenant=i % 3 + 1) for i in range(30)], 1.0)
    for r in ledger.unclaimed(100):
        ledger.claim(
            [claim(r.conversion_id, Path.NEW if r.tenant_id == 1 else Path.LEGACY, r.tenant_id)], 2.0
        )
    for path in Path:
        dispatch(ledger, path, 3.0)
        ledger.mark_finished(
            [Finish(r.conversion_id, r.fence, S.SUCCEEDED) for r in ledger.in_flight(path, 100)], 4.0
        )
    ledger.intents(100.0, 100)
    ledger.counts()
    ledger.query(state=S.SUCCEEDED, limit=5)
    ledger.query(tenant_id=2, limit=5)
    ledger.by_tenant(3, 10)
    ledger.decisions_since(0.0)
    ledger.get("c1")
    ledger.try_lease("dispatch", "me", 5.0, 30.0)

    operations = {name for name, _ in world.calls.sent}
    assert "Scan" not in operations
    assert operations <= {"GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "TransactWriteItems"}
    indexes = {p["IndexName"] for p in world.calls.params("Query")}
    assert indexes == {schema.STATE_INDEX, schema.TENANT_INDEX}


def test_counts_come_from_counter_items_in_one_read(dynamo_ledger: DynamoDBLedger, world: World) -> None:
    """counts() is a single BatchGetItem of counter items, whatever the number of conversions."""
    ledger = dynamo_ledger
    ledger.accept([request(f"c{i}") for i in range(120)], 1.0)
    ledger.claim([claim(f"c{i}", Path.NEW) for i in range(70)], 2.0)
    world.calls.clear()
    counts = ledger.counts()
    assert [name for name, _ in world.calls.sent] == ["BatchGetItem"]
    assert counts.state(S.RECEIVED) == 50
    assert counts.state(S.CLAIMED) == counts.path_state(Path.NEW, S.CLAIMED) == 70


def test_finished_records_expire_after_the_retention_period(
    dynamo_ledger: DynamoDBLedger, world: World
) -> None:
    """A finished conversion carries the TTL attribute (epoch seconds, finish + retention); an
    unfinished one does not, and a requeue removes it again."""
    ledger = dynamo_ledger
    ledger.claim([claim("a", Path.NEW), claim("b", Path.NEW)], 1000.0)
    taken = {r.conversion_id: r for r in dispatch(ledger, Path.NEW, 1001.0)}
    ledger.mark_finished([Finish("a", taken["a"].fence, S.FAILED, "boom")], 1002.5)
    raw = world.client("dynamodb", hooked=False)

    def stored(cid: str) -> dict[str, Any]:
        return dict(raw.get_item(TableName=TABLE, Key={"pk": {"S": f"conv#{cid}"}})["Item"])

    assert stored("a")[schema.TTL_ATTRIBUTE] == {"N": str(int(1002.5 + 86400))}
    assert schema.TTL_ATTRIBUTE not in stored("b")
    ledger.requeue("a", 1003.0)
    assert schema.TTL_ATTRIBUTE not in stored("a")
    ttl = raw.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", schema.TTL_ATTRIBUTE)


# -- the same answers as the SQLite ledger ---------------------------------------------------------


def _history(ledger: Ledger, seed: int) -> list[Any]:
    """A random but reproducible history of intake, claims, dispatches, outcomes and requeues;
    returns everything the ledger answered along the way."""
    rng = random.Random(seed)
    answers: list[Any] = []
    now = 1_000_000.0
    ids = [f"h-{i:02d}" for i in range(40)]
    for step in range(45):
        now += rng.choice([0.5, 1.0, 30.0])
        op = rng.choice(
            ["accept", "claim", "dispatch", "release", "finish", "resubmit", "requeue", "intents"]
        )
        if op == "accept":
            batch = rng.sample(ids, 5)
            try:
                answers.append(ledger.accept([request(c, rng.randint(1, 3)) for c in batch + batch[:1]], now))
            except ConflictError as exc:  # an id known with another tenant: refused whole, the same way
                answers.append(str(exc))
        elif op == "claim":
            batch = [r.request for r in ledger.unclaimed(4)] + [request(rng.choice(ids), 2)]
            answers.append(
                ledger.claim(
                    [Claim(r, rng.choice(list(Path)), rng.choice(["v1", "v2", None]), "why") for r in batch],
                    now,
                )
            )
        elif op == "dispatch":
            path = rng.choice(list(Path))
            taken = ledger.mark_dispatching(ledger.pending_dispatch(path, 3), f"I{step}", now)
            answers.append(taken)
            answers.append(
                ledger.mark_dispatched(
                    [Dispatched(r.conversion_id, r.fence, f"j{step}") for r in taken[:2]], now
                )
            )
        elif op == "release":
            stale = ledger.intents(now + 1, 10)
            answers.append(stale)
            answers.append(ledger.release([(r.conversion_id, r.fence) for r in stale], now, "never got it"))
        elif op == "finish":
            flying = ledger.in_flight(rng.choice(list(Path)), 10)
            answers.append(flying)
            answers.append(
                ledger.mark_finished(
                    [
                        Finish(
                            r.conversion_id,
                            r.fence - (i % 3 == 2),
                            rng.choice([S.SUCCEEDED, S.FAILED]),
                            "out",
                        )
                        for i, r in enumerate(flying)
                    ],
                    now,
                )
            )
        elif op == "resubmit":
            for r in ledger.in_flight(rng.choice(list(Path)), 2):
                answers.append(ledger.resubmit(r.conversion_id, r.fence, "again", now))
        elif op == "requeue":
            cid = rng.choice(ids)
            try:
                answers.append(ledger.requeue(cid, now))
            except (ConflictError, NotFoundError) as exc:
                answers.append(type(exc).__name__)
        else:
            answers.append(ledger.intents(now - 10, 100))
    answers.append([ledger.get(c) for c in ids])
    counts = ledger.counts()
    answers.append((dict(counts.by_state), dict(counts.by_path_state)))
    answers.append(ledger.decisions_since(0))
    for filters in (
        {},
        {"state": S.CLAIMED},
        {"path": Path.NEW},
        {"tenant_id": 2},
        {"tenant_id": 1, "state": S.FAILED},
    ):
        pages, cursor = [], None
        while True:
            page, cursor = ledger.query(**filters, after=cursor, limit=3)  # type: ignore[arg-type]
            pages.append([r.conversion_id for r in page])
            if cursor is None:
                break
        answers.append(pages)
    answers.append([[r.conversion_id for r in ledger.by_tenant(t, 4)] for t in (1, 2, 3)])
    return answers


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dynamodb_answers_as_sqlite_does_for_the_same_history(
    seed: int, world: World, retrier: Retrier, tmp_path: FsPath
) -> None:
    """Driven through the same random history, the DynamoDB ledger gives the same answer to every
    call as the SQLite ledger (the reference implementation)."""
    client = world.client("dynamodb", hooked=False)
    create_table(client, TABLE)
    dynamo = DynamoDBLedger(client, TABLE, retrier=retrier)
    sqlite = SQLiteLedger(tmp_path / "ledger.db")
    try:
        expected = _history(sqlite, seed)
        got = _history(dynamo, seed)
    finally:
        sqlite.close()
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"answer {i} differs"


# -- contention and failures -----------------------------------------------------------------------


def _cancelled(codes: list[str]) -> AWSResponse:
    body = {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "message": "Transaction cancelled",
        "CancellationReasons": [{"Code": c} for c in codes],
    }
    return AWSResponse(
        "http://moto", 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(json.dumps(body))
    )


class _Raw:
    def __init__(self, text: str) -> None:
        self._data = text.encode()

    def stream(self, **_: Any) -> Any:
        yield self._data


def test_a_transaction_conflict_is_retried_with_backoff(world: World, waits: list[float]) -> None:
    """When DynamoDB cancels a transaction because another writer touched the same items, the
    ledger backs off and writes again; the claim is recorded once."""
    client = world.client("dynamodb")
    create_table(client, TABLE)
    conflicts = [2]

    def conflict_twice(**kwargs: Any) -> AWSResponse | None:
        if conflicts[0] > 0:
            conflicts[0] -= 1
            return _cancelled(["TransactionConflict", "None", "None"])
        return None

    retrier = Retrier(Backoff(attempts=3, base=0.1, cap=1.0), sleep=waits.append, rng=random.Random(1))
    ledger = DynamoDBLedger(client, TABLE, retrier=retrier)
    ledger.accept([request("a")], 0.5)
    world.calls.clear()
    client.meta.events.register("before-send.dynamodb.TransactWriteItems", conflict_twice)
    owned = ledger.claim([claim("a", Path.NEW)], 1.0)
    assert [o.created for o in owned] == [True]
    assert len(waits) == 2
    assert world.calls.count("TransactWriteItems") == 3
    assert ledger.counts().path_state(Path.NEW, S.CLAIMED) == 1


def test_a_transaction_cancelled_for_another_reason_fails_at_once(world: World, waits: list[float]) -> None:
    """A cancellation reason that is neither a refusing condition nor contention (here a validation
    error) is a LedgerError naming it, without a retry, and the claim is not recorded."""
    client = world.client("dynamodb")
    create_table(client, TABLE)
    ledger = DynamoDBLedger(client, TABLE, retrier=Retrier(sleep=waits.append))
    ledger.accept([request("a")], 0.5)
    world.calls.clear()
    client.meta.events.register(
        "before-send.dynamodb.TransactWriteItems",
        lambda **_: _cancelled(["ValidationError", "None", "None"]),
    )
    with pytest.raises(LedgerError, match=r"transaction refused \(ValidationError\)"):
        ledger.claim([claim("a", Path.NEW)], 1.0)
    assert world.calls.count("TransactWriteItems") == 1
    assert waits == []
    assert ledger.get("a").state is S.RECEIVED


def test_flag_and_leases_are_items_of_their_own(dynamo_ledger: DynamoDBLedger) -> None:
    """The last-known-good flag survives a new ledger object; a lease has one holder until it expires."""
    ledger = dynamo_ledger
    snap = FlagSnapshot("v3", True, frozenset({1, 5}), "file", 100.0, duplicates_folded=1)
    ledger.save_flag(snap)
    assert DynamoDBLedger(ledger.client, TABLE).load_flag() == snap
    assert ledger.try_lease("dispatch", "a", 10.0, 30.0)
    assert not ledger.try_lease("dispatch", "b", 20.0, 30.0)
    assert ledger.try_lease("dispatch", "a", 20.0, 30.0)
    assert ledger.try_lease("dispatch", "b", 51.0, 30.0)
