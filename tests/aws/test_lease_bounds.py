"""Calls made under the dispatch lease come back within it: a submit and all its retries fit in the
time the cycle gives it, whatever the service does (slow, lost answers, throttling)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controller.core.domain import DispatchBatch, DispatchItem, Path
from controller.core.errors import BackendUnavailableError, SubmitRejectedError
from controller.plumbing.aws import ATTEMPT_SECONDS, Backoff, ManifestStore, Retrier
from legacy_adapter.codebuild import CodeBuildBackend
from new_adapter.batch import BatchBackend
from tests.aws.faults import FaultInjector, FaultSchedule
from tests.aws.moto_world import BUCKET, JOB_DEFINITION, PROJECT, QUEUE, World


class SlowWorld:
    """Time as the calls see it: every request takes a whole attempt's time (it times out), and the
    retrier's waits pass on the same clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def install(self, client: Any) -> Any:
        def takes_its_time(**_: Any) -> None:
            self.now += ATTEMPT_SECONDS

        client.meta.events.register_first("before-send", takes_its_time)
        return client


def items(n: int) -> tuple[DispatchItem, ...]:
    return tuple(DispatchItem(f"c{i}", 5, {}, "v1", 1) for i in range(n))


@pytest.fixture
def aws(world: World) -> World:
    world.bucket()
    world.codebuild()
    world.batch()
    return world


def backends(aws: World, schedule: FaultSchedule, time: SlowWorld) -> tuple[CodeBuildBackend, BatchBackend]:
    retrier = Retrier(Backoff(attempts=5), sleep=time.sleep, rng=random.Random(1), clock=time)
    faults = FaultInjector(schedule)

    def client(service: str) -> Any:
        return faults.install(time.install(aws.client(service)))

    manifests = ManifestStore(client("s3"), BUCKET, "manifests/", retrier)
    legacy = CodeBuildBackend(client("codebuild"), manifests, project=PROJECT, retrier=retrier)
    new = BatchBackend(
        client("batch"), manifests, job_queue=QUEUE, job_definition=JOB_DEFINITION, retrier=retrier, budget=4
    )
    return legacy, new


@pytest.mark.parametrize(
    ("path", "operation", "fault"),
    [
        (Path.LEGACY, "CodeBuild.StartBuild", "lost"),
        (Path.LEGACY, "CodeBuild.StartBuild", "throttle"),
        (Path.NEW, "Batch.SubmitJob", "throttle"),
    ],
)
def test_a_submit_and_its_retries_end_within_the_time_given(aws: World, path, operation, fault) -> None:
    """StartBuild's answers lost (or the call throttled) five times in a row: retried as long as a
    whole attempt still fits, then given up, 15 s after it began at most, so the 30 s lease
    outlasts it. Before, five attempts of up to 35 s each could run on long after the lease."""
    time = SlowWorld()
    schedule = FaultSchedule()
    legacy, new = backends(aws, schedule, time)
    schedule.force(operation, *[fault] * 5)
    backend = legacy if path is Path.LEGACY else new
    with pytest.raises((BackendUnavailableError, SubmitRejectedError)):
        backend.submit(DispatchBatch("K1", path, items(2), 2, time_limit=15.0))
    assert time.now <= 15.0
    assert schedule.calls[operation] >= 1


def test_a_submit_without_time_for_one_attempt_starts_nothing(aws: World) -> None:
    time = SlowWorld()
    legacy, _ = backends(aws, FaultSchedule(), time)
    with pytest.raises(SubmitRejectedError, match="not sent"):
        legacy.submit(DispatchBatch("K2", Path.LEGACY, items(1), 1, time_limit=ATTEMPT_SECONDS - 1))
    assert aws.builds() == []
