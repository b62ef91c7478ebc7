"""The AWS transports of ``controller.engine.notify``: messages to an SNS topic, metric values to
CloudWatch with PutMetricData in batches. A failed send is logged and dropped; signals never hold
the controller up, and the next minute's values still go out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from controller.core.ports import Datum
from controller.plumbing.aws import Retrier, describe, transient

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import MetricDatumTypeDef
    from mypy_boto3_sns import SNSClient

log = logging.getLogger("cutover.notify")

METRICS_PER_CALL = 20  # well inside PutMetricData's documented limits


class SNSNotifier:
    """Publishes each message to one SNS topic (``CUTOVER_SNS_TOPIC_ARN``)."""

    def __init__(self, sns: SNSClient, topic_arn: str, retrier: Retrier | None = None) -> None:
        self.sns = sns
        self.topic_arn = topic_arn
        self._retrier = retrier or Retrier()

    def publish(self, subject: str, message: str) -> None:
        """Publish; a failure is logged, not raised."""
        try:
            self._retrier.call(
                partial(self.sns.publish, TopicArn=self.topic_arn, Subject=subject, Message=message),
                retry_if=transient,
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("notify.failed", extra={"subject": subject, "error": describe(exc)})


class CloudWatchMetrics:
    """Puts metric values into one namespace, ``METRICS_PER_CALL`` values per PutMetricData call."""

    def __init__(self, cloudwatch: CloudWatchClient, namespace: str, retrier: Retrier | None = None) -> None:
        self.cloudwatch = cloudwatch
        self.namespace = namespace
        self._retrier = retrier or Retrier()

    def put(self, datums: Sequence[Datum]) -> None:
        """Send the values in batches; a failed batch is logged and dropped."""
        data: list[MetricDatumTypeDef] = [
            {
                "MetricName": d.name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in d.dimensions],
                "Timestamp": datetime.fromtimestamp(d.minute * 60, tz=UTC),
                "Value": d.value,
                "Unit": "Count",
            }
            for d in datums
        ]
        for i in range(0, len(data), METRICS_PER_CALL):
            chunk = data[i : i + METRICS_PER_CALL]
            try:
                self._retrier.call(
                    partial(self.cloudwatch.put_metric_data, Namespace=self.namespace, MetricData=chunk),
                    retry_if=transient,
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("metrics.failed", extra={"values": len(chunk), "error": describe(exc)})
