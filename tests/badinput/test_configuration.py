"""A wrong setting stops cutover at start with one line naming the variable, never half-started.

The contract checked (DESIGN, Contracts): configuration is validated at start, and errors go to
stderr as one readable line with a non-zero status, never a traceback.

The settings are enumerated from ``Settings.model_fields``: a new setting gets bad values from its
type (and its bounds) without anyone editing this file, and a setting of a type this file cannot
derive bad values for fails ``test_every_setting_has_bad_values`` until it is given some.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
import pytest
from pydantic.fields import FieldInfo

from controller.core.errors import ConfigError
from controller.settings import ENV_PREFIX, Settings, is_secret, load_settings

REPO = Path(__file__).resolve().parents[2]
BLOCKER = "blocker"  # a regular file the run-level cases put in the way of a directory


@dataclass(frozen=True)
class Case:
    """One wrong value for one setting; ``at_start`` cases are well-formed but cannot be used."""

    field: str
    value: str
    at_start: bool = False

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.field.upper()

    @property
    def id(self) -> str:
        shown = self.value if len(self.value) <= 24 else self.value[:21] + "..."
        return f"{self.field}={shown!r}"


# Wrong values no type can imply: formats, names, commands.
SPECIFIC: dict[str, list[str]] = {
    "agent_url": [
        "http://localhost:2772\n",
        "localhost:2772",
        "ftp://localhost:2772",
        "http://",
        "http://host/path",
        "http://a b",
    ],
    "appconfig_application": ["x" * 129, "tab\there"],
    "appconfig_environment": ["x" * 129, "new\nline"],
    "appconfig_profile": ["x" * 129, "bell\x07"],
    "flag_key": ["x" * 129, "esc\x1b"],
    "ledger": [
        "dynamodb://cutover-ledger\n",
        "postgres://db/cutover",
        "sqlite://",
        "sqlite:///",
        "dynamodb://ab",
        "dynamodb://bad name",
    ],
    "local_worker": ["   ", 'python "unterminated'],
    "manifest_bucket": ["cutover-manifests\n", "Upper_Case", "ab", "bucket with spaces", "-leading-dash"],
    "sns_topic_arn": [
        "arn:aws:sns:eu-west-1:123456789012:cutover\n",
        "not-an-arn",
        "arn:aws:sqs:eu-west-1:123456789012:queue",
        "arn:aws:sns:eu-west-1:1:t",
    ],
    "manifest_prefix": ["cutover/\n", "/absolute/", "../escape/", "no-trailing-slash"],
    "metric_namespace": ["Cutover\n", "AWS/Batch", "has space"],
    "legacy_project": ["excel-export\n", "has space", "x" * 300],
    "batch_job_queue": ["has space", "x" * 300],
    "batch_job_definition": ["has space", "x" * 300],
    "batch_compute_environment": ["has space", "x" * 300],
    "deployment_strategy": ["cutover-linear\n", "x" * 65, "bell\x07"],
    "find_every": ["soon", "0", "* * *", "61 * * * *"],
    "target_finder": [
        "jobs.finders:due\n",
        "controller.finder_sql",
        "not a module:find",
        "/path/to/finder.py:find",
    ],
    "finder_s3_uri": [
        "s3://exports-bucket/in/\n",
        "bucket/prefix",
        "s3://",
        "https://bucket.s3.amazonaws.com/prefix",
    ],
    "finder_s3_pattern": ["exports/{report}.json", "{tenant_id}/{tenant_id}.json"],
    "sqs_queue_url": [
        "https://sqs.eu-west-1.amazonaws.com/123456789012/intake\n",
        "my-queue",
        "https://sqs.eu-west-1.amazonaws.com/my-queue",
    ],
    "finder_sql_url": ["host=db user=app", "not a url", "postgresql://app:hunter2 @db/cutover"],
    "shadow_comparator": ["controller.shadow.xlsx", "not a module:compare", "/path/to/compare.py:compare"],
    "shadow_quarantine": ["s3://", "s3://Bad_Bucket/q/"],
}

# Well-formed values the process cannot use, found only when it starts (``{blocker}`` is a file).
AT_START: dict[str, list[str]] = {
    "ledger": [f"sqlite:///{BLOCKER}/ledger.db", f"sqlite:///{BLOCKER}"],
    "local_state_dir": [f"{BLOCKER}/state"],
    "output_dir": [f"{BLOCKER}/out"],
    "local_worker": ["/nonexistent/cutover-worker --flag"],
}

# Settings whose only wrong value is the empty one, and why no other is.
ANY_VALUE: dict[str, str] = {
    "flag_file": "a missing or unreadable flag file is a flag outage, routed by promise 3 at run time",
    "rollout_file": "re-read while running: a missing or malformed plan is reported, the last good kept",
    "agent_token": "any non-empty text is a token; the agent judges it",
    "api_token": "any non-empty text is a token",
    "finder_sql_query": "any SQL text; the database judges it when the finder runs",
}


def _bounds(metadata: list[Any], integer: bool) -> list[str]:
    step = 1 if integer else 0.5
    out: list[str] = []
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            out.append(str(m.ge - step))
        elif isinstance(m, annotated_types.Gt):
            out.append(str(m.gt))
        elif isinstance(m, annotated_types.Le):
            out.append(str(m.le + step))
        elif isinstance(m, annotated_types.Lt):
            out.append(str(m.lt))
    return out


def _unwrap(annotation: Any) -> tuple[Any, list[Any], bool]:
    """The value type of an annotation, its constraints, and whether None is allowed."""
    optional = False
    metadata: list[Any] = []
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        (annotation,) = args
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        for e in extra:
            metadata.extend(e.metadata if isinstance(e, FieldInfo) else [e])
    return annotation, metadata, optional


def generic_bad_values(info: FieldInfo) -> list[str]:
    """Wrong values implied by a setting's type and bounds alone.

    Every setting refuses the empty string: set but empty is a secret or a template that did not
    expand (an empty path would even mean the working directory)."""
    kind, metadata, _ = _unwrap(info.annotation)
    metadata = [*metadata, *info.metadata]
    if typing.get_origin(kind) is Literal:
        return ["", "not-one-of-the-choices", str(typing.get_args(kind)[0]).upper() + "!"]
    if kind is bool:
        return ["", "maybe", "2"]
    if kind is int:
        return ["", "many", "1.5", *_bounds(metadata, integer=True)]
    if kind is float:
        return ["", "soon", "nan", "inf", "-inf", "1e999", *_bounds(metadata, integer=False)]
    return ["", " "]


def cases() -> list[Case]:
    out: list[Case] = []
    for name, info in Settings.model_fields.items():
        values = dict.fromkeys([*generic_bad_values(info), *SPECIFIC.get(name, [])])
        out.extend(Case(name, v) for v in values)
        out.extend(Case(name, v, at_start=True) for v in AT_START.get(name, []))
    return out


CASES = cases()


def first_case_per_setting() -> list[Case]:
    seen: dict[str, Case] = {}
    for c in CASES:
        seen.setdefault(c.field, c)
    return [*seen.values(), *(c for c in CASES if c.at_start and c is not seen.get(c.field))]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No CUTOVER_* variable but the one under test; cwd without an .env file."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


SECRET_CASES = [c for c in CASES if is_secret(c.field) and c.value.strip()]


def test_the_secret_settings_are_the_ones_typed_as_secrets():
    assert {f for f in Settings.model_fields if is_secret(f)} == {
        "agent_token",
        "api_token",
        "finder_sql_url",
    }
    assert SECRET_CASES


@pytest.mark.parametrize("case", SECRET_CASES, ids=lambda c: c.id)
def test_a_wrong_secret_is_named_but_never_shown(case: Case, clean_env):
    """A secret that fails validation (a database URL with its password, say) is reported by its
    variable's name alone: the error line ends up in terminals and CI logs."""
    clean_env.setenv(case.variable, case.value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(case.variable + ":")
    assert case.value not in str(err.value)
    assert "hunter2" not in str(err.value)


def test_every_setting_has_bad_values():
    """Configuration contract, coverage: each setting has wrong values beyond the empty one, or a
    stated reason why it has none, so a setting added later cannot go unchecked."""
    beyond_empty = {c.field for c in CASES if c.value.strip()} | set(ANY_VALUE)
    assert set(Settings.model_fields) <= beyond_empty, sorted(set(Settings.model_fields) - beyond_empty)
    assert set(SPECIFIC) | set(AT_START) | set(ANY_VALUE) <= set(Settings.model_fields)


def test_the_defaults_are_accepted(clean_env):
    """Configuration contract, baseline: with nothing set the settings load, so each failure below
    is the bad value's doing."""
    settings = load_settings()
    assert settings.budget >= 1


@pytest.mark.parametrize("case", [c for c in CASES if not c.at_start], ids=lambda c: c.id)
def test_load_settings_names_the_variable(case: Case, clean_env):
    """Configuration contract: every wrong value raises one ConfigError, one line starting with the
    variable's name."""
    clean_env.setenv(case.variable, case.value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(case.variable + ":"), message
    assert "\n" not in message


def _free_port() -> int:
    # --port takes 1-65535, so a free one is found here rather than asking for port 0.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("case", first_case_per_setting(), ids=lambda c: c.id)
def test_run_stops_at_start_with_one_line_naming_the_variable(case: Case, tmp_path: Path):
    """Configuration contract at start: `cutover run` with one wrong setting exits non-zero at once
    with one stderr line naming it - no traceback, nothing on stdout, no API listening."""
    (tmp_path / BLOCKER).write_text("a file where a directory is expected\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["PYTHONPATH"] = str(REPO)
    env[case.variable] = case.value
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running after 30 s with {case.id}: the service started\n{err}")
    assert proc.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert case.variable in lines[0]
    assert "Traceback" not in err
    assert not _listening(port)
    assert re.fullmatch(r"\s*", out)


def test_finished_records_outlive_every_resend_of_their_id() -> None:
    """DynamoDB's TTL forgets a finished conversion after the retention; an id sent again after
    that would be a second conversion. SQS redelivers a message for up to 14 days, so a shorter
    retention is refused at start, naming the variable."""
    from pydantic import ValidationError

    from controller.settings import Settings

    with pytest.raises(ValidationError, match="ledger_retention_days"):
        Settings(ledger_retention_days=13.9)
    assert Settings(ledger_retention_days=14).ledger_retention_days == 14
