"""The fault layer itself: each fault arrives in the service's own wire shape, and botocore and the
adapters' classification read it as AWS's."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from controller.plumbing.aws import http_status, outcome_unknown, throttled
from tests.aws.faults import FaultInjector, FaultSchedule
from tests.aws.moto_world import BUCKET, JOB_DEFINITION, PROJECT, QUEUE, World


@pytest.fixture
def aws(world: World) -> World:
    world.bucket()
    world.codebuild()
    world.batch()
    return world


@pytest.mark.parametrize(
    ("service", "operation", "call", "code", "status"),
    [
        (
            "codebuild",
            "CodeBuild.BatchGetBuilds",
            lambda c: c.batch_get_builds(ids=["p:1"]),
            "ThrottlingException",
            400,
        ),
        (
            "batch",
            "Batch.DescribeJobs",
            lambda c: c.describe_jobs(jobs=["j"]),
            "TooManyRequestsException",
            429,
        ),
        ("s3", "S3.PutObject", lambda c: c.put_object(Bucket=BUCKET, Key="k", Body=b"x"), "SlowDown", 503),
        (
            "dynamodb",
            "DynamoDB.GetItem",
            lambda c: c.get_item(TableName="t", Key={"pk": {"S": "a"}}),
            "ThrottlingException",
            400,
        ),
    ],
)
def test_a_throttle_is_each_services_own(aws: World, service, operation, call, code, status) -> None:
    schedule = FaultSchedule()
    client = FaultInjector(schedule).install(aws.client(service))
    schedule.force(operation, "throttle")
    with pytest.raises(ClientError) as caught:
        call(client)
    assert caught.value.response["Error"]["Code"] == code
    assert http_status(caught.value) == status
    assert throttled(caught.value)
    assert schedule.injected[f"{operation}:throttle"] == 1


def test_a_server_error_is_an_unknown_outcome(aws: World) -> None:
    schedule = FaultSchedule()
    batch = FaultInjector(schedule).install(aws.client("batch"))
    schedule.force("Batch.SubmitJob", "error")
    with pytest.raises(ClientError) as caught:
        batch.submit_job(jobName="x", jobQueue=QUEUE, jobDefinition=JOB_DEFINITION)
    assert outcome_unknown(caught.value)
    assert not batch.list_jobs(jobQueue=QUEUE)["jobSummaryList"]  # nothing reached the service


def test_a_lost_answer_took_effect(aws: World) -> None:
    schedule = FaultSchedule()
    codebuild = FaultInjector(schedule).install(aws.client("codebuild"))
    schedule.force("CodeBuild.StartBuild", "lost")
    with pytest.raises(ReadTimeoutError):
        codebuild.start_build(projectName=PROJECT)
    assert len(codebuild.list_builds_for_project(projectName=PROJECT)["ids"]) == 1


def test_a_listing_lags_behind_a_submit(aws: World) -> None:
    now = [1000.0]
    schedule = FaultSchedule(lag_seconds=5.0, clock=lambda: now[0])
    batch = FaultInjector(schedule).install(aws.client("batch"))
    job = batch.submit_job(jobName="x", jobQueue=QUEUE, jobDefinition=JOB_DEFINITION)["jobId"]

    def listed() -> set[str]:
        answer = batch.list_jobs(jobQueue=QUEUE, jobStatus="SUCCEEDED")
        return {j["jobId"] for j in answer["jobSummaryList"]}

    assert job not in listed()
    now[0] += 6
    assert job in listed()


def test_a_seeded_schedule_repeats_itself() -> None:
    def run(seed: int) -> list[str | None]:
        schedule = FaultSchedule(seed=seed, rates={"Batch.*": {"throttle": 0.3, "error": 0.1}})
        return [schedule.decide("Batch.DescribeJobs") for _ in range(50)]

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert {k for k in run(3) if k} == {"throttle", "error"}
