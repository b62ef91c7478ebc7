"""The AppConfig Data API flag source, for hosts without the agent: boto3 ``appconfigdata``.

A session is started once (``StartConfigurationSession``); each poll (``GetLatestConfiguration``)
hands back the token for the next one and the interval to wait. Between polls the snapshot from
the last one is served; an empty body means "unchanged since your last poll" (including a version
that was rejected: it stays rejected). An expired or refused token starts a new session, and so
does an answer whose body was lost in transit (its token is spent; a new session resends it all). The Data
API does not return a version number: the version is the version label when one is set, else a
content hash (and the snapshot says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from controller.core.errors import ConfigError, FlagInvalidError, FlagNotDeployedError, FlagUnavailableError
from flags.document import parse_flag
from flags.snapshot import FlagSnapshot

if TYPE_CHECKING:
    from mypy_boto3_appconfigdata import AppConfigDataClient

MIN_POLL_SECONDS = 15  # the API's lower bound for RequiredMinimumPollIntervalInSeconds


def make_client(connect_timeout: float = 1.0, read_timeout: float = 2.0) -> AppConfigDataClient:
    """An AppConfig Data client with short timeouts (one poll must fit in a cycle)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": 2},
    )
    try:
        return boto3.client("appconfigdata", config=config)
    except NoRegionError as exc:
        raise ConfigError(
            "AWS_REGION (or AWS_DEFAULT_REGION) must name the region of the AppConfig resources"
        ) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '')}: {error.get('Message', '')}".strip(": ")


class AppConfigDataSource:
    """Polls AppConfig for the migration flag no more often than the service allows."""

    name = "appconfigdata"

    def __init__(
        self,
        client: AppConfigDataClient,
        application: str,
        environment: str,
        profile: str,
        flag_key: str,
        clock: Callable[[], float],
        *,
        poll_seconds: int = MIN_POLL_SECONDS,
    ) -> None:
        self._client = client
        self.application = application
        self.environment = environment
        self.profile = profile
        self.flag_key = flag_key
        self._clock = clock
        self._poll_seconds = max(MIN_POLL_SECONDS, poll_seconds)
        self._token: str | None = None
        self._next_poll = 0.0
        self._snapshot: FlagSnapshot | None = None
        self._rejected: FlagInvalidError | None = None
        self.sessions = 0

    @property
    def _where(self) -> str:
        return f"AppConfig {self.application}/{self.environment}/{self.profile}"

    def fetch(self) -> FlagSnapshot:
        """The flag in force: from the last poll until the next one is due, then polled."""
        now = self._clock()
        if now < self._next_poll:
            return self._cached()
        answer = self._poll()
        interval = answer.get("NextPollIntervalInSeconds") or self._poll_seconds
        self._next_poll = now + max(float(interval), 1.0)
        data = self._body(answer)
        # Only a poll whose answer was read whole may hand its token on: the service counts the
        # version as delivered, so the next poll with that token would say "unchanged" for good.
        self._token = answer.get("NextPollConfigurationToken") or None
        if not data:
            if self._snapshot is None and self._rejected is None:
                raise FlagNotDeployedError(f"{self._where} returned no configuration: nothing deployed yet")
            if self._snapshot is not None and self._rejected is None:
                # Unchanged since the last poll: the source has just confirmed it.
                self._snapshot = dataclasses.replace(self._snapshot, fetched_at=now)
            return self._cached()
        content_type = str(answer.get("ContentType") or "application/json").split(";")[0].strip().lower()
        if content_type.rsplit("/", 1)[-1] == "ion":
            self._remember_rejection(
                FlagInvalidError(
                    f"{self._where} returned {content_type} (multi-variant flags come as Amazon Ion); "
                    "the migration flag must be a single-variant feature flag"
                )
            )
            return self._cached()
        label = answer.get("VersionLabel") or None
        try:
            snapshot = parse_flag(
                data,
                flag_key=self.flag_key,
                source=self.name,
                fetched_at=now,
                version=label,
                where=self._where,
            )
        except FlagInvalidError as exc:
            self._remember_rejection(exc)
            return self._cached()
        self._snapshot, self._rejected = snapshot, None
        return snapshot

    def _body(self, answer: Any) -> bytes:
        """The configuration the poll carried; a body lost in transit spends the token with it, so
        the next poll starts a new session, which hands over the whole configuration again."""
        body = answer.get("Configuration")
        if body is None or isinstance(body, bytes):
            return body or b""
        try:
            data = body.read()
        except BotoCoreError as exc:
            self._token = None
            raise FlagUnavailableError(f"{self._where}: the answer was lost in transit ({exc})") from exc
        return data if isinstance(data, bytes) else b""

    def _remember_rejection(self, exc: FlagInvalidError) -> None:
        self._snapshot, self._rejected = None, exc

    def _cached(self) -> FlagSnapshot:
        if self._rejected is not None:
            raise self._rejected
        if self._snapshot is None:
            raise FlagUnavailableError(f"{self._where}: no configuration read yet")
        return self._snapshot

    def _start_session(self) -> str:
        try:
            answer = self._client.start_configuration_session(
                ApplicationIdentifier=self.application,
                EnvironmentIdentifier=self.environment,
                ConfigurationProfileIdentifier=self.profile,
                RequiredMinimumPollIntervalInSeconds=self._poll_seconds,
            )
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise FlagNotDeployedError(
                    f"{self._where}: not found, or nothing deployed yet ({_message(exc)})"
                ) from exc
            raise FlagUnavailableError(f"{self._where}: cannot start a session ({_message(exc)})") from exc
        except BotoCoreError as exc:
            raise FlagUnavailableError(f"{self._where}: AppConfig did not answer ({exc})") from exc
        self.sessions += 1
        return str(answer.get("InitialConfigurationToken", ""))

    def _poll(self) -> Any:
        """One ``GetLatestConfiguration``, with one new session if the token was refused."""
        fresh = self._token is None
        token = self._token or self._start_session()
        for attempt in (1, 2):
            try:
                return self._client.get_latest_configuration(ConfigurationToken=token)
            except ClientError as exc:
                self._token = None  # the service refused it; a later poll starts a new session
                if _code(exc) == "BadRequestException" and attempt == 1 and not fresh:
                    # Tokens are single use and expire after 24 hours: start over once.
                    token = self._start_session()
                    continue
                if _code(exc) == "ResourceNotFoundException":
                    raise FlagNotDeployedError(f"{self._where}: {_message(exc)}") from exc
                raise FlagUnavailableError(f"{self._where}: {_message(exc)}") from exc
            except BotoCoreError as exc:
                raise FlagUnavailableError(f"{self._where}: AppConfig did not answer ({exc})") from exc
        raise FlagUnavailableError(f"{self._where}: the configuration token was refused twice")
