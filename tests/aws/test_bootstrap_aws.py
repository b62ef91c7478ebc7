"""The composition root on AWS (moto server): CUTOVER_BACKEND=aws, CUTOVER_LEDGER=dynamodb://TABLE
and CUTOVER_SNS_TOPIC_ARN wire the real adapters, the DynamoDB ledger and the signals; missing
settings are named."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

import pytest

from controller.bootstrap import build
from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.errors import ConfigError
from controller.engine.notify_aws import CloudWatchMetrics, SNSNotifier
from controller.ledger.dynamodb import DynamoDBLedger, create_table
from controller.settings import Settings
from flags.document import values_document
from flags.file_source import write_json_atomically
from legacy_adapter.codebuild import CodeBuildBackend
from new_adapter.batch import BatchBackend
from tests.aws.moto_world import BUCKET, JOB_DEFINITION, PROJECT, QUEUE, TABLE, World


@pytest.fixture
def aws_env(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    for name, value in world.env().items():
        monkeypatch.setenv(name, value)
    world.bucket()
    world.batch()
    world.codebuild()
    create_table(world.client("dynamodb", hooked=False), TABLE)
    return world


def settings(tmp_path: FsPath, **overrides: Any) -> Settings:
    flag_file = tmp_path / "flags.json"
    write_json_atomically(flag_file, values_document("migrated_tenants", True, [2]))
    values: dict[str, Any] = {
        "backend": "aws",
        "ledger": f"dynamodb://{TABLE}",
        "flag_source": "file",
        "flag_file": flag_file,
        "legacy_project": PROJECT,
        "batch_job_queue": QUEUE,
        "batch_job_definition": JOB_DEFINITION,
        "manifest_bucket": BUCKET,
        "budget": 20,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_aws_settings_wire_the_real_paths_the_dynamodb_ledger_and_the_signals(
    aws_env: World, tmp_path: FsPath
) -> None:
    """The service runs a cycle against AWS: conversions go to CodeBuild and Batch by the flag, the
    ledger is the DynamoDB table, messages go to SNS and metrics to CloudWatch, and /status can
    show that the account's Fargate quota (unknown here, so AWS's default of 6) is below what a
    budget of 20 at 2 vCPUs per job needs."""
    topic = aws_env.client("sns", hooked=False).create_topic(Name="cutover")["TopicArn"]
    service = build(settings(tmp_path, sns_topic_arn=topic))
    try:
        assert isinstance(service.ledger, DynamoDBLedger)
        assert isinstance(service.backends[Path.LEGACY], CodeBuildBackend)
        assert isinstance(service.backends[Path.NEW], BatchBackend)
        assert service.signals is not None
        assert isinstance(service.signals.notifier, SNSNotifier)
        assert isinstance(service.signals.metrics, CloudWatchMetrics)
        assert service.reconciler is not None
        assert service.housekeeping is not None

        service.ledger.accept([ConversionRequest("a", 1), ConversionRequest("b", 2)], service.clock())
        report = service.controller.run_cycle()
        assert report.dispatched == {Path.LEGACY: 1, Path.NEW: 1}
        assert len(aws_env.builds()) == 1
        assert len(aws_env.batch_jobs()) == 1
        assert service.ledger.counts().state(ConversionState.DISPATCHED) == 2
        (warning,) = service.warnings()
        assert "quota is 6 (the AWS default" in warning
        assert "40 vCPUs" in warning
    finally:
        service.close()


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"legacy_project": None}, "CUTOVER_LEGACY_PROJECT"),
        (
            {"manifest_bucket": None, "batch_job_queue": None},
            "CUTOVER_BATCH_JOB_QUEUE, CUTOVER_MANIFEST_BUCKET",
        ),
    ],
)
def test_missing_aws_settings_are_named(
    aws_env: World, tmp_path: FsPath, missing: dict[str, Any], named: str
) -> None:
    """CUTOVER_BACKEND=aws without its project, queue, definition or bucket stops at start, naming them."""
    with pytest.raises(ConfigError, match=named):
        build(settings(tmp_path, ledger=f"sqlite:///{tmp_path / 'l.db'}", **missing))


def test_settings_reject_a_topic_that_is_not_an_sns_arn(tmp_path: FsPath) -> None:
    """A mistyped CUTOVER_SNS_TOPIC_ARN is refused when the settings are read."""
    with pytest.raises(ValueError, match="SNS topic ARN"):
        settings(tmp_path, sns_topic_arn="cutover-notifications")
