"""A stubbed AppConfig control-plane client (botocore Stubber: every request and answer is checked
against the real service model) and helpers that queue what AppConfig would answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.stub import ANY, Stubber

from flags.appconfig_store import AppConfigVersionStore

APP, ENV, PROFILE = "a1b2c3d", "e1b2c3d", "p1b2c3d"
KEY = "migrated_tenants"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def document(*ids: int, enabled: bool = True, **other: Any) -> dict[str, Any]:
    """A stored feature-flag document as AppConfig keeps it (with the fields it injects)."""
    values: dict[str, Any] = {
        KEY: {"enabled": enabled, "tenant_ids": list(ids), "_updatedAt": "2026-11-01T00:00:00Z"}
    }
    flags: dict[str, Any] = {KEY: {"name": "Migrated tenants", "_createdAt": "2026-11-01T00:00:00Z"}}
    for name, value in other.items():
        values[name] = value
        flags[name] = {"name": name}
    return {"version": "1", "flags": flags, "values": values}


class AppConfigStubs:
    """The store under test over a stubbed client; ``sent`` records the request parameters."""

    def __init__(self, strategy: str = "AppConfig.AllAtOnce", *, known_ids: bool = False) -> None:
        self.client = boto3.client(
            "appconfig", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        self.stub = Stubber(self.client)
        self.store = AppConfigVersionStore(
            self.client,
            application=APP,
            environment=ENV,
            profile="migration-flags",
            flag_key=KEY,
            strategy=strategy,
            application_id=APP if known_ids else None,
            profile_id=PROFILE if known_ids else None,
        )
        self.sent: dict[str, list[dict[str, Any]]] = {}
        self.client.meta.events.register("provide-client-params.appconfig.*", self._record)
        self._app = self._profile = known_ids
        self._env = False

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.sent.setdefault(model.name, []).append(dict(params))

    # -- resolution (queued the first time a call needs it) ---------------------------------

    def app(self) -> None:
        if not self._app:
            self._app = True
            self.stub.add_response("get_application", {"Id": APP, "Name": "cutover"}, {"ApplicationId": APP})

    def env(self) -> None:
        self.app()
        if not self._env:
            self._env = True
            self.stub.add_response(
                "get_environment",
                {"ApplicationId": APP, "Id": ENV, "Name": "prod", "State": "READY_FOR_DEPLOYMENT"},
                {"ApplicationId": APP, "EnvironmentId": ENV},
            )

    def profile(self) -> None:
        self.app()
        if not self._profile:
            self._profile = True
            self.stub.add_response(
                "list_configuration_profiles",
                {
                    "Items": [
                        {"ApplicationId": APP, "Id": "zzzz999", "Name": "other", "Type": "AWS.Freeform"},
                        {
                            "ApplicationId": APP,
                            "Id": PROFILE,
                            "Name": "migration-flags",
                            "Type": "AWS.AppConfig.FeatureFlags",
                        },
                    ]
                },
                {"ApplicationId": APP, "MaxResults": 50},
            )

    # -- answers -----------------------------------------------------------------------------

    def deployments(self, *items: dict[str, Any], resolve_profile: bool = False) -> None:
        """ListDeployments, newest first; ``resolve_profile`` when this call is the first to need it."""
        self.env()
        self.stub.add_response(
            "list_deployments",
            {"Items": list(items)},
            {"ApplicationId": APP, "EnvironmentId": ENV, "MaxResults": 50},
        )
        if resolve_profile:
            self.profile()

    def hosted(self, number: int, doc: dict[str, Any], description: str = "") -> None:
        self.profile()
        self.stub.add_response(
            "get_hosted_configuration_version",
            {
                "ApplicationId": APP,
                "ConfigurationProfileId": PROFILE,
                "VersionNumber": number,
                "Content": json.dumps(doc).encode(),
                "ContentType": "application/json",
                "Description": description,
            },
            {"ApplicationId": APP, "ConfigurationProfileId": PROFILE, "VersionNumber": number},
        )

    def versions(self, *numbers: int, descriptions: dict[int, str] | None = None) -> None:
        self.profile()
        items = [
            {
                "ApplicationId": APP,
                "ConfigurationProfileId": PROFILE,
                "VersionNumber": n,
                "Description": (descriptions or {}).get(n, ""),
                "ContentType": "application/json",
            }
            for n in sorted(numbers, reverse=True)
        ]
        self.stub.add_response(
            "list_hosted_configuration_versions",
            {"Items": items},
            {"ApplicationId": APP, "ConfigurationProfileId": PROFILE, "MaxResults": 50},
        )

    def created(self, number: int, latest: int | None) -> None:
        params: dict[str, Any] = {
            "ApplicationId": APP,
            "ConfigurationProfileId": PROFILE,
            "Content": ANY,
            "ContentType": "application/json",
            "Description": ANY,
        }
        if latest is not None:
            params["LatestVersionNumber"] = latest
        self.stub.add_response(
            "create_hosted_configuration_version",
            {
                "ApplicationId": APP,
                "ConfigurationProfileId": PROFILE,
                "VersionNumber": number,
                "ContentType": "application/json",
            },
            params,
        )

    def deployment(
        self, number: int, version: int, state: str, pct: float = 0.0, strategy: str = "AppConfig.AllAtOnce"
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "ApplicationId": APP,
            "EnvironmentId": ENV,
            "DeploymentStrategyId": strategy,
            "ConfigurationProfileId": PROFILE,
            "DeploymentNumber": number,
            "ConfigurationName": "migration-flags",
            "ConfigurationVersion": str(version),
            "State": state,
            "StartedAt": T0,
        }
        if pct >= 1:  # the model's Percentage starts at 1: nothing done yet is left out
            answer["PercentageComplete"] = pct
        return answer

    def summary(
        self, number: int, version: int, state: str, pct: float = 100.0, profile: str = PROFILE
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "DeploymentNumber": number,
            "ConfigurationProfileId": profile,
            "ConfigurationName": "migration-flags" if profile == PROFILE else "other",
            "ConfigurationVersion": str(version),
            "State": state,
            "StartedAt": T0,
        }
        if pct >= 1:
            answer["PercentageComplete"] = pct
        return answer

    def started(
        self, number: int, version: int, state: str = "DEPLOYING", strategy: str = "AppConfig.AllAtOnce"
    ) -> None:
        self.stub.add_response(
            "start_deployment",
            self.deployment(number, version, state, 0.0, strategy),
            {
                "ApplicationId": APP,
                "EnvironmentId": ENV,
                "DeploymentStrategyId": strategy,
                "ConfigurationProfileId": PROFILE,
                "ConfigurationVersion": str(version),
                "Description": ANY,
            },
        )

    def polled(self, number: int, version: int, state: str, pct: float) -> None:
        self.stub.add_response(
            "get_deployment",
            self.deployment(number, version, state, pct),
            {"ApplicationId": APP, "EnvironmentId": ENV, "DeploymentNumber": number},
        )

    def content_sent(self) -> dict[str, Any]:
        """The document the last CreateHostedConfigurationVersion carried."""
        return dict(json.loads(self.sent["CreateHostedConfigurationVersion"][-1]["Content"]))
