"""The one configuration object, read from ``CUTOVER_*`` environment variables (and an env file).

Built once by the composition root and passed down; tests construct it directly.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shlex
import typing
from collections.abc import Iterable
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.core.errors import ConfigError

ENV_PREFIX = "CUTOVER_"
_LEDGER_URL = re.compile(r"^(sqlite:///.+|dynamodb://[A-Za-z0-9_.-]{3,255})$")
_APPCONFIG_NAME = re.compile(r"^[^\x00-\x1f]{1,128}$")
# Names (or ARNs) of a CodeBuild project, Batch queue, job definition (name:revision), compute environment.
_AWS_NAME = re.compile(
    r"^(arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:\S{1,1024}|[A-Za-z0-9][A-Za-z0-9_.:-]{0,254})$"
)
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FINDER_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
_KEY_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SQS_QUEUE_URL = re.compile(r"^https?://[^\s/]+/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$")
_SQLALCHEMY_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+]*://\S*$")
_SNS_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")

PositiveInt = Annotated[int, Field(ge=1)]
# Read by the command line, not by the service: known names all the same.
COMMAND_LINE_NAMES = ("CUTOVER_URL",)
_ENV_LINE = re.compile(r"^\s*(export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


class Settings(BaseSettings):
    """Everything cutover reads from its environment; see README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        validate_default=True,
        # An infinite grace or timeout would silently switch reconciliation or a limit off.
        allow_inf_nan=False,
    )

    flag_source: Literal["file", "agent", "appconfigdata"] = "file"
    flag_file: FsPath = FsPath("./flags.json")
    agent_url: str = "http://localhost:2772"
    agent_token: SecretStr | None = None
    appconfig_application: str = "cutover"
    appconfig_environment: str = "prod"
    appconfig_profile: str = "migration-flags"
    flag_key: str = "migrated_tenants"
    on_flag_unavailable: Literal["legacy", "pause"] = "legacy"
    max_flag_age: Annotated[float, Field(gt=0)] | None = None
    on_stale_flag: Literal["serve", "pause"] = "serve"
    agent_connect_timeout: Annotated[float, Field(gt=0, le=30)] = 1.0
    agent_read_timeout: Annotated[float, Field(gt=0, le=60)] = 2.0
    agent_startup_seconds: Annotated[float, Field(ge=0, le=600)] = 15.0
    rollout_file: FsPath | None = None
    max_add: PositiveInt = 500
    deployment_strategy: str = "AppConfig.AllAtOnce"

    ledger: str = "sqlite:///./cutover.db"
    backend: Literal["local", "aws"] = "local"
    local_worker: str | None = None
    local_state_dir: FsPath = FsPath("./cutover-state")
    output_dir: FsPath = FsPath("./cutover-output")
    job_timeout: Annotated[float, Field(gt=0)] = 900.0

    legacy_project: str | None = None
    legacy_max_threads: PositiveInt = 16
    batch_job_queue: str | None = None
    batch_job_definition: str | None = None
    batch_compute_environment: str | None = None
    manage_max_vcpus: bool = True
    manifest_bucket: str | None = None
    manifest_prefix: str = "manifests/"
    batch_vcpus_per_job: Annotated[float, Field(gt=0)] | None = None  # else read from the job definition
    fargate_vcpu_quota: Annotated[float, Field(gt=0)] | None = None  # else read from Service Quotas

    budget: PositiveInt = 20
    cycle_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    max_claims_per_cycle: PositiveInt = 20_000
    resubmits: Annotated[int, Field(ge=0, le=10)] = 1
    intent_grace_seconds: Annotated[float, Field(gt=0)] = 60.0
    max_batch_items: PositiveInt = 1000

    target_finder: str | None = None
    find_every: str = "300"
    finder_timeout: Annotated[float, Field(gt=0, le=3600)] = 120.0
    finder_sql_url: SecretStr | None = None
    finder_sql_query: str | None = None
    finder_s3_uri: str | None = None
    finder_s3_pattern: str = "exports/{tenant_id}/{report}/{date}.json"
    sqs_queue_url: str | None = None
    sqs_wait_seconds: Annotated[int, Field(ge=0, le=20)] = 20
    sqs_max_messages: Annotated[int, Field(ge=1, le=10)] = 10

    api_token: SecretStr | None = None
    sns_topic_arn: str | None = None
    notify_burst: PositiveInt = 5
    notify_window_seconds: Annotated[float, Field(gt=0)] = 300.0
    metrics: Literal["auto", "cloudwatch", "log", "off"] = "auto"
    metric_namespace: str = "Cutover"
    reconcile_hours: Annotated[float, Field(gt=0, le=14 * 24)] = 24.0
    reconcile_seconds: Annotated[float, Field(ge=10)] = 300.0
    # A finished record is its id's tombstone: a re-sent id is a duplicate only while the record is
    # kept, so it must outlive every re-send. SQS keeps a message 14 days at most, the longest any
    # intake can deliver an id again (HTTP senders retry within minutes).
    ledger_retention_days: Annotated[float, Field(ge=14)] = 30.0
    max_request_items: PositiveInt = 1000
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    shadow_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    shadow_aa_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    shadow_comparator: str | None = None
    shadow_quarantine: str | None = None  # else <local state dir>/quarantine
    shadow_retention_seconds: Annotated[float, Field(ge=0)] = 86_400.0
    shadow_max_bytes: Annotated[int, Field(ge=1024)] = 50 * 1024 * 1024
    shadow_pending_seconds: Annotated[float, Field(gt=0)] = 21_600.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_decisions: bool = True

    # What start-up found worth telling but not worth stopping for (misspelt names).
    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @property
    def warnings(self) -> tuple[str, ...]:
        """Readable warnings about the configuration itself, e.g. a ``CUTOVER_*`` name not known."""
        return self._warnings

    @field_validator("find_every")
    @classmethod
    def _schedule(cls, value: str) -> str:
        from controller.core.errors import InputError
        from controller.core.schedule import parse_schedule

        try:
            parse_schedule(value)
        except InputError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("ledger")
    @classmethod
    def _ledger_url(cls, value: str) -> str:
        if not _LEDGER_URL.fullmatch(value):
            raise ValueError("must be sqlite:///PATH or dynamodb://TABLE")
        return value

    @field_validator("manifest_prefix")
    @classmethod
    def _manifest_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"([A-Za-z0-9_.-]+/)*", value) or any(p in (".", "..") for p in value.split("/")):
            raise ValueError('must be a relative key prefix ending in "/", such as "manifests/"')
        return value

    @field_validator("metric_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._/#:-]{1,255}", value) or value.startswith("AWS/"):
            raise ValueError("must be a custom CloudWatch namespace (not AWS/...)")
        return value

    @field_validator("agent_url")
    @classmethod
    def _agent_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(:\d+)?/?", value):
            raise ValueError("must be an http(s) base URL such as http://localhost:2772")
        return value.rstrip("/")

    @field_validator("appconfig_application", "appconfig_environment", "appconfig_profile", "flag_key")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _APPCONFIG_NAME.fullmatch(value):
            raise ValueError("must be 1-128 printable characters")
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _not_blank(cls, value: Any) -> Any:
        # Set but empty is a secret or template that did not expand, not a wish to leave it out
        # (an empty path would even mean the working directory).
        if isinstance(value, str) and not value.strip():
            raise ValueError("is set but empty; unset it to leave it out")
        return value

    @field_validator("legacy_project", "batch_job_queue", "batch_job_definition", "batch_compute_environment")
    @classmethod
    def _aws_name(cls, value: str | None) -> str | None:
        if value is not None and not _AWS_NAME.fullmatch(value):
            raise ValueError("must be a resource name (letters, digits, - and _) or its ARN")
        return value

    @field_validator("manifest_bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not _S3_BUCKET.fullmatch(value):
            raise ValueError("must be an S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens")
        return value

    @field_validator("sns_topic_arn")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and not _SNS_TOPIC_ARN.fullmatch(value):
            raise ValueError("must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
        return value

    @field_validator("shadow_quarantine")
    @classmethod
    def _quarantine(cls, value: str | None) -> str | None:
        if (
            value is not None
            and value.startswith("s3://")
            and not _S3_URI.fullmatch(value.rstrip("/") + "/x")
        ):
            raise ValueError("must be s3://bucket/prefix/ or a directory")
        return value

    @field_validator("target_finder", "shadow_comparator")
    @classmethod
    def _finder(cls, value: str | None) -> str | None:
        if value is not None and not _FINDER_SPEC.fullmatch(value):
            raise ValueError("must name a callable as package.module:function")
        return value

    @field_validator("finder_s3_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None and not _S3_URI.fullmatch(value):
            raise ValueError("must be s3://bucket/prefix")
        return value

    @field_validator("finder_s3_pattern")
    @classmethod
    def _key_pattern(cls, value: str) -> str:
        names = _KEY_FIELD.findall(value)
        if "tenant_id" not in names or len(names) != len(set(names)):
            raise ValueError("must have one {tenant_id} field and no field twice")
        return value

    @field_validator("sqs_queue_url")
    @classmethod
    def _queue_url(cls, value: str | None) -> str | None:
        if value is not None and not _SQS_QUEUE_URL.fullmatch(value):
            raise ValueError("must be an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
        return value

    @field_validator("finder_sql_url")
    @classmethod
    def _sql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SQLALCHEMY_URL.fullmatch(value.get_secret_value()):
            raise ValueError("must be a database URL such as postgresql+psycopg://user@host/db")
        return value

    @field_validator("local_worker")
    @classmethod
    def _worker(cls, value: str | None) -> str | None:
        if value is not None and not shlex.split(value):
            raise ValueError("must be a command line")
        return value

    @field_validator("deployment_strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if not re.fullmatch(r"[^\x00-\x1f]{1,64}", value):
            raise ValueError("must be a deployment strategy id or name (e.g. AppConfig.AllAtOnce)")
        return value

    @model_validator(mode="after")
    def _agent_within_cycle(self) -> Settings:
        # One agent request must never hold a cycle up: the whole answer has to fit well inside it.
        if self.flag_source == "agent" and self.agent_connect_timeout + self.agent_read_timeout >= (
            self.cycle_seconds
        ):
            raise ValueError(
                f"{ENV_PREFIX}AGENT_CONNECT_TIMEOUT + {ENV_PREFIX}AGENT_READ_TIMEOUT must stay under "
                f"{ENV_PREFIX}CYCLE_SECONDS "
                f"({self.agent_connect_timeout:g}s + {self.agent_read_timeout:g}s >= "
                f"{self.cycle_seconds:g}s)"
            )
        return self

    @property
    def sqlite_path(self) -> FsPath | None:
        """The SQLite file of a ``sqlite:///`` ledger, else None."""
        if self.ledger.startswith("sqlite:///"):
            return FsPath(self.ledger.removeprefix("sqlite:///"))
        return None

    @property
    def dynamodb_table(self) -> str | None:
        """The table of a ``dynamodb://`` ledger, else None."""
        if self.ledger.startswith("dynamodb://"):
            return self.ledger.removeprefix("dynamodb://")
        return None

    def masked(self, *, absolute_paths: bool = False) -> dict[str, Any]:
        """Every setting as its environment variable, secrets masked: what ``cutover config`` prints.
        With ``absolute_paths``, paths (and a SQLite ledger's) as this process resolves them, since a
        relative default means another file in every folder."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********"
            elif isinstance(value, FsPath):
                value = str(value.expanduser().resolve() if absolute_paths else value)
            out[ENV_PREFIX + name.upper()] = value
        if absolute_paths and self.sqlite_path is not None:
            out[ENV_PREFIX + "LEDGER"] = f"sqlite:///{self.sqlite_path.expanduser().resolve()}"
        return out


def is_secret(field: str) -> bool:
    """Whether a setting holds a secret: its value is never shown, not even when it is wrong."""
    info = Settings.model_fields.get(field)
    return info is not None and SecretStr in (info.annotation, *typing.get_args(info.annotation))


def env_names() -> list[str]:
    """The environment variables the settings read, as a deployment must spell them."""
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


def env_file_names(path: FsPath) -> list[str]:
    """The names an env file sets; ``ConfigError`` naming the file and line of one that is not
    ``NAME=value`` (a blank line or ``# comment`` is fine), which the settings library would skip."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc})") from exc
    names = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(f"--config {path}, line {number}: {line.strip()[:60]!r} is not NAME=value")
        names.append(match[2])
    return names


def unknown_names(names: Iterable[str]) -> list[str]:
    """A warning for each ``CUTOVER_*`` name that no setting reads, with the closest known name."""
    known = [*env_names(), *COMMAND_LINE_NAMES]
    out = []
    for name in sorted(set(names)):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in known:
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{name} is not a setting cutover knows{hint}; it is ignored")
    return out


def load_settings(env_file: FsPath | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment, or raise ``ConfigError`` naming the first bad variable
    (or the line of ``env_file`` that is not ``NAME=value``). Unknown ``CUTOVER_*`` names in either
    become the settings' ``warnings``."""
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"--config {env_file}: no such file")
    names = list(os.environ)
    if env_file is not None:
        names += env_file_names(env_file)
    dotenv = FsPath(".env")
    if dotenv.is_file():
        # A .env of another tool: the settings library reads what it can of it, as before.
        with contextlib.suppress(ConfigError):
            names += env_file_names(dotenv)
    files: dict[str, Any] = {} if env_file is None else {"_env_file": env_file}
    try:
        cfg = Settings(**files, **overrides)
        cfg._warnings = tuple(unknown_names(names))
        return cfg
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:
            raise ConfigError(f"settings: {str(first['msg']).removeprefix('Value error, ')}") from exc
        field = str(first["loc"][0])
        got = first.get("input")
        shown = "" if isinstance(got, dict) or is_secret(field) else f" (got {str(got)[:80]!r})"
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}: {first['msg']}{shown}") from exc
