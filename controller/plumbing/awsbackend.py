"""What the two AWS backends (CodeBuild, Batch) do alike around their own API calls: reads retried
by the one policy, SDK failures reported as the backend being unavailable, the reconciliation
counts and the budget slots they report, and closing their client.

The adapters subclass it; it calls no AWS operation by name and decides nothing about conversions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from controller.core.domain import Path
from controller.core.errors import BackendUnavailableError
from controller.plumbing.aws import Retrier, describe, transient
from controller.plumbing.tally import ReconcileTally


class Closable(Protocol):
    """An SDK client, as far as closing it goes."""

    def close(self) -> None: ...


class AwsBackend:
    """The shared half of an AWS backend; ``service`` names the AWS service in error messages."""

    path: Path
    service: ClassVar[str]

    def __init__(self, client: Closable, *, retrier: Retrier | None, tally: ReconcileTally | None) -> None:
        self._client = client
        self._retrier = retrier or Retrier()
        self._tally = tally
        self._in_use = 0  # budget slots held at the last poll; the adapter's poll sets it

    @contextmanager
    def _unknown(self, what: str) -> Iterator[None]:
        """An SDK failure inside is ``BackendUnavailableError``: the caller cannot know the outcome."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise BackendUnavailableError(f"{self.service} {what}: {describe(exc)}") from exc

    def _read(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, a call safe to repeat, retried on transient failures."""
        return self._retrier.call(fn, retry_if=transient)

    def reconcile_counts(self) -> Mapping[str, int]:
        """Distinct conversions reconciliation flagged on this path since start (duplicates, orphans)."""
        if self._tally is None:
            return {"duplicates": 0, "orphans": 0}
        return self._tally.counts(self.path)

    def in_use(self) -> int:
        """Slots of the budget this path held at the last poll (running jobs, threads of working builds)."""
        return self._in_use

    def close(self) -> None:
        """Close the SDK client."""
        self._client.close()
