"""The AppConfig store of ``cutover flag``: hosted configuration versions and deployments, via boto3.

Translates only. AppConfig's answers become ``flags.versions`` values and its errors the project's;
what to change, and whether it may be changed, is decided in ``flags.ops`` and ``flags.guards``.
New versions are full feature-flag documents written with ``Latest-Version-Number``, so a version
someone else wrote meanwhile makes the write fail instead of being overwritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from controller.core.errors import (
    ConfigError,
    ConflictError,
    CutoverError,
    FlagUnavailableError,
    InputError,
    NotFoundError,
)
from flags.document import MAX_DOCUMENT_BYTES, load_json, read_values, with_values
from flags.versions import IN_PROGRESS_STATES, Deployment, FlagContent, InForce, Note, Version

if TYPE_CHECKING:
    from mypy_boto3_appconfig import AppConfigClient

T = TypeVar("T")
ALL_AT_ONCE = "AppConfig.AllAtOnce"
_ID = re.compile(r"^[a-z0-9]{4,7}$")
_PAGE = 50


def make_client() -> AppConfigClient:
    """An AppConfig control-plane client, configured as boto3 is (``AWS_REGION``, ``AWS_ENDPOINT_URL``…)."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3})
    try:
        return boto3.client("appconfig", config=config)
    except NoRegionError as exc:
        raise ConfigError(
            "AWS_REGION (or AWS_DEFAULT_REGION) must name the region of the AppConfig resources"
        ) from exc


def _when(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def _body(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    data: bytes = value.read()
    return data


def translate(exc: Exception, what: str) -> CutoverError:
    """AppConfig's error as the project's: missing → NotFound, 409 → Conflict, bad input → Input…"""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "") or code
        text = f"{what}: {code}: {message}"
        if code == "ResourceNotFoundException":
            return NotFoundError(text)
        if code == "ConflictException":
            return ConflictError(text)
        if code in ("BadRequestException", "ValidationException", "PayloadTooLargeException"):
            return InputError(text)
        if code in (
            "AccessDeniedException",
            "UnrecognizedClientException",
            "ExpiredTokenException",
            "InvalidSignatureException",
        ):
            return ConfigError(f"{text} (check the AWS credentials and the role's AppConfig permissions)")
        if code == "ServiceQuotaExceededException":
            return ConflictError(text)
        return FlagUnavailableError(text)
    if isinstance(exc, NoCredentialsError | NoRegionError):
        return ConfigError(f"{what}: {exc}")
    return FlagUnavailableError(f"{what}: AppConfig did not answer ({exc})")


@contextmanager
def _aws(what: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, what) from exc


class AppConfigVersionStore:
    """Hosted configuration versions of one feature-flag profile, deployed to one environment."""

    def __init__(
        self,
        client: AppConfigClient,
        *,
        application: str,
        environment: str,
        profile: str,
        flag_key: str,
        strategy: str = ALL_AT_ONCE,
        application_id: str | None = None,
        profile_id: str | None = None,
    ) -> None:
        """Names are resolved to ids on first use, unless the ids are given (the validator's event
        carries them, and its role may read no more than it needs)."""
        self.client = client
        self.application = application
        self.environment = environment
        self.profile = profile
        self.flag_key = flag_key
        self.strategy = strategy
        self.name = f"appconfig {application}/{environment}/{profile}"
        self._app_id: str | None = application_id
        self._env_id: str | None = None
        self._profile_id: str | None = profile_id
        self._strategy_id: str | None = None
        self._documents: dict[int, bytes] = {}
        self._descriptions: dict[int, str] = {}

    # -- names to ids ------------------------------------------------------------------------

    def _find(
        self,
        kind: str,
        name: str,
        get: Callable[[], Any] | None,
        page: Callable[[str | None], Mapping[str, Any]],
    ) -> Mapping[str, Any]:
        """Find ``name`` (a name or an id): the id directly when it looks like one, else by listing."""
        if get is not None and _ID.match(name):
            try:
                found: Mapping[str, Any] = get()
                return found
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "ResourceNotFoundException",
                    "BadRequestException",
                ):
                    raise translate(exc, f"AppConfig {kind} {name!r}") from exc
            except BotoCoreError as exc:
                raise translate(exc, f"AppConfig {kind} {name!r}") from exc
        token: str | None = None
        with _aws(f"listing AppConfig {kind}s"):
            while True:
                answer = page(token)
                for item in answer.get("Items", []):
                    if item.get("Name") == name or item.get("Id") == name:
                        return item  # type: ignore[no-any-return]
                token = answer.get("NextToken")
                if not token:
                    break
        raise NotFoundError(f"AppConfig has no {kind} named {name!r}")

    def app_id(self) -> str:
        """The application's id."""
        if self._app_id is None:
            c = self.client

            def page(token: str | None) -> Mapping[str, Any]:
                return c.list_applications(MaxResults=_PAGE, **({"NextToken": token} if token else {}))

            found = self._find(
                "application",
                self.application,
                lambda: c.get_application(ApplicationId=self.application),
                page,
            )
            self._app_id = str(found["Id"])
        return self._app_id

    def env_id(self) -> str:
        """The environment's id."""
        if self._env_id is None:
            c, app = self.client, self.app_id()

            def page(token: str | None) -> Mapping[str, Any]:
                extra = {"NextToken": token} if token else {}
                return c.list_environments(ApplicationId=app, MaxResults=_PAGE, **extra)

            found = self._find(
                "environment",
                self.environment,
                lambda: c.get_environment(ApplicationId=app, EnvironmentId=self.environment),
                page,
            )
            self._env_id = str(found["Id"])
        return self._env_id

    def profile_id(self) -> str:
        """The configuration profile's id; ``InputError`` unless it holds feature flags."""
        if self._profile_id is None:
            c, app = self.client, self.app_id()

            def page(token: str | None) -> Mapping[str, Any]:
                extra = {"NextToken": token} if token else {}
                return c.list_configuration_profiles(ApplicationId=app, MaxResults=_PAGE, **extra)

            found = self._find("configuration profile", self.profile, None, page)
            kind = found.get("Type")
            if kind is not None and kind != "AWS.AppConfig.FeatureFlags":
                raise InputError(
                    f"AppConfig profile {self.profile!r} is of type {kind}; the migration flag needs "
                    "an AWS.AppConfig.FeatureFlags profile"
                )
            self._profile_id = str(found["Id"])
        return self._profile_id

    # -- reading -----------------------------------------------------------------------------

    def document(self, number: int) -> bytes:
        """Hosted version ``number``'s content."""
        if number not in self._documents:
            with _aws(f"reading flag version {number}"):
                answer = self.client.get_hosted_configuration_version(
                    ApplicationId=self.app_id(),
                    ConfigurationProfileId=self.profile_id(),
                    VersionNumber=number,
                )
            self._documents[number] = _body(answer["Content"])
            self._descriptions[number] = answer.get("Description", "")
        return self._documents[number]

    def description(self, number: int) -> str:
        """Hosted version ``number``'s description (where ``cutover flag`` marks rollbacks)."""
        if number not in self._descriptions:
            self._documents.pop(number, None)
            self.document(number)
        return self._descriptions.get(number, "")

    def content(self, number: int) -> FlagContent:
        where = f"flag version {number}"
        doc = load_json(self.document(number), where)
        enabled, ids = read_values(doc, flag_key=self.flag_key, where=where)
        return FlagContent(enabled, frozenset(ids))

    def versions(self) -> list[Version]:
        out: list[Version] = []
        token: str | None = None
        with _aws("listing flag versions"):
            while True:
                extra = {"NextToken": token} if token else {}
                answer = self.client.list_hosted_configuration_versions(
                    ApplicationId=self.app_id(),
                    ConfigurationProfileId=self.profile_id(),
                    MaxResults=_PAGE,
                    **extra,
                )
                for item in answer.get("Items", []):
                    description = item.get("Description", "")
                    out.append(
                        Version(int(item.get("VersionNumber", 0)), description, Note.parse(description))
                    )
                token = answer.get("NextToken")
                if not token:
                    break
        return sorted(out, key=lambda v: v.number)

    def _ours(self, item: Mapping[str, Any]) -> bool:
        profile_id = item.get("ConfigurationProfileId")
        if profile_id is not None:
            return bool(profile_id == self.profile_id())
        return bool(item.get("ConfigurationName") == self.profile)

    def _deployment(self, item: Mapping[str, Any], *, rollback: bool = False) -> Deployment:
        version = str(item.get("ConfigurationVersion", ""))
        return Deployment(
            number=int(item.get("DeploymentNumber", 0)),
            version=int(version) if version.isdigit() else 0,
            state=str(item.get("State", "")),
            percentage=float(item.get("PercentageComplete", 0.0)),
            started_at=_when(item.get("StartedAt")),
            completed_at=_when(item.get("CompletedAt")),
            description=str(item.get("Description", "")),
            strategy=str(item.get("DeploymentStrategyId", "")),
            rollback=rollback,
            foreign=not self._ours(item),
        )

    def _pages(self) -> Iterator[Mapping[str, Any]]:
        """The environment's deployments, newest first (AppConfig lists them that way)."""
        token: str | None = None
        while True:
            extra = {"NextToken": token} if token else {}
            with _aws("listing deployments"):
                answer = self.client.list_deployments(
                    ApplicationId=self.app_id(), EnvironmentId=self.env_id(), MaxResults=_PAGE, **extra
                )
            yield from answer.get("Items", [])
            token = answer.get("NextToken")
            if not token:
                return

    def in_force(self) -> InForce | None:
        for item in self._pages():
            if self._ours(item) and item.get("State") == "COMPLETE":
                version = str(item.get("ConfigurationVersion", ""))
                if not version.isdigit():
                    raise InputError(f"deployment {item.get('DeploymentNumber')} names version {version!r}")
                return InForce(int(version), self.content(int(version)))
        return None

    def in_progress(self) -> Deployment | None:
        for item in self._pages():
            if item.get("State") in IN_PROGRESS_STATES:
                return self._deployment(item)
            # Deployments run one at a time, newest first: past the newest final one, none can run.
            return None
        return None

    def deployments(self, limit: int) -> list[Deployment]:
        ours: list[Mapping[str, Any]] = []
        for item in self._pages():
            if self._ours(item):
                ours.append(item)
                if len(ours) >= limit:
                    break
        out: list[Deployment] = []
        in_force: int | None = None
        for item in reversed(ours):
            d = self._deployment(item)
            back = in_force is not None and d.version < in_force
            out.append(self._deployment(item, rollback=back))
            if d.state == "COMPLETE":
                in_force = d.version
        return list(reversed(out))

    # -- strategy ----------------------------------------------------------------------------

    def strategy_id(self) -> str:
        """The deployment strategy's id (predefined ``AppConfig.*`` ids are used as they are)."""
        if self._strategy_id is None:
            if self.strategy.startswith("AppConfig.") or _ID.match(self.strategy):
                self._strategy_id = self.strategy
            else:
                c = self.client

                def page(token: str | None) -> Mapping[str, Any]:
                    return c.list_deployment_strategies(
                        MaxResults=_PAGE, **({"NextToken": token} if token else {})
                    )

                self._strategy_id = str(self._find("deployment strategy", self.strategy, None, page)["Id"])
        return self._strategy_id

    def strategy_warning(self) -> str | None:
        strategy = self.strategy_id()
        if strategy == ALL_AT_ONCE:
            return None
        with _aws(f"reading deployment strategy {self.strategy!r}"):
            s = self.client.get_deployment_strategy(DeploymentStrategyId=strategy)
        duration = s.get("DeploymentDurationInMinutes", 0)
        growth = s.get("GrowthFactor", 100.0)
        if growth >= 100 and duration == 0:
            return None
        return (
            f"deployment strategy {self.strategy} is gradual ({growth:g}% {s.get('GrowthType', 'LINEAR')} "
            f"over {duration} min): until it completes, controller replicas route by different flag "
            "versions (ownership stays exclusive; /status shows the versions in use)"
        )

    # -- writing -----------------------------------------------------------------------------

    def _base(self, note: Note, latest: int | None) -> Any:
        number = note.base if note.base is not None else latest
        if number is None:
            return None
        return json.loads(self.document(number))

    def create_version(self, content: FlagContent, note: Note, latest: int | None) -> int:
        doc = with_values(self._base(note, latest), self.flag_key, content.enabled, content.tenant_ids)
        data = json.dumps(doc, separators=(",", ":")).encode()
        if len(data) > MAX_DOCUMENT_BYTES:
            raise InputError(
                f"the new flag version is {len(data)} bytes, over AppConfig's {MAX_DOCUMENT_BYTES}"
            )
        read_values(doc, flag_key=self.flag_key, where="the new flag version")
        extra: dict[str, Any] = {"LatestVersionNumber": latest} if latest is not None else {}
        try:
            answer = self.client.create_hosted_configuration_version(
                ApplicationId=self.app_id(),
                ConfigurationProfileId=self.profile_id(),
                Content=data,
                ContentType="application/json",
                Description=note.describe(),
                **extra,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConflictException":
                raise ConflictError(
                    f"flag version {latest} is no longer the latest in {self.name}: someone wrote "
                    "another version meanwhile; look again (`cutover flag show`) and rerun"
                ) from exc
            raise translate(exc, "writing the flag version") from exc
        except BotoCoreError as exc:
            raise translate(exc, "writing the flag version") from exc
        number = int(answer["VersionNumber"])
        self._documents[number] = data
        return number

    def deploy(self, number: int, note: Note) -> Deployment:
        try:
            answer = self.client.start_deployment(
                ApplicationId=self.app_id(),
                EnvironmentId=self.env_id(),
                DeploymentStrategyId=self.strategy_id(),
                ConfigurationProfileId=self.profile_id(),
                ConfigurationVersion=str(number),
                Description=note.describe(),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConflictException":
                raise ConflictError(
                    f"AppConfig refused to deploy flag version {number}: another deployment is in progress "
                    f"in environment {self.environment!r} (one at a time); wait for it, or stop it with "
                    "`cutover flag rollback`"
                ) from exc
            raise translate(exc, f"deploying flag version {number}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"deploying flag version {number}") from exc
        return self._deployment(answer, rollback=note.rollback)

    def stop(self, deployment: Deployment) -> Deployment:
        with _aws(f"stopping deployment {deployment.number}"):
            answer = self.client.stop_deployment(
                ApplicationId=self.app_id(), EnvironmentId=self.env_id(), DeploymentNumber=deployment.number
            )
        return self._deployment(answer, rollback=True)

    def refresh(self, deployment: Deployment) -> Deployment:
        with _aws(f"reading deployment {deployment.number}"):
            answer = self.client.get_deployment(
                ApplicationId=self.app_id(), EnvironmentId=self.env_id(), DeploymentNumber=deployment.number
            )
        return self._deployment(answer, rollback=deployment.rollback)
