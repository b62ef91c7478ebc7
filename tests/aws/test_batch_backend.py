"""The new path's Batch adapter over the wire (moto server): array jobs instead of thousands of
submits, backoff on throttling, chunked tracking, find after a crash, cancel vs terminate, and
capacity set through the compute environment's maxvCpus."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from hypothesis import example, given, settings
from hypothesis import strategies as st

from controller.core.domain import (
    CONVERSION_ID_PATTERN,
    ConversionRequest,
    ConversionState,
    DispatchBatch,
    DispatchItem,
    JobRef,
    JobStatus,
    Path,
)
from controller.core.errors import SubmitRejectedError
from controller.engine.cycle import Controller, CycleConfig
from controller.ledger.sqlite import SQLiteLedger
from controller.plumbing.aws import Backoff, ManifestStore, Retrier
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus
from new_adapter.batch import BatchBackend, array_job_name, single_job_name
from tests.aws.moto_world import ACCOUNT, BUCKET, COMPUTE_ENVIRONMENT, JOB_DEFINITION, QUEUE, REGION, World

S = ConversionState
BATCH_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class Clock:
    """A clock the test moves; it starts at the real time, as moto stamps builds and jobs with it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class MigratedTenants:
    """A flag reader that always answers with one valid, enabled flag version."""

    def __init__(self, *tenants: int) -> None:
        self.snapshot = FlagSnapshot("v7", True, frozenset(tenants), "test", 0.0)

    def read(self) -> FlagStatus:
        return FlagStatus(self.snapshot, FlagState.OK, 0.0, good_since=0.0)


@pytest.fixture
def aws(world: World) -> World:
    world.bucket()
    world.batch()
    world.calls.clear()
    return world


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_backend(aws: World, retrier: Retrier, clock: Clock) -> Callable[..., BatchBackend]:
    def make(**options: Any) -> BatchBackend:
        store = ManifestStore(aws.client("s3"), BUCKET, "manifests/", retrier)
        options.setdefault("retrier", retrier)
        return BatchBackend(
            aws.client("batch"),
            store,
            job_queue=QUEUE,
            job_definition=JOB_DEFINITION,
            clock=clock,
            **options,
        )

    return make


def items(n: int, tenant: int = 3, prefix: str = "conv") -> tuple[DispatchItem, ...]:
    return tuple(DispatchItem(f"{prefix}-{i:05d}", tenant, {"form": str(i)}, "v7", 1) for i in range(n))


def manifest(aws: World, key: str) -> dict[str, Any]:
    body = aws.client("s3", hooked=False).get_object(Bucket=BUCKET, Key=f"manifests/new/{key}/manifest.json")
    return dict(json.loads(body["Body"].read()))


def env_of(params: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in params["containerOverrides"]["environment"]}


def submit_in_moto(n: int) -> list[str]:
    """Jobs made directly in moto's in-process backend (set-up only; the adapter polls them over the wire)."""
    from moto.batch_simple.models import batch_simple_backends

    backend = batch_simple_backends[ACCOUNT][REGION]
    return [backend.submit_job(f"setup-{i}", JOB_DEFINITION, QUEUE, {})[1] for i in range(n)]


# -- submitting ------------------------------------------------------------------------------------


def test_ten_thousand_new_path_conversions_in_one_cycle_cost_one_submit_job(
    aws: World, make_backend: Callable[..., BatchBackend], clock: Clock, tmp_path: FsPath
) -> None:
    """A cycle that routes 10,000 conversions to the new path submits them as one array job
    (at most two SubmitJob calls are allowed); each recorded child index points at its own
    conversion in the array's manifest, as the job containers will read it."""
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    controller = Controller(
        ledger=ledger,
        flags=MigratedTenants(3),
        backends={Path.NEW: make_backend()},
        # One dispatch may carry all 10,000 (CUTOVER_MAX_BATCH_ITEMS; the default is 1,000).
        config=CycleConfig(budget=20, max_claims=20_000, max_batch_items=10_000),
        clock=clock,
    )
    ledger.accept([ConversionRequest(f"conv-{i:05d}", 3) for i in range(10_000)], clock())
    report = controller.run_cycle()

    assert report.dispatched == {Path.NEW: 10_000}
    assert aws.calls.count("SubmitJob") <= 2
    sent = aws.calls.params("SubmitJob")[0]
    assert sent["arrayProperties"] == {"size": 10_000}
    env = env_of(sent)
    key = env["CUTOVER_BATCH"]
    assert env["CUTOVER_MANIFEST_URI"] == f"s3://{BUCKET}/manifests/new/{key}/manifest.json"
    assert env["CUTOVER_MANIFEST_OFFSET"] == "0"
    conversions = manifest(aws, key)["conversions"]
    records, _ = ledger.query(state=S.DISPATCHED, limit=10_000)
    assert len(records) == 10_000
    parent = {r.job_ref.rsplit(":", 1)[0] for r in records if r.job_ref}
    assert len(parent) == 1
    for record in random.Random(5).sample(records, 200):
        index = int((record.job_ref or "").rsplit(":", 1)[1])
        assert conversions[index]["conversion_id"] == record.conversion_id
        assert conversions[index]["fence"] == record.fence
    assert len([j for j in aws.batch_jobs() if ":" in j.job_id]) == 10_000
    ledger.close()


def test_more_than_ten_thousand_conversions_are_split_into_array_jobs_of_at_most_ten_thousand(
    aws: World, make_backend: Callable[..., BatchBackend]
) -> None:
    """10,001 conversions become one array of 10,000 and a single job; the single job's child
    offset points past the array's, and every conversion gets one reference."""
    refs = make_backend().submit(DispatchBatch("Nbig", Path.NEW, items(10_001), 0))
    assert aws.calls.count("SubmitJob") == 2
    array, single = aws.calls.params("SubmitJob")
    assert array["jobName"] == array_job_name("Nbig", 0)
    assert "arrayProperties" not in single
    assert env_of(single)["CUTOVER_MANIFEST_OFFSET"] == "10000"
    assert env_of(single)["CUTOVER_CONVERSION_ID"] == "conv-10000"
    assert [r.conversion_id for r in refs] == [f"conv-{i:05d}" for i in range(10_001)]
    assert len({r.job_id for r in refs}) == 10_001


def test_a_single_conversion_is_one_named_and_tagged_job(
    aws: World, make_backend: Callable[..., BatchBackend]
) -> None:
    """One conversion is one job, named from its id, with the conversion in its environment and
    tags carrying conversion id, tenant id and flag version."""
    item = DispatchItem("inv.2026-04.tenant_42", 42, {"form": "orders"}, "v7", 3)
    (ref,) = make_backend().submit(DispatchBatch("Nabc123", Path.NEW, (item,), 0))
    sent = aws.calls.params("SubmitJob")[0]
    assert sent["jobName"] == single_job_name("Nabc123", item.conversion_id)
    env = env_of(sent)
    assert env["CUTOVER_CONVERSION_ID"] == "inv.2026-04.tenant_42"
    assert env["CUTOVER_TENANT_ID"] == "42"
    assert json.loads(env["CUTOVER_PARAMS"]) == {"form": "orders"}
    assert env["CUTOVER_FENCE"] == "3"
    assert (
        env["CUTOVER_RESULT_URI"] == f"s3://{BUCKET}/manifests/new/Nabc123/results/inv.2026-04.tenant_42.json"
    )
    tags = aws.batch_job(ref.job_id).backend.list_tags_for_resource(aws.batch_job(ref.job_id).arn)
    assert tags == {
        "cutover:batch": "Nabc123",
        "cutover:conversion-id": "inv.2026-04.tenant_42",
        "cutover:tenant-id": "42",
        "cutover:flag-version": "v7",
    }


@settings(max_examples=100, deadline=None)
@given(
    key=st.from_regex(r"\A[A-Za-z0-9]{1,64}\Z"),  # every key checked_key lets through
    ids=st.lists(st.from_regex(CONVERSION_ID_PATTERN, fullmatch=True), min_size=2, max_size=8, unique=True),
    offset=st.integers(0, 10**12),
)
@example(key="N" * 64, ids=["x" * 128, "x" * 127 + "y"], offset=10**12)
def test_job_names_are_valid_batch_names_and_never_collide(key: str, ids: list[str], offset: int) -> None:
    """Every conversion id the intake accepts gives a valid Batch job name of at most 128
    characters, and different ids in one batch never share a name (even 'a.b' and 'a_b')."""
    names = [single_job_name(key, c) for c in ids]
    assert all(BATCH_JOB_NAME.fullmatch(n) for n in names)
    assert len(set(names)) == len(ids)
    assert all(n.startswith(key + "-") for n in names)  # found again by the JOB_NAME filter "{key}-*"
    assert single_job_name(key, "a.b") != single_job_name(key, "a_b")
    assert BATCH_JOB_NAME.fullmatch(array_job_name(key, offset))


HOSTILE_KEYS = [
    "",
    "../N1",
    "N1/../../x",
    "N1/x",
    "N1\\x",
    "N1\n",
    "N1\x00",
    "N1-x",
    "N1.x",
    "\uff2e1",
    "N" * 65,
]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=ascii)
def test_a_hostile_batch_key_is_refused_before_anything_is_written_or_submitted(
    aws: World, make_backend: Callable[..., BatchBackend], key: str
) -> None:
    with pytest.raises(SubmitRejectedError, match="plain alphanumeric"):
        make_backend().submit(DispatchBatch(key, Path.NEW, items(2), 0))
    assert aws.calls.count("PutObject") == 0
    assert aws.calls.count("SubmitJob") == 0
    assert aws.client("s3", hooked=False).list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


# -- throttling ------------------------------------------------------------------------------------


def _throttled() -> AWSResponse:
    class Raw:
        def stream(self, **_: Any) -> Any:
            yield json.dumps({"__type": "TooManyRequestsException", "message": "Too Many Requests"}).encode()

    return AWSResponse("http://moto", 429, {"Content-Type": "application/json"}, Raw())


def throttle(client: Any, times: int) -> None:
    left = [times]

    def answer(**_: Any) -> AWSResponse | None:
        if left[0] > 0:
            left[0] -= 1
            return _throttled()
        return None

    client.meta.events.register("before-send.batch.SubmitJob", answer)


def test_a_throttled_submit_backs_off_with_jitter_and_submits_once(
    aws: World, make_backend: Callable[..., BatchBackend]
) -> None:
    """SubmitJob answered 429 TooManyRequestsException is tried again after growing, jittered
    waits (injected, nothing sleeps), and only one job comes of it."""
    waits: list[float] = []
    retrier = Retrier(Backoff(attempts=5, base=0.5, cap=8.0), sleep=waits.append, rng=random.Random(11))
    backend = make_backend(retrier=retrier)
    throttle(backend.batch, 3)
    backend.submit(DispatchBatch("Nthrottled", Path.NEW, items(5), 0))
    assert aws.calls.count("SubmitJob") == 4
    assert len(waits) == 3
    assert all(0 <= w <= 0.5 * 2**i for i, w in enumerate(waits))
    assert len(set(waits)) == 3  # jittered, not a fixed schedule
    assert len([j for j in aws.batch_jobs() if ":" not in j.job_id]) == 1


def test_a_submit_throttled_past_the_retries_is_rejected_and_nothing_runs(
    aws: World, make_backend: Callable[..., BatchBackend]
) -> None:
    """When the throttling outlasts the retries the batch is refused as a whole (nothing started),
    and find then reports nothing, so the conversions go back to be dispatched again."""
    backend = make_backend()
    throttle(backend.batch, 99)
    with pytest.raises(SubmitRejectedError, match="TooManyRequests"):
        backend.submit(DispatchBatch("Nrefused", Path.NEW, items(3), 0))
    assert aws.batch_jobs() == []
    assert backend.find([("conv-00000", "Nrefused")]) == {}


# -- tracking --------------------------------------------------------------------------------------


def test_polling_a_thousand_in_flight_jobs_takes_ten_describe_calls(
    aws: World, make_backend: Callable[..., BatchBackend]
) -> None:
    """1,000 single jobs in flight are described 100 at a time: 10 DescribeJobs calls; queued,
    starting, running and failed jobs come back as QUEUED, RUNNING and FAILED with the reason."""
    job_ids = submit_in_moto(1000)
    for job_id in job_ids[:15]:
        aws.set_job(job_id, "RUNNING")
    for job_id in job_ids[15:20]:
        aws.set_job(job_id, "STARTING")
    for job_id in job_ids[20:50]:
        aws.set_job(job_id, "RUNNABLE")
    aws.set_job(job_ids[50], "FAILED", reason="Essential container in task exited")
    backend = make_backend()
    refs = [JobRef(j, f"c{i}") for i, j in enumerate(job_ids)]
    aws.calls.clear()

    states = backend.poll(refs)

    assert aws.calls.count("DescribeJobs") == 10
    assert [len(p["jobs"]) for p in aws.calls.params("DescribeJobs")] == [100] * 10
    statuses = [states[r].status for r in refs]
    assert statuses[:20] == [JobStatus.RUNNING] * 20
    assert statuses[20:50] == [JobStatus.QUEUED] * 30
    assert states[refs[50]].status is JobStatus.FAILED
    assert "Essential container in task exited" in states[refs[50]].reason
    assert statuses[51:] == [JobStatus.SUCCEEDED] * 949
    assert backend.in_use() == 20
    assert backend.poll([JobRef("no-such-job", "x")])[JobRef("no-such-job", "x")].status is JobStatus.UNKNOWN


def test_array_children_are_listed_only_when_the_parent_reports_them(
    aws: World, make_backend: Callable[..., BatchBackend], clock: Clock
) -> None:
    """An array's children are read from ListJobs by status only for the statuses its parent's
    summary counts; an unchanged summary costs one DescribeJobs and nothing else, and a parent
    that succeeded answers for all its children."""
    backend = make_backend()
    refs = backend.submit(DispatchBatch("Narray", Path.NEW, items(40), 0))
    parent = refs[0].job_id.split(":")[0]
    aws.set_job(parent, "PENDING")
    for r in refs[:3]:
        aws.set_job(r.job_id, "FAILED", reason="Essential container in task exited")
    for r in refs[3:8]:
        aws.set_job(r.job_id, "RUNNING")
    for r in refs[8:30]:
        aws.set_job(r.job_id, "RUNNABLE")
    aws.calls.clear()

    states = backend.poll(refs)
    assert [states[r].status for r in refs[:3]] == [JobStatus.FAILED] * 3
    assert "Essential container" in states[refs[0]].reason
    assert [states[r].status for r in refs[3:8]] == [JobStatus.RUNNING] * 5
    assert [states[r].status for r in refs[8:30]] == [JobStatus.QUEUED] * 22
    assert [states[r].status for r in refs[30:]] == [JobStatus.SUCCEEDED] * 10
    assert states[refs[30]].output == f"s3://{BUCKET}/manifests/new/Narray/results/conv-00030.json"
    assert backend.in_use() == 5
    listed = sorted(p["jobStatus"] for p in aws.calls.params("ListJobs"))
    assert listed == ["FAILED", "RUNNING", "SUCCEEDED"]
    assert aws.calls.count("DescribeJobs") == 1

    aws.calls.clear()
    clock.now += 1
    backend.poll(refs[3:30])
    assert [name for name, _ in aws.calls.sent] == ["DescribeJobs"]

    for r in refs[3:30]:
        aws.set_job(r.job_id, "SUCCEEDED")
    for r in refs[:3]:
        aws.set_job(r.job_id, "SUCCEEDED")
    aws.calls.clear()
    states = backend.poll(refs[3:30])
    assert {s.status for s in states.values()} == {JobStatus.SUCCEEDED}
    assert [name for name, _ in aws.calls.sent] == ["DescribeJobs"]


# -- crash safety ----------------------------------------------------------------------------------


class CrashAfterSubmit(SQLiteLedger):
    """A ledger whose process dies right after the backend accepted the submission."""

    def mark_dispatched(self, items: Any, now: float) -> list[str]:
        raise KeyboardInterrupt("controller killed between submit and record")


@pytest.mark.parametrize("conversions", [1, 25])
def test_a_crash_between_submit_and_record_never_submits_a_second_job(
    conversions: int,
    aws: World,
    make_backend: Callable[..., BatchBackend],
    clock: Clock,
    tmp_path: FsPath,
) -> None:
    """The controller dies after SubmitJob returned but before the job was recorded. The next
    controller (new process, same ledger) finds the job through its deterministic name and
    records it; no second SubmitJob is ever sent."""
    db = tmp_path / "ledger.db"
    config = CycleConfig(budget=20, intent_grace_seconds=60.0)
    crashing = CrashAfterSubmit(db)
    crashing.accept([ConversionRequest(f"conv-{i:05d}", 3) for i in range(conversions)], clock())
    first = Controller(
        ledger=crashing,
        flags=MigratedTenants(3),
        backends={Path.NEW: make_backend()},
        config=config,
        clock=clock,
    )
    with pytest.raises(KeyboardInterrupt):
        first.run_cycle()
    crashing.close()
    assert aws.calls.count("SubmitJob") == 1

    clock.now += 120
    ledger = SQLiteLedger(db)
    second = Controller(
        ledger=ledger,
        flags=MigratedTenants(3),
        backends={Path.NEW: make_backend()},
        config=config,
        clock=clock,
    )
    report = second.run_cycle()

    assert report.reconciled == conversions
    assert aws.calls.count("SubmitJob") == 1
    jobs = [j for j in aws.batch_jobs() if ":" not in j.job_id]
    assert len(jobs) == 1
    records, _ = ledger.query(limit=100)
    assert all(r.state in (S.DISPATCHED, S.SUCCEEDED) for r in records)
    assert {(r.job_ref or "").split(":")[0] for r in records} == {jobs[0].job_id}
    ledger.close()


# -- cancel ----------------------------------------------------------------------------------------


def test_cancel_before_running_and_terminate_after(
    aws: World, make_backend: Callable[..., BatchBackend]
) -> None:
    """A waiting job is cancelled (CancelJob), a running one terminated (TerminateJob), a finished
    one left alone."""
    backend = make_backend()
    waiting, running, done = (
        backend.submit(DispatchBatch(f"Ncancel{i}", Path.NEW, items(1, prefix=f"c{i}"), 0))[0]
        for i in range(3)
    )
    aws.set_job(waiting.job_id, "RUNNABLE")
    aws.set_job(running.job_id, "RUNNING")
    aws.calls.clear()
    for ref in (waiting, running, done):
        backend.cancel(ref)
    assert [p["jobId"] for p in aws.calls.params("CancelJob")] == [waiting.job_id]
    assert [p["jobId"] for p in aws.calls.params("TerminateJob")] == [running.job_id]
    assert "c0-00000" in aws.calls.params("CancelJob")[0]["reason"]


# -- capacity --------------------------------------------------------------------------------------


def test_capacity_is_max_vcpus_from_the_job_definitions_vcpus_never_below_what_runs(
    aws: World, make_backend: Callable[..., BatchBackend]
) -> None:
    """maxvCpus = slots x 2 vCPUs (read from the job definition), sent only when it changes, and
    never below the vCPUs of the jobs running now."""
    backend = make_backend()
    assert backend.set_capacity(7) == 7
    assert backend.set_capacity(7) == 7
    updates = aws.calls.params("UpdateComputeEnvironment")
    assert [(u["computeEnvironment"], u["computeResources"]) for u in updates] == [
        (COMPUTE_ENVIRONMENT, {"maxvCpus": 14})
    ]
    refs = backend.submit(DispatchBatch("Nrunning", Path.NEW, items(9), 0))
    for r in refs[:5]:
        aws.set_job(r.job_id, "RUNNING")
    aws.set_job(refs[0].job_id.split(":")[0], "PENDING")
    backend.poll(refs)
    assert backend.in_use() == 5
    assert backend.set_capacity(2) == 5
    assert aws.calls.params("UpdateComputeEnvironment")[-1]["computeResources"] == {"maxvCpus": 10}
    assert backend.set_capacity(0) == 5
    assert aws.calls.count("UpdateComputeEnvironment") == 2


def test_capacity_left_to_terraform_makes_the_cycle_hold_back(
    aws: World, make_backend: Callable[..., BatchBackend]
) -> None:
    """With CUTOVER_MANAGE_MAX_VCPUS=false the adapter never touches the compute environment and
    answers None, so the cycle keeps dispatched work within the share itself."""
    backend = make_backend(manage_max_vcpus=False)
    assert backend.set_capacity(5) is None
    assert aws.calls.count("UpdateComputeEnvironment") == 0


def test_fractional_vcpus_that_cannot_cap_exactly_leave_the_hold_back_to_the_cycle(
    world: World, retrier: Retrier, clock: Clock
) -> None:
    """At 0.5 vCPU per job an odd share is not a whole number of vCPUs: maxvCpus is rounded up and
    the adapter answers None, so the cycle holds back instead of letting one job too many run."""
    world.bucket()
    world.batch(vcpus="0.5")
    backend = BatchBackend(
        world.client("batch"),
        ManifestStore(world.client("s3"), BUCKET, "manifests/", retrier),
        job_queue=QUEUE,
        job_definition=JOB_DEFINITION,
        retrier=retrier,
        clock=clock,
    )
    assert backend.set_capacity(4) == 4
    assert backend.set_capacity(3) is None
    assert [u["computeResources"]["maxvCpus"] for u in world.calls.params("UpdateComputeEnvironment")] == [2]


def test_status_warns_when_the_fargate_quota_is_below_what_the_budget_needs(
    make_backend: Callable[..., BatchBackend],
) -> None:
    """Budget 20 at 2 vCPUs per job needs 40 vCPUs; an account quota of 6 gets a warning that says
    how many jobs can really run; a quota of 64 gets none."""
    low = make_backend(budget=20, quota_reader=lambda: 6.0)
    low.set_capacity(10)
    (warning,) = low.warnings()
    assert "quota is 6" in warning
    assert "40 vCPUs" in warning
    assert "at most 3 new-path jobs" in warning
    assert low.capacity.quota_source == "Service Quotas"

    high = make_backend(budget=20, fargate_quota=64.0)
    high.set_capacity(10)
    assert high.warnings() == []


# -- reconciliation inventory ----------------------------------------------------------------------


def test_inventory_lists_every_conversion_in_recent_jobs(
    aws: World, make_backend: Callable[..., BatchBackend], clock: Clock
) -> None:
    """Jobs created in the window are listed with a filter (100 a page) and mapped back to their
    conversions through the manifests: singles with their status, array children by their parent."""
    backend = make_backend()
    single = backend.submit(DispatchBatch("Nsingle", Path.NEW, items(1, prefix="one"), 0))
    array = backend.submit(DispatchBatch("Nmany", Path.NEW, items(5, prefix="many"), 0))
    aws.set_job(array[0].job_id.split(":")[0], "PENDING")
    runs = backend.inventory(clock.now - 3600)
    by_id = {r.ref.conversion_id: r for r in runs}
    assert set(by_id) == {"one-00000"} | {f"many-{i:05d}" for i in range(5)}
    assert by_id["one-00000"].ref == single[0]
    assert by_id["one-00000"].status is JobStatus.SUCCEEDED
    assert {by_id[r.conversion_id].ref for r in array} == set(array)
    assert {by_id[r.conversion_id].status for r in array} == {JobStatus.UNKNOWN}
    assert all(p["filters"][0]["name"] == "AFTER_CREATED_AT" for p in aws.calls.params("ListJobs"))
