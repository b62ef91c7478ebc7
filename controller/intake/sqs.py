"""The SQS intake: conversions arriving as queue messages, acknowledged only once durable.

A message holds one conversion (``{"conversion_id", "tenant_id", "params"}``) or a batch
(``{"conversions": [...]}``). Valid messages are written to the ledger in one transaction and only
then deleted, so a controller that dies between receive and delete loses nothing: the message comes
back after its visibility timeout and folds into a duplicate. A malformed message is never deleted
here; the queue's redrive policy moves it to the dead-letter queue after its receive limit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from controller.core.domain import ConversionRequest
from controller.core.errors import ConflictError, CutoverError, InputError
from controller.core.ports import Ledger, SourceStats
from controller.intake.validation import IntakeLimits, accept, parse_intake
from controller.settings import Settings

log = logging.getLogger("cutover.intake")


@dataclass(frozen=True, slots=True)
class Message:
    """One received message, as far as the intake needs it."""

    message_id: str
    receipt: str
    body: str


def parse_message(body: str, limits: IntakeLimits) -> list[ConversionRequest]:
    """The conversions in one message body, validated whole; ``InputError`` when it is malformed."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise InputError(f"message is not JSON ({exc})") from exc
    if isinstance(doc, dict) and "conversions" not in doc:
        body = json.dumps({"conversions": [doc]})
    return parse_intake(body.encode(), limits)


class SQSIntake:
    """Long-polls one queue; each ``poll_once`` receives, records and acknowledges one batch."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        ledger: Ledger,
        clock: Callable[[], float],
        limits: IntakeLimits,
        wait_seconds: int = 20,
        max_messages: int = 10,
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.ledger = ledger
        self.clock = clock
        self.limits = limits
        self.wait_seconds = wait_seconds
        self.max_messages = max_messages
        self.stats = SourceStats(name=queue_url.rsplit("/", 1)[-1], kind="sqs")
        self.interval = 0.0 if wait_seconds else 1.0  # a long poll paces itself

    def tick(self) -> int:
        """One long poll (the intake thread calls this back to back)."""
        return self.poll_once()

    def receive(self) -> list[Message]:
        """One long poll."""
        answer = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.max_messages,
            WaitTimeSeconds=self.wait_seconds,
        )
        return [
            Message(m["MessageId"], m["ReceiptHandle"], m.get("Body", "")) for m in answer.get("Messages", [])
        ]

    def record(self, messages: list[Message]) -> list[Message]:
        """Write the conversions of every well-formed message durably; returns the messages to delete."""
        parsed: list[tuple[Message, list[ConversionRequest]]] = []
        for message in messages:
            try:
                parsed.append((message, parse_message(message.body, self.limits)))
            except InputError as exc:
                self._refuse(message, "intake.sqs_malformed", exc)
        requests = [r for _, found in parsed for r in found]
        if not requests:
            return [m for m, _ in parsed]
        try:
            self._accept(requests)
        except ConflictError:
            # One message re-sending an id with other content must not hold the others back: it
            # stays in the queue (for its dead-letter queue), the rest are recorded one by one.
            return [m for m, found in parsed if self._accept_one(m, found)]
        return [m for m, _ in parsed]

    def _accept(self, requests: list[ConversionRequest]) -> None:
        result = accept(self.ledger, requests, self.clock())
        self.stats.found += len(requests)
        self.stats.accepted += len(result.accepted)
        self.stats.duplicates += len(result.duplicates)

    def _accept_one(self, message: Message, requests: list[ConversionRequest]) -> bool:
        try:
            self._accept(requests)
        except ConflictError as exc:
            self._refuse(message, "intake.sqs_conflict", exc)
            return False
        return True

    def _refuse(self, message: Message, event: str, exc: CutoverError) -> None:
        self.stats.malformed += 1
        log.warning(event, extra={"message_id": message.message_id, "error": str(exc)})

    def acknowledge(self, messages: list[Message]) -> None:
        """Delete recorded messages (in batches of ten, as SQS allows)."""
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            answer = self.client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)],
            )
            for failure in answer.get("Failed", []):
                # the message comes back after its visibility timeout and folds into a duplicate
                log.warning("intake.sqs_delete_failed", extra={"error": failure.get("Message", "")})

    def poll_once(self) -> int:
        """Receive, record, acknowledge; returns how many messages were acknowledged."""
        self.stats.runs += 1
        self.stats.last_run_at = self.clock()
        try:
            messages = self.receive()
            if not messages:
                return 0
            done = self.record(messages)
            self.acknowledge(done)
        except (BotoCoreError, ClientError, CutoverError) as exc:
            self.stats.errors += 1
            self.stats.last_error = str(exc)
            log.warning("intake.sqs_failed", extra={"error": str(exc)})
            return 0
        self.stats.last_error = ""
        return len(done)


def sqs_from_settings(settings: Settings, ledger: Ledger, clock: Callable[[], float]) -> SQSIntake | None:
    """The queue ``CUTOVER_SQS_QUEUE_URL`` names, or None."""
    if not settings.sqs_queue_url:
        return None
    import boto3

    return SQSIntake(
        boto3.client("sqs"),
        settings.sqs_queue_url,
        ledger=ledger,
        clock=clock,
        limits=IntakeLimits(settings.max_request_items, settings.max_body_bytes),
        wait_seconds=settings.sqs_wait_seconds,
        max_messages=settings.sqs_max_messages,
    )
