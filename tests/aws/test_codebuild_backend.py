"""The old path's CodeBuild adapter over the wire (moto server): one build per dispatch with an S3
manifest, a token that makes a retried start harmless, per-conversion results, chunked tracking,
find after a crash, and stop."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from controller.core.domain import (
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
from controller.plumbing.aws import ManifestStore, Retrier
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus
from legacy_adapter.codebuild import CodeBuildBackend
from tests.aws.moto_world import BUCKET, PROJECT, World

S = ConversionState


class Clock:
    """A clock the test moves; it starts at the real time, as moto stamps builds and jobs with it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class NobodyMigrated:
    def read(self) -> FlagStatus:
        return FlagStatus(
            FlagSnapshot("v7", True, frozenset(), "test", 0.0), FlagState.OK, 0.0, good_since=0.0
        )


@pytest.fixture
def aws(world: World) -> World:
    world.bucket()
    world.codebuild()
    world.calls.clear()
    return world


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_backend(aws: World, retrier: Retrier, clock: Clock) -> Callable[..., CodeBuildBackend]:
    def make(**options: Any) -> CodeBuildBackend:
        store = ManifestStore(aws.client("s3"), BUCKET, "manifests/", retrier)
        options.setdefault("retrier", retrier)
        return CodeBuildBackend(aws.client("codebuild"), store, project=PROJECT, clock=clock, **options)

    return make


def items(n: int, prefix: str = "conv", version: str = "v7") -> tuple[DispatchItem, ...]:
    return tuple(DispatchItem(f"{prefix}-{i:04d}", 5, {"form": str(i)}, version, 1) for i in range(n))


def env_of(params: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["value"] for v in params["environmentVariablesOverride"]}


def write_result(aws: World, key: str, conversion_id: str, status: str, **extra: str) -> None:
    body = json.dumps({"conversion_id": conversion_id, "status": status, **extra})
    aws.client("s3", hooked=False).put_object(
        Bucket=BUCKET, Key=f"manifests/legacy/{key}/results/{conversion_id}.json", Body=body.encode()
    )


# -- starting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["", "../L1", "L1/../../x", "L1/x", "L1\\x", "L1\n", "L1\x00", "L1.x", "L" * 65], ids=ascii
)
def test_a_hostile_batch_key_is_refused_before_anything_is_written_or_started(
    aws: World, make_backend: Callable[..., CodeBuildBackend], key: str
) -> None:
    with pytest.raises(SubmitRejectedError, match="plain alphanumeric"):
        make_backend().submit(DispatchBatch(key, Path.LEGACY, items(2), 1))
    assert aws.calls.count("PutObject") == 0
    assert aws.calls.count("StartBuild") == 0
    assert aws.client("s3", hooked=False).list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_a_dispatch_is_one_build_with_its_manifest_in_s3(
    aws: World, make_backend: Callable[..., CodeBuildBackend]
) -> None:
    """All of a cycle's old-path conversions go to one StartBuild; the build gets the manifest's
    URI, the results prefix, its worker threads and the flag version as environment overrides."""
    refs = make_backend().submit(DispatchBatch("Lbatch1", Path.LEGACY, items(30), 4))
    assert aws.calls.count("StartBuild") == 1
    sent = aws.calls.params("StartBuild")[0]
    assert sent["projectName"] == PROJECT
    env = env_of(sent)
    assert env["CUTOVER_MANIFEST_URI"] == f"s3://{BUCKET}/manifests/legacy/Lbatch1/manifest.json"
    assert env["CUTOVER_RESULTS_URI"] == f"s3://{BUCKET}/manifests/legacy/Lbatch1/results/"
    assert env["CUTOVER_THREADS"] == "4"
    assert env["CUTOVER_FLAG_VERSION"] == "v7"
    stored = aws.client("s3", hooked=False).get_object(
        Bucket=BUCKET, Key="manifests/legacy/Lbatch1/manifest.json"
    )
    manifest = json.loads(stored["Body"].read())
    assert manifest["threads"] == 4
    assert [c["conversion_id"] for c in manifest["conversions"]] == [f"conv-{i:04d}" for i in range(30)]
    assert json.loads(env["CUTOVER_MANIFEST_JSON"]) == manifest
    assert {r.job_id for r in refs} == {b["id"] for b in aws.builds()}
    assert [r.conversion_id for r in refs] == [f"conv-{i:04d}" for i in range(30)]


def test_a_large_manifest_is_passed_by_uri_only(
    aws: World, make_backend: Callable[..., CodeBuildBackend]
) -> None:
    """A manifest too big for one environment variable is not inlined; the URI carries it."""
    make_backend().submit(DispatchBatch("Lbig", Path.LEGACY, items(400), 8))
    env = env_of(aws.calls.params("StartBuild")[0])
    assert "CUTOVER_MANIFEST_JSON" not in env
    assert all(len(v) <= 4096 for v in env.values())


def test_the_token_comes_from_the_manifest(aws: World, make_backend: Callable[..., CodeBuildBackend]) -> None:
    """The same batch gives the same idempotency token (so CodeBuild returns the build it already
    started); a different batch gives another."""
    backend = make_backend()
    first = backend.submit(DispatchBatch("Lsame", Path.LEGACY, items(3), 2))
    again = backend.submit(DispatchBatch("Lsame", Path.LEGACY, items(3), 2))
    other = backend.submit(DispatchBatch("Lother", Path.LEGACY, items(3, prefix="x"), 2))
    tokens = [p["idempotencyToken"] for p in aws.calls.params("StartBuild")]
    assert tokens[0] == tokens[1] != tokens[2]
    assert first == again
    assert len(aws.builds()) == 2
    assert other[0].job_id != first[0].job_id


def test_a_start_whose_answer_was_lost_is_retried_without_a_second_build(
    aws: World, make_backend: Callable[..., CodeBuildBackend], waits: list[float]
) -> None:
    """StartBuild reached CodeBuild but the answer timed out: the adapter asks again with the same
    token and gets the same build back; one build exists."""
    backend = make_backend()
    lost = [True]

    def lose_answer(**_: Any) -> None:
        if lost[0]:
            lost[0] = False
            raise ReadTimeoutError(endpoint_url="codebuild")

    backend.codebuild.meta.events.register("after-call.codebuild.StartBuild", lose_answer)
    refs = backend.submit(DispatchBatch("Llost", Path.LEGACY, items(3), 2))
    calls = aws.calls.params("StartBuild")
    assert len(calls) == 2
    assert calls[0]["idempotencyToken"] == calls[1]["idempotencyToken"]
    assert len(waits) == 1
    assert [b["id"] for b in aws.builds()] == [refs[0].job_id]


def test_a_refused_start_is_rejected_and_leaves_nothing_to_find(
    aws: World, make_backend: Callable[..., CodeBuildBackend]
) -> None:
    """A project that does not exist refuses StartBuild: nothing started, the batch is rejected,
    and find reports nothing for its intents."""
    backend = make_backend()
    backend.project = "no-such-project"
    with pytest.raises(SubmitRejectedError, match="ResourceNotFound"):
        backend.submit(DispatchBatch("Lrefused", Path.LEGACY, items(2), 1))
    backend.project = PROJECT
    assert aws.builds() == []
    assert backend.find([("conv-0000", "Lrefused")]) == {}


# -- tracking ---------------------------------------------------------------------------------------


def test_each_conversion_of_a_working_build_has_its_own_state(
    aws: World, make_backend: Callable[..., CodeBuildBackend]
) -> None:
    """In a build that is working, conversions with a result object are finished (one failed inside
    the build does not fail the others), as many as it has threads are running, the rest wait; the
    build holds min(threads, conversions left) of the budget."""
    backend = make_backend()
    refs = backend.submit(DispatchBatch("Lwork", Path.LEGACY, items(10), 3))
    aws.set_build(refs[0].job_id, "IN_PROGRESS", phase="BUILD")
    write_result(aws, "Lwork", "conv-0000", "succeeded", output="s3://out/5/conv-0000.xlsx")
    write_result(aws, "Lwork", "conv-0001", "failed", reason="tenant 5 has no forms")
    states = backend.poll(refs)
    assert states[refs[0]].status is JobStatus.SUCCEEDED
    assert states[refs[0]].output == "s3://out/5/conv-0000.xlsx"
    assert (states[refs[1]].status, states[refs[1]].reason) == (JobStatus.FAILED, "tenant 5 has no forms")
    assert [states[r].status for r in refs[2:5]] == [JobStatus.RUNNING] * 3
    assert [states[r].status for r in refs[5:]] == [JobStatus.QUEUED] * 5
    assert backend.in_use() == 3


def test_a_queued_build_holds_its_threads_and_runs_nothing_yet(
    aws: World, make_backend: Callable[..., CodeBuildBackend]
) -> None:
    """A build still in CodeBuild's queue has nothing running, but its threads are committed."""
    backend = make_backend()
    refs = backend.submit(DispatchBatch("Lqueued", Path.LEGACY, items(5), 2))
    states = backend.poll(refs)
    assert {s.status for s in states.values()} == {JobStatus.QUEUED}
    assert backend.in_use() == 2


def test_a_build_that_ended_without_a_result_fails_its_conversions_with_the_reason(
    aws: World, make_backend: Callable[..., CodeBuildBackend]
) -> None:
    """A build that FAILED (or timed out, faulted, was stopped) fails each conversion that has no
    result object, saying how the build ended; results it did write still count."""
    backend = make_backend()
    refs = backend.submit(DispatchBatch("Lfail", Path.LEGACY, items(3), 2))
    write_result(aws, "Lfail", "conv-0000", "succeeded")
    aws.set_build(refs[0].job_id, "TIMED_OUT", phase="BUILD", message="Build timed out after 480 minutes")
    states = backend.poll(refs)
    assert states[refs[0]].status is JobStatus.SUCCEEDED
    for r in refs[1:]:
        assert states[r].status is JobStatus.FAILED
        assert "TIMED_OUT" in states[r].reason
        assert "Build timed out after 480 minutes" in states[r].reason
        assert "without a result" in states[r].reason
    assert backend.in_use() == 0


def test_polling_builds_asks_for_at_most_a_hundred_at_a_time(
    aws: World, make_backend: Callable[..., CodeBuildBackend]
) -> None:
    """Conversions spread over 101 builds are tracked with two BatchGetBuilds calls (100 + 1)."""
    backend = make_backend()
    refs = [
        ref
        for n in range(101)
        for ref in backend.submit(DispatchBatch(f"Lmany{n}", Path.LEGACY, items(1, f"m{n}"), 1))
    ]
    aws.calls.clear()
    backend.poll(refs)
    assert [len(p["ids"]) for p in aws.calls.params("BatchGetBuilds")] == [100, 1]
    assert (
        backend.poll([JobRef(f"{PROJECT}:nope", "x")])[JobRef(f"{PROJECT}:nope", "x")].status
        is JobStatus.UNKNOWN
    )


def test_cancel_stops_the_build_once(aws: World, make_backend: Callable[..., CodeBuildBackend]) -> None:
    """Cancelling conversions of a build stops the build (once); its conversions then fail as
    stopped without a result."""
    backend = make_backend()
    refs = backend.submit(DispatchBatch("Lstop", Path.LEGACY, items(3), 2))
    aws.set_build(refs[0].job_id, "IN_PROGRESS", phase="BUILD")
    for ref in refs:
        backend.cancel(ref)
    assert [p["id"] for p in aws.calls.params("StopBuild")] == [refs[0].job_id]
    states = backend.poll(refs)
    assert {s.status for s in states.values()} == {JobStatus.FAILED}
    assert "STOPPED" in states[refs[0]].reason


# -- crash safety -----------------------------------------------------------------------------------


class CrashAfterSubmit(SQLiteLedger):
    """A ledger whose process dies right after the backend accepted the submission."""

    def mark_dispatched(self, items: Any, now: float) -> list[str]:
        raise KeyboardInterrupt("controller killed between submit and record")


def test_a_crash_between_start_and_record_never_starts_a_second_build(
    aws: World, make_backend: Callable[..., CodeBuildBackend], clock: Clock, tmp_path: FsPath
) -> None:
    """The controller dies after StartBuild returned but before the build was recorded. The next
    controller finds the build by the manifest named in its environment and records it; no second
    StartBuild is sent."""
    db = tmp_path / "ledger.db"
    config = CycleConfig(budget=20, intent_grace_seconds=60.0)
    crashing = CrashAfterSubmit(db)
    crashing.accept([ConversionRequest(f"conv-{i:04d}", 5) for i in range(12)], clock())
    first = Controller(
        ledger=crashing,
        flags=NobodyMigrated(),
        backends={Path.LEGACY: make_backend()},
        config=config,
        clock=clock,
    )
    with pytest.raises(KeyboardInterrupt):
        first.run_cycle()
    crashing.close()
    assert aws.calls.count("StartBuild") == 1

    clock.now += 120
    ledger = SQLiteLedger(db)
    second = Controller(
        ledger=ledger,
        flags=NobodyMigrated(),
        backends={Path.LEGACY: make_backend()},
        config=config,
        clock=clock,
    )
    report = second.run_cycle()

    assert report.reconciled == 12
    assert aws.calls.count("StartBuild") == 1
    (build,) = aws.builds()
    records, _ = ledger.query(limit=100)
    assert {r.job_ref for r in records} == {build["id"]}
    assert {r.state for r in records} == {S.DISPATCHED}
    ledger.close()


def test_inventory_lists_every_conversion_of_recent_builds(
    aws: World, make_backend: Callable[..., CodeBuildBackend], clock: Clock
) -> None:
    """Builds of the window are listed (ids, then BatchGetBuilds) and mapped to their conversions
    through the manifest their environment names."""
    backend = make_backend()
    one = backend.submit(DispatchBatch("Linv1", Path.LEGACY, items(2, "a"), 1))
    two = backend.submit(DispatchBatch("Linv2", Path.LEGACY, items(3, "b"), 1))
    fresh = make_backend()  # a restarted controller knows no build yet
    runs = fresh.inventory(clock.now - 3600)
    assert sorted((r.ref.job_id, r.ref.conversion_id) for r in runs) == sorted(
        (r.job_id, r.conversion_id) for r in one + two
    )
    assert aws.calls.params("ListBuildsForProject")[-1]["sortOrder"] == "DESCENDING"


def test_a_working_builds_results_are_listed_now_and_then_and_once_more_at_its_end(
    aws: World, make_backend: Callable[..., CodeBuildBackend], clock: Clock
) -> None:
    """Polling every cycle does not list a working build's results every cycle: at most once per
    refresh interval, and once more when the build has ended, so no result is missed."""
    backend = make_backend(results_refresh_seconds=15.0)
    refs = backend.submit(DispatchBatch("Lquiet", Path.LEGACY, items(4), 2))
    aws.set_build(refs[0].job_id, "IN_PROGRESS", phase="BUILD")
    aws.calls.clear()
    for _ in range(5):
        clock.now += 2
        backend.poll(refs)
    assert aws.calls.count("ListObjectsV2") == 1
    for r in refs:
        write_result(aws, "Lquiet", r.conversion_id, "succeeded")
    aws.set_build(refs[0].job_id, "SUCCEEDED")
    states = backend.poll(refs)
    assert {s.status for s in states.values()} == {JobStatus.SUCCEEDED}
    assert aws.calls.count("ListObjectsV2") == 2


def test_a_working_build_whose_manifest_cannot_be_read_is_still_seen_working(
    aws: World, make_backend: Callable[..., CodeBuildBackend]
) -> None:
    """CodeBuild reports the build IN_PROGRESS; its manifest is out of reach (the manifest bucket
    setting changed since it started). The build is still at work, so its conversions are not
    UNKNOWN (which would in time fail them over and run them a second time beside it), and it
    holds its threads of the budget."""
    from controller.plumbing.aws import ManifestStore, Retrier

    refs = make_backend().submit(DispatchBatch("Lmoved", Path.LEGACY, items(4), 3))
    aws.set_build(refs[0].job_id, "IN_PROGRESS", phase="BUILD")
    aws.client("s3", hooked=False).create_bucket(Bucket="cutover-manifests-2")
    moved = CodeBuildBackend(
        aws.client("codebuild"),
        ManifestStore(aws.client("s3"), "cutover-manifests-2", "manifests/", Retrier()),
        project=PROJECT,
    )
    states = moved.poll(refs)
    assert {s.status for s in states.values()} == {JobStatus.RUNNING}
    assert moved.in_use() == 3
    aws.set_build(refs[0].job_id, "SUCCEEDED", phase="COMPLETED")
    ended = moved.poll(refs)
    assert {s.status for s in ended.values()} == {JobStatus.UNKNOWN}  # its results are out of reach
    assert moved.in_use() == 0


def test_a_build_asked_to_stop_again_later_is_stopped_again(
    aws: World, make_backend: Callable[..., CodeBuildBackend], clock: Clock
) -> None:
    """A stray build is stopped until it is seen stopped: a later cancel sends StopBuild again
    (the first may have been throttled, or not taken)."""
    backend = make_backend()
    refs = backend.submit(DispatchBatch("Lagain", Path.LEGACY, items(2), 2))
    aws.set_build(refs[0].job_id, "IN_PROGRESS", phase="BUILD")
    backend.cancel(refs[0])
    aws.set_build(refs[0].job_id, "IN_PROGRESS", phase="BUILD")  # it did not take
    clock.now += 30
    backend.cancel(refs[0])
    assert [p["id"] for p in aws.calls.params("StopBuild")] == [refs[0].job_id] * 2
