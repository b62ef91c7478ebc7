"""The AppConfig validator Lambda: the same document checks and guard rails for console edits."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.core.errors import FlagInvalidError, InputError
from flags.validator import handler

from .appconfig_stubs import APP, PROFILE, AppConfigStubs, document

REPO = Path(__file__).resolve().parents[2]


def event(doc: Any, version: int = 5) -> dict[str, Any]:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return {
        "applicationId": APP,
        "configurationProfileId": PROFILE,
        "configurationVersion": str(version),
        "content": base64.b64encode(raw).decode(),
        "uri": f"hosted://{APP}/{PROFILE}/{version}",
    }


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOVER_APPCONFIG_ENVIRONMENT", "e1b2c3d")
    monkeypatch.setenv("CUTOVER_MAX_ADD", "3")


@pytest.fixture
def aws(lambda_env: None) -> Iterator[AppConfigStubs]:
    s = AppConfigStubs(known_ids=True)
    with s.stub:
        yield s
    s.stub.assert_no_pending_responses()


def in_force(aws: AppConfigStubs, candidate_description: str = "", candidate: int = 5) -> None:
    """Version 4 (tenants 1-3) is in force; the candidate's description is read for the rollback mark."""
    aws.deployments(aws.summary(6, 4, "COMPLETE"), resolve_profile=True)
    aws.hosted(4, document(1, 2, 3))
    aws.hosted(candidate, document(), candidate_description)


def test_a_bad_document_is_rejected_naming_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUTOVER_APPCONFIG_ENVIRONMENT", raising=False)
    with pytest.raises(FlagInvalidError, match=r"values\.migrated_tenants\.tenant_ids\[1\]: a boolean"):
        handler(event(document(1, True)))
    with pytest.raises(FlagInvalidError, match="not base64"):
        handler({**event(document(1)), "content": "%%%"})


def test_without_an_environment_only_the_document_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUTOVER_APPCONFIG_ENVIRONMENT", raising=False)
    verdict = handler(event(document(*range(1, 100))))
    assert (verdict["valid"], verdict["tenant_count"]) == (True, 99)


def test_an_advance_within_the_limit_passes_reading_only_what_the_role_allows(aws: AppConfigStubs) -> None:
    in_force(aws)
    aws.versions(4, 5)  # the history, for tenants held back
    assert handler(event(document(1, 2, 3, 4, 5)), client=aws.client)["valid"]
    # The ids come with the event: no GetApplication or ListConfigurationProfiles needed.
    assert set(aws.sent) == {
        "GetEnvironment",
        "ListDeployments",
        "GetHostedConfigurationVersion",
        "ListHostedConfigurationVersions",
    }


def test_too_many_tenants_at_once_is_rejected(aws: AppConfigStubs) -> None:
    in_force(aws)
    with pytest.raises(InputError, match="would add 4 tenants in one step, over the limit of 3"):
        handler(event(document(1, 2, 3, 4, 5, 6, 7)), client=aws.client)


def test_a_removal_outside_a_rollback_is_rejected(aws: AppConfigStubs) -> None:
    in_force(aws)
    with pytest.raises(InputError, match=r"would take 1 tenant\(s\) off the new path \(2\)"):
        handler(event(document(1, 3)), client=aws.client)


def test_a_version_marked_rollback_may_take_tenants_out_but_not_add_any(aws: AppConfigStubs) -> None:
    in_force(aws, "emergency [rollback]")
    assert handler(event(document(1)), client=aws.client)["valid"]
    again = AppConfigStubs(known_ids=True)
    with again.stub:
        in_force(again, "emergency [rollback]")
        with pytest.raises(InputError, match="a rollback version must not add tenants"):
            handler(event(document(1, 9)), client=again.client)


def test_deploying_an_older_version_again_is_a_rollback(aws: AppConfigStubs) -> None:
    in_force(aws, candidate=2)
    assert handler(event(document(), version=2), client=aws.client)["valid"]


def test_the_validator_module_imports_no_aws_or_web_libraries() -> None:
    heavy = "('boto3', 'botocore', 'fastapi', 'httpx', 'uvicorn')"
    code = f"import sys, flags.validator; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
