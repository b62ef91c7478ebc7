"""Signals over the wire (moto server): one readable SNS message per terminal failure and per flag
change, a summary instead of a storm, and per-minute CloudWatch values with the names and the
dimension the Terraform alarms use."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.gates import Baseline, GateReport, GateVerdict, GroupGate, PathEvidence, combine
from controller.engine.notify import Signals
from controller.engine.notify_aws import METRICS_PER_CALL, CloudWatchMetrics, SNSNotifier
from controller.plumbing.aws import Retrier
from flags.lkg import FlagChange
from flags.snapshot import FlagSnapshot, FlagState
from tests.aws.moto_world import World

S = ConversionState
NOW = 1_800_000_030.0  # thirty seconds into a minute


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Inbox:
    """An SQS queue subscribed to the topic: what a chat integration would receive."""

    def __init__(self, world: World) -> None:
        self.sns = world.client("sns")
        self.sqs = world.client("sqs", hooked=False)
        self.topic = self.sns.create_topic(Name="cutover-notifications")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="chat")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=arn)

    def messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return out
            out.extend(json.loads(m["Body"]) for m in got)
            for m in got:
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture
def inbox(world: World) -> Inbox:
    return Inbox(world)


def failed(cid: str, path: Path = Path.NEW, tenant: int = 42) -> ConversionRecord:
    return ConversionRecord(
        conversion_id=cid,
        tenant_id=tenant,
        params={},
        state=S.DISPATCHED,
        path=path,
        flag_version="v7",
        job_ref=f"job-{cid}",
        attempts=2,
    )


def signals_for(world: World, inbox: Inbox, clock: Clock, **options: Any) -> Signals:
    quiet = Retrier(sleep=lambda _: None)
    return Signals(
        SNSNotifier(inbox.sns, inbox.topic, quiet),
        CloudWatchMetrics(world.client("cloudwatch"), "Cutover", quiet),
        clock,
        **options,
    )


def test_a_terminal_failure_is_one_short_readable_message(world: World, inbox: Inbox) -> None:
    """A conversion that failed for good is announced once: which conversion, tenant, path,
    attempts, reason, flag version, job, and how to requeue it."""
    clock = Clock()
    signals = signals_for(world, inbox, clock)
    signals.conversion_finished(failed("inv-7"), S.FAILED, "Essential container in task exited; exit code 3")
    signals.conversion_finished(failed("inv-8"), S.SUCCEEDED, "s3://out/inv-8.json")
    signals.tick(clock.now)

    (message,) = inbox.messages()
    assert message["Subject"] == "cutover: conversion inv-7 failed on new"
    body = message["Message"]
    assert "Conversion inv-7 of tenant 42 failed on the new path (AWS Batch) after 2 attempts." in body
    assert "Reason: Essential container in task exited; exit code 3" in body
    assert "Flag version: v7; job: job-inv-7" in body
    assert "cutover requeue inv-7" in body
    assert len(body) < 1000


def test_a_storm_of_failures_sends_a_few_messages_and_one_summary(world: World, inbox: Inbox) -> None:
    """A thousand failures within the window: the first five are announced one by one, the rest in
    one summary when the window closes (counts per path, the commonest reasons)."""
    clock = Clock()
    signals = signals_for(world, inbox, clock, burst=5, window_seconds=300.0)
    for i in range(1000):
        signals.conversion_finished(
            failed(f"c{i}", Path.NEW if i % 4 else Path.LEGACY), S.FAILED, "database timeout"
        )
    signals.tick(clock.now)
    assert len(inbox.messages()) == 5
    clock.now += 120
    signals.tick(clock.now)
    assert inbox.messages() == []
    clock.now += 200
    signals.tick(clock.now)
    (summary,) = inbox.messages()
    assert summary["Subject"] == "cutover: 995 more conversions failed in 5 min"
    assert "(248 on legacy, 747 on new)" in summary["Message"]
    assert "995 x database timeout" in summary["Message"]
    assert world.calls.count("Publish") == 6


def test_a_flag_version_change_says_old_new_and_who_moved(world: World, inbox: Inbox) -> None:
    """A new flag version in force is announced with the old and new version and the tenants
    added and removed."""
    clock = Clock()
    signals = signals_for(world, inbox, clock)
    old = FlagSnapshot("6", True, frozenset({1, 2, 9}), "agent", 0.0)
    new = FlagSnapshot("7", True, frozenset({2, 3, 4, 9}), "agent", 10.0)
    signals.flag_changed(FlagChange(old, new))
    signals.tick(clock.now)
    (message,) = inbox.messages()
    assert message["Subject"] == "cutover: flag 6 -> 7 (+2 -1 tenants)"
    assert "Tenants added (2): 3, 4" in message["Message"]
    assert "Tenants removed (1): 1" in message["Message"]
    assert "Tenants on the new path now: 4" in message["Message"]


class View:
    """The two things signals read from a controller."""

    def __init__(self) -> None:
        self.cycles = 0
        self.flag_state: FlagState | None = FlagState.OK


def _sums(cloudwatch: Any, name: str, dimensions: list[dict[str, str]]) -> list[float]:
    answer = cloudwatch.get_metric_statistics(
        Namespace="Cutover",
        MetricName=name,
        Dimensions=dimensions,
        StartTime=datetime.fromtimestamp(NOW - 3600, tz=UTC),
        EndTime=datetime.fromtimestamp(NOW + 3600, tz=UTC),
        Period=60,
        Statistics=["Sum"],
    )
    return sorted(p["Sum"] for p in answer["Datapoints"])


def test_metrics_are_counted_per_path_per_minute_with_the_alarms_names(world: World, inbox: Inbox) -> None:
    """Successes and failures go to CloudWatch per path per minute (ConversionsSucceeded /
    ConversionsFailed, dimension Path), with CyclesCompleted and FlagStateNotOk beside them."""
    clock = Clock()
    signals = signals_for(world, inbox, clock)
    view = View()
    signals.view = view
    for _ in range(7):
        signals.conversion_finished(failed("ok", Path.NEW), S.SUCCEEDED, "")
    for _ in range(2):
        signals.conversion_finished(failed("bad", Path.NEW), S.FAILED, "x")
    signals.conversion_finished(failed("old", Path.LEGACY), S.SUCCEEDED, "")
    view.cycles = 12
    view.flag_state = FlagState.STALE
    signals.tick(clock.now)

    cloudwatch = world.client("cloudwatch", hooked=False)
    assert _sums(cloudwatch, "ConversionsSucceeded", [{"Name": "Path", "Value": "new"}]) == [7.0]
    assert _sums(cloudwatch, "ConversionsFailed", [{"Name": "Path", "Value": "new"}]) == [2.0]
    assert _sums(cloudwatch, "ConversionsSucceeded", [{"Name": "Path", "Value": "legacy"}]) == [1.0]
    assert _sums(cloudwatch, "CyclesCompleted", []) == [12.0]
    assert _sums(cloudwatch, "FlagStateNotOk", []) == [1.0]
    sent = world.calls.params("PutMetricData")
    assert all(p["Namespace"] == "Cutover" for p in sent)
    stamps = {d["Timestamp"] for p in sent for d in p["MetricData"]}
    assert stamps == {datetime.fromtimestamp(NOW // 60 * 60, tz=UTC)}


def test_many_values_go_out_in_batches(world: World, inbox: Inbox) -> None:
    """Values of many minutes are sent at most METRICS_PER_CALL to a PutMetricData call."""
    clock = Clock()
    signals = signals_for(world, inbox, clock)
    for minute in range(30):
        clock.now = NOW + 60 * minute
        signals.conversion_finished(failed("a", Path.NEW), S.SUCCEEDED, "")
        signals.conversion_finished(failed("b", Path.LEGACY), S.FAILED, "x")
    signals.tick(clock.now)
    sizes = [len(p["MetricData"]) for p in world.calls.params("PutMetricData")]
    assert sum(sizes) == 60
    assert max(sizes) <= METRICS_PER_CALL


def test_a_topic_that_cannot_be_reached_is_logged_not_raised(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Publishing to a topic that does not exist logs ``notify.failed``; the caller carries on."""
    notifier = SNSNotifier(
        world.client("sns"), "arn:aws:sns:us-east-1:123456789012:missing", Retrier(sleep=lambda _: None)
    )
    with caplog.at_level(logging.WARNING, logger="cutover.notify"):
        notifier.publish("subject", "body")
    assert [r.message for r in caplog.records] == ["notify.failed"]


def _gate(**verdicts: GateVerdict) -> GateReport:
    groups = tuple(
        GroupGate(
            name, 1, 1, 0.0, NOW, None, PathEvidence(), PathEvidence(), Baseline.NONE, (), v, (f"{name} why",)
        )
        for name, v in verdicts.items()
    )
    return GateReport(NOW, None, groups, combine(g.verdict for g in groups), ())


def test_gate_verdicts_go_to_cloudwatch_and_every_change_and_action_is_announced(
    world: World, inbox: Inbox
) -> None:
    """GateFailing per group (dimension Group) and for any group (no dimension), which the Terraform
    alarm watches; a message when a group's verdict changes (not for the first one seen), and for
    automatic actions, summarised once they storm."""
    clock = Clock()
    signals = signals_for(world, inbox, clock, burst=2, window_seconds=300.0)
    signals.gates_judged(_gate(g1=GateVerdict.PASS, g2=GateVerdict.INCONCLUSIVE))
    signals.tick(clock.now)
    assert inbox.messages() == []
    cloudwatch = world.client("cloudwatch", hooked=False)
    assert _sums(cloudwatch, "GateFailing", [{"Name": "Group", "Value": "g1"}]) == [0.0]
    clock.now += 60
    signals.gates_judged(_gate(g1=GateVerdict.PASS, g2=GateVerdict.FAIL))
    signals.tick(clock.now)
    (change,) = inbox.messages()
    assert change["Subject"] == "cutover: gate of g2 inconclusive -> fail"
    assert "g2 why" in change["Message"]
    assert _sums(cloudwatch, "GateFailing", [{"Name": "Group", "Value": "g2"}]) == [0.0, 1.0]
    overall = [  # moto sums every dimension set when asked for none, so read what was sent
        d["Value"]
        for p in world.calls.params("PutMetricData")
        for d in p["MetricData"]
        if d["MetricName"] == "GateFailing" and not d.get("Dimensions")
    ]
    assert overall == [0.0, 1.0]
    for i in range(4):
        signals.announce(f"cutover-auto: action {i}", "body")
    signals.tick(clock.now)
    assert [m["Subject"] for m in inbox.messages()] == ["cutover-auto: action 0"]
    clock.now += 300
    signals.tick(clock.now)
    (summary,) = inbox.messages()
    assert summary["Subject"] == "cutover: 3 more rollout messages in 5 min"
    assert "cutover-auto: action 3" in summary["Message"]
