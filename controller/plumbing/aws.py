"""AWS plumbing shared by the AWS adapters and the DynamoDB ledger: how clients are made, how SDK
failures are classified, and the one retry policy (exponential backoff with full jitter).

botocore's own retries are switched off on every client made here, so a call is retried in one
place only, with a sleep and a random source that tests replace. Nothing here decides what a
failure means for a conversion; the callers translate it into the project's errors.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from controller.core.errors import SubmitRejectedError

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

# No botocore retries: ``Retrier`` is the one place that tries again. The timeouts bound one
# attempt (ATTEMPT_SECONDS): calls made under the dispatch lease must come back well within it, and
# the control-plane calls made here answer in well under a second when the service is healthy.
CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 5.0
ATTEMPT_SECONDS = CONNECT_TIMEOUT + READ_TIMEOUT
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1},
    connect_timeout=CONNECT_TIMEOUT,
    read_timeout=READ_TIMEOUT,
    max_pool_connections=32,
    user_agent_extra="cutover",
)

_THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
_SERVER_CODES = frozenset(
    {"InternalServerError", "InternalFailure", "ServiceUnavailable", "ServerException", "InternalError"}
)


def session(region: str | None = None) -> boto3.session.Session:
    """A boto3 session; region, credentials and ``AWS_ENDPOINT_URL`` come from the environment."""
    import boto3

    return boto3.session.Session(region_name=region)


def error_code(exc: BaseException) -> str:
    """The service's error code of a ``ClientError`` (e.g. ``ConditionalCheckFailedException``), else ''."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    """The HTTP status of a ``ClientError``, else 0."""
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def throttled(exc: BaseException) -> bool:
    """The service refused the call because of its rate limit; nothing was done."""
    return error_code(exc) in _THROTTLE_CODES or http_status(exc) == 429


def not_sent(exc: BaseException) -> bool:
    """The request never reached the service (no connection, or no time left to send it)."""
    return isinstance(exc, EndpointConnectionError | ConnectTimeoutError | NoTimeLeftError)


def outcome_unknown(exc: BaseException) -> bool:
    """The service may or may not have acted: a server error, a read timeout, a dropped connection."""
    if isinstance(exc, ClientError):
        return http_status(exc) >= 500 or error_code(exc) in _SERVER_CODES
    if not_sent(exc):
        return False
    return isinstance(exc, ReadTimeoutError | ConnectionClosedError | BotoCoreError)


def transient(exc: BaseException) -> bool:
    """Worth trying again for a call that is safe to repeat (a read, or a write with a token)."""
    return throttled(exc) or not_sent(exc) or outcome_unknown(exc)


def describe(exc: BaseException) -> str:
    """One line for logs and error messages: the code and message of an SDK failure."""
    if isinstance(exc, ClientError):
        err: dict[str, Any] = dict(exc.response.get("Error", {}))
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip().rstrip(":")
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits uniformly in [0, min(cap, base·2ⁿ)]."""

    attempts: int = 5
    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number ``attempt`` (0-based)."""
        return rng.uniform(0.0, min(self.cap, self.base * (2**attempt)))


class NoTimeLeftError(BotoCoreError):
    """Raised instead of sending a call that could not come back within the time it was given."""

    fmt = "{operation}: not sent, {left:.1f}s left of its time limit and an attempt may take {attempt:.0f}s"


@dataclass(slots=True)
class Retrier:
    """Runs an SDK call, retrying the failures ``retry_if`` accepts, sleeping with ``backoff``.

    Inside ``within(seconds)`` (on the calling thread) every call and retry must fit in that time:
    an attempt that could end past it is not started (``NoTimeLeftError`` when none was, else the
    last failure as it came), so a submit made under the dispatch lease comes back before it ends.
    """

    backoff: Backoff = field(default_factory=Backoff)
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)  # jitter, not secrets
    clock: Callable[[], float] = time.monotonic
    attempt_seconds: float = ATTEMPT_SECONDS
    _limits: threading.local = field(default_factory=threading.local, repr=False)

    @contextmanager
    def within(self, seconds: float | None) -> Iterator[None]:
        """Bound every call made on this thread meanwhile to end within ``seconds`` from now."""
        outer = getattr(self._limits, "deadline", None)
        deadline = None if seconds is None else self.clock() + max(0.0, seconds)
        if outer is not None:
            deadline = outer if deadline is None else min(outer, deadline)
        self._limits.deadline = deadline
        try:
            yield
        finally:
            self._limits.deadline = outer

    def _fits(self, wait: float = 0.0) -> bool:
        deadline = getattr(self._limits, "deadline", None)
        return deadline is None or self.clock() + wait + self.attempt_seconds <= deadline

    def call(self, fn: Callable[[], T], *, retry_if: Callable[[BaseException], bool] = transient) -> T:
        """``fn()``, tried up to ``backoff.attempts`` times; the last failure is raised as it came."""
        if not self._fits():
            deadline = getattr(self._limits, "deadline", 0.0)
            name = getattr(fn, "func", fn)
            raise NoTimeLeftError(
                operation=getattr(name, "__name__", "call"),
                left=max(0.0, deadline - self.clock()),
                attempt=self.attempt_seconds,
            )
        attempt = 0
        while True:
            try:
                return fn()
            except (ClientError, BotoCoreError) as exc:
                if attempt + 1 >= self.backoff.attempts or not retry_if(exc):
                    raise
                wait = self.backoff.delay(attempt, self.rng)
                if not self._fits(wait):
                    raise
                self.sleep(wait)
                attempt += 1


class ManifestStore:
    """Manifests and per-conversion results in the manifest bucket (one JSON object each).

    A manifest never changes once written (its key names one dispatch attempt), so reads are
    cached; result objects are read as they appear.
    """

    def __init__(
        self, s3: S3Client, bucket: str, prefix: str, retrier: Retrier, *, cache_size: int = 4096
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._retrier = retrier
        self._cache: dict[str, dict[str, Any] | None] = {}
        self._cache_size = cache_size

    def key(self, path: str, batch_key: str, name: str = "manifest.json") -> str:
        """The object key of a batch's manifest (or of ``name`` next to it)."""
        return f"{self.prefix}{path}/{batch_key}/{name}"

    def uri(self, key: str) -> str:
        """The ``s3://`` URI of an object key in the bucket."""
        return f"s3://{self.bucket}/{key}"

    def key_of(self, uri: str) -> str | None:
        """The object key an ``s3://`` URI of this bucket names, else None."""
        head = f"s3://{self.bucket}/"
        return uri[len(head) :] if uri.startswith(head) else None

    def put(self, key: str, body: bytes) -> None:
        """Write one object (retried: writing the same bytes twice does no harm)."""
        self._retrier.call(
            lambda: self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        )

    def get(self, key: str, *, cached: bool = True) -> dict[str, Any] | None:
        """The JSON object stored under ``key``, or None when there is none."""
        if cached and key in self._cache:
            return self._cache[key]
        doc: Any
        try:
            answer = self._retrier.call(lambda: self.s3.get_object(Bucket=self.bucket, Key=key))
            doc = json.loads(answer["Body"].read())
        except ClientError as exc:
            if error_code(exc) not in ("NoSuchKey", "404", "NotFound"):
                raise
            return None
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        found: dict[str, Any] = doc
        if cached:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = found
        return found

    def names(self, prefix: str) -> list[str]:
        """The object keys under ``prefix`` (all pages)."""
        out: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            answer = self._retrier.call(partial(self.s3.list_objects_v2, **kwargs))
            out.extend(str(o["Key"]) for o in answer.get("Contents", []))
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                return out


_BATCH_KEY = re.compile(r"[A-Za-z0-9]{1,64}")  # whole string: fullmatch, so no trailing newline


def checked_key(key: str) -> str:
    """A batch key safe in S3 keys, build variables and job names, or ``SubmitRejectedError``."""
    if not _BATCH_KEY.fullmatch(key):
        raise SubmitRejectedError(f"batch key {key!r} is not a plain alphanumeric name")
    return key


def manifest_bytes(doc: Mapping[str, Any]) -> bytes:
    """A manifest's bytes: the same document always gives the same bytes (tokens hash them)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
