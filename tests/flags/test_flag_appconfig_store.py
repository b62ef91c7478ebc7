"""``advance`` / ``rollback`` / ``history`` against AppConfig: boto3 with botocore's Stubber for the
deployment API (no local emulator implements it), and moto's server for hosted versions."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from controller.core.errors import ConfigError, ConflictError, FlagDeploymentError, InputError
from flags import ops
from flags.appconfig_store import AppConfigVersionStore
from flags.rollout import parse_plan
from flags.versions import Deployment, FlagContent, Note
from tests.fakes import FakeClock

from .appconfig_stubs import APP, KEY, AppConfigStubs, document

PLAN = parse_plan(
    {"groups": [{"name": "group-1", "tenant_ids": ["1-3"]}, {"name": "group-2", "tenant_ids": ["10-12"]}]}
)


@pytest.fixture
def aws() -> Iterator[AppConfigStubs]:
    s = AppConfigStubs()
    with s.stub:
        yield s
    s.stub.assert_no_pending_responses()


def operator(clock: FakeClock, slept: list[float]) -> ops.Operator:
    return ops.Operator(by="ops@test", clock=clock, sleep=slept.append, poll_seconds=5)


def in_force_v3(aws: AppConfigStubs) -> None:
    """Nothing running; deployment 7 put version 3 (group-1 plus another flag) in force."""
    aws.deployments(aws.summary(7, 3, "COMPLETE"))  # in_progress: newest is final
    aws.deployments(aws.summary(7, 3, "COMPLETE"), resolve_profile=True)  # in_force
    aws.hosted(3, document(1, 2, 3, dark_mode={"enabled": True}))


def test_advance_writes_the_full_document_deploys_it_and_follows_it_to_complete(
    aws: AppConfigStubs, clock: FakeClock
) -> None:
    in_force_v3(aws)
    aws.versions(1, 2, 3)
    aws.created(4, latest=3)
    aws.started(8, 4)
    aws.polled(8, 4, "DEPLOYING", 50.0)
    aws.polled(8, 4, "BAKING", 100.0)
    aws.polled(8, 4, "COMPLETE", 100.0)
    seen: list[Deployment] = []
    slept: list[float] = []
    result = ops.advance(
        aws.store, PLAN, to_group="group-2", max_add=10, op=operator(clock, slept), on_progress=seen.append
    )
    assert (result["version"], result["added"], result["deployment"]["state"]) == (4, 3, "COMPLETE")
    assert [(d.state, d.percentage) for d in seen] == [
        ("DEPLOYING", 0.0),
        ("DEPLOYING", 50.0),
        ("BAKING", 100.0),
        ("COMPLETE", 100.0),
    ]
    assert slept == [5, 5, 5]
    doc = aws.content_sent()
    assert doc["version"] == "1"
    assert doc["values"][KEY]["enabled"] is True
    assert doc["values"][KEY]["tenant_ids"] == [1, 2, 3, 10, 11, 12]
    assert doc["values"]["dark_mode"] == {"enabled": True}  # other flags in the profile are kept
    assert "dark_mode" in doc["flags"]
    create = aws.sent["CreateHostedConfigurationVersion"][-1]
    note = Note.parse(create["Description"])
    assert note is not None
    assert (note.action, note.by, note.base, note.added, note.removed) == ("advance", "ops@test", 3, 3, 0)
    assert aws.sent["StartDeployment"][-1]["DeploymentStrategyId"] == "AppConfig.AllAtOnce"


def test_advance_is_refused_while_a_deployment_runs_and_writes_nothing(
    aws: AppConfigStubs, clock: FakeClock
) -> None:
    aws.deployments(aws.summary(9, 4, "DEPLOYING", 40.0), resolve_profile=True)
    with pytest.raises(
        ConflictError, match=r"deployment 9 \(version 4\) is DEPLOYING at 40% .* one deployment at a time"
    ):
        ops.advance(aws.store, PLAN, to_group="group-2", max_add=10, op=operator(clock, []))
    assert "CreateHostedConfigurationVersion" not in aws.sent


def test_another_profiles_deployment_blocks_too_and_says_whose(aws: AppConfigStubs, clock: FakeClock) -> None:
    aws.deployments(aws.summary(9, 2, "BAKING", 100.0, profile="zzzz999"), resolve_profile=True)
    with pytest.raises(ConflictError, match="another configuration's deployment"):
        ops.advance(aws.store, PLAN, to_group="group-2", max_add=10, op=operator(clock, []))


def test_a_deployment_started_meanwhile_is_a_clear_conflict(aws: AppConfigStubs, clock: FakeClock) -> None:
    in_force_v3(aws)
    aws.versions(1, 2, 3)
    aws.created(4, latest=3)
    aws.stub.add_client_error("start_deployment", "ConflictException", "Deployment in progress", 409)
    with pytest.raises(ConflictError, match="another deployment is in progress in environment 'e1b2c3d'"):
        ops.advance(aws.store, PLAN, to_group="group-2", max_add=10, op=operator(clock, []))


def test_a_version_written_meanwhile_is_not_overwritten(aws: AppConfigStubs, clock: FakeClock) -> None:
    in_force_v3(aws)
    aws.versions(1, 2, 3)
    aws.stub.add_client_error(
        "create_hosted_configuration_version", "ConflictException", "Latest version mismatch", 409
    )
    with pytest.raises(ConflictError, match="version 3 is no longer the latest"):
        ops.advance(aws.store, PLAN, to_group="group-2", max_add=10, op=operator(clock, []))


def test_guard_rails_refuse_before_anything_is_written(aws: AppConfigStubs, clock: FakeClock) -> None:
    in_force_v3(aws)
    aws.versions(1, 2, 3)  # read for tenants held back
    with pytest.raises(InputError, match="over the limit of 2"):
        ops.advance(aws.store, PLAN, to_group="group-2", max_add=2, op=operator(clock, []))
    assert "CreateHostedConfigurationVersion" not in aws.sent


def test_a_gradual_strategy_is_warned_about_and_no_wait_returns_at_once(clock: FakeClock) -> None:
    aws = AppConfigStubs(strategy="AppConfig.Linear50PercentEvery30Seconds")
    with aws.stub:
        in_force_v3(aws)
        aws.versions(1, 2, 3)
        aws.stub.add_response(
            "get_deployment_strategy",
            {
                "Id": "AppConfig.Linear50PercentEvery30Seconds",
                "GrowthFactor": 50.0,
                "DeploymentDurationInMinutes": 1,
                "GrowthType": "LINEAR",
                "FinalBakeTimeInMinutes": 1,
            },
            {"DeploymentStrategyId": "AppConfig.Linear50PercentEvery30Seconds"},
        )
        aws.created(4, latest=3)
        aws.started(8, 4, strategy="AppConfig.Linear50PercentEvery30Seconds")
        result = ops.advance(
            aws.store, PLAN, to_group="group-2", max_add=10, op=operator(clock, []), wait=False
        )
    aws.stub.assert_no_pending_responses()
    assert result["deployment"]["state"] == "DEPLOYING"
    assert "gradual" in result["warnings"][0]
    assert "different flag versions" in result["warnings"][0]


def test_a_deployment_rolled_back_by_an_alarm_fails_the_command(
    aws: AppConfigStubs, clock: FakeClock
) -> None:
    in_force_v3(aws)
    aws.versions(1, 2, 3)
    aws.created(4, latest=3)
    aws.started(8, 4)
    aws.polled(8, 4, "ROLLED_BACK", 0.0)
    with pytest.raises(
        FlagDeploymentError, match="ended ROLLED_BACK: the version before it is still in force"
    ):
        ops.advance(aws.store, PLAN, to_group="group-2", max_add=10, op=operator(clock, []))


def test_rollback_stops_a_deployment_under_way(aws: AppConfigStubs, clock: FakeClock) -> None:
    aws.deployments(aws.summary(9, 4, "DEPLOYING", 20.0), resolve_profile=True)
    aws.stub.add_response(
        "stop_deployment",
        aws.deployment(9, 4, "ROLLING_BACK", 20.0),
        {"ApplicationId": APP, "EnvironmentId": "e1b2c3d", "DeploymentNumber": 9},
    )
    aws.polled(9, 4, "ROLLED_BACK", 0.0)
    result = ops.rollback(aws.store, op=operator(clock, []))
    assert (result["action"], result["deployment"]["state"]) == ("stopped", "ROLLED_BACK")


def test_rollback_deploys_the_previous_version_number(aws: AppConfigStubs, clock: FakeClock) -> None:
    aws.deployments(aws.summary(8, 4, "COMPLETE"))
    aws.deployments(aws.summary(8, 4, "COMPLETE"), resolve_profile=True)
    aws.hosted(4, document(1, 2, 3, 10, 11, 12))
    aws.versions(1, 2, 3, 4)
    aws.hosted(3, document(1, 2, 3))
    aws.started(9, 3, state="COMPLETE")
    result = ops.rollback(aws.store, op=operator(clock, []))
    assert (result["from_version"], result["version"], result["removed"]) == (4, 3, 3)
    assert aws.sent["StartDeployment"][-1]["ConfigurationVersion"] == "3"
    note = Note.parse(aws.sent["StartDeployment"][-1]["Description"])
    assert note is not None
    assert note.rollback
    assert "CreateHostedConfigurationVersion" not in aws.sent


def test_rollback_of_one_tenant_writes_a_version_marked_rollback(
    aws: AppConfigStubs, clock: FakeClock
) -> None:
    in_force_v3(aws)
    aws.versions(1, 2, 3)
    aws.created(4, latest=3)
    aws.started(8, 4, state="COMPLETE")
    result = ops.rollback(aws.store, tenants={2}, op=operator(clock, []))
    assert (result["version"], result["removed"]) == (4, 1)
    assert aws.content_sent()["values"][KEY]["tenant_ids"] == [1, 3]
    assert "[rollback]" in aws.sent["CreateHostedConfigurationVersion"][-1]["Description"]


def test_history_lists_versions_with_their_changes_and_the_deployments(
    aws: AppConfigStubs, clock: FakeClock
) -> None:
    ours = Note("advance", "ops@test", "2026-11-02T09:00:00Z", None, 3, 0, text="to group-1").describe()
    aws.deployments(
        aws.summary(3, 1, "COMPLETE"),
        aws.summary(2, 2, "REVERTED"),
        aws.summary(1, 1, "COMPLETE"),
        resolve_profile=True,
    )
    aws.hosted(1, document(1, 2, 3), ours)
    aws.versions(1, 2, descriptions={1: ours, 2: "edited in the console"})
    aws.hosted(2, document(1, 2, 3, 7, 8))
    aws.deployments(
        aws.summary(3, 1, "COMPLETE"), aws.summary(2, 2, "REVERTED"), aws.summary(1, 1, "COMPLETE")
    )
    h = ops.history(aws.store)
    assert h["in_force"] == 1
    assert [(v["version"], v["by"], v["added"], v["removed"], v["in_force"]) for v in h["versions"]] == [
        (1, "ops@test", 3, 0, True),
        (2, None, 2, 0, False),  # written elsewhere: compared with version 1
    ]
    assert [(d["number"], d["version"], d["state"]) for d in h["deployments"]] == [
        (3, 1, "COMPLETE"),
        (2, 2, "REVERTED"),
        (1, 1, "COMPLETE"),
    ]


def test_names_are_resolved_and_a_profile_of_the_wrong_type_is_refused() -> None:
    client = boto3.client(
        "appconfig", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    store = AppConfigVersionStore(
        client, application="cutover", environment="prod", profile="other", flag_key=KEY
    )
    with Stubber(client) as stub:
        stub.add_client_error(
            "get_application",
            "ResourceNotFoundException",
            "no",
            404,
            expected_params={"ApplicationId": "cutover"},
        )
        stub.add_response(
            "list_applications",
            {"Items": [{"Id": "x9x9x9x", "Name": "billing"}], "NextToken": "n"},
            {"MaxResults": 50},
        )
        stub.add_response(
            "list_applications",
            {"Items": [{"Id": APP, "Name": "cutover"}]},
            {"MaxResults": 50, "NextToken": "n"},
        )
        assert store.app_id() == APP
        stub.add_response(
            "list_configuration_profiles",
            {"Items": [{"ApplicationId": APP, "Id": "zzzz999", "Name": "other", "Type": "AWS.Freeform"}]},
            {"ApplicationId": APP, "MaxResults": 50},
        )
        with pytest.raises(InputError, match=r"needs an AWS\.AppConfig\.FeatureFlags profile"):
            store.profile_id()


def test_missing_permissions_are_a_configuration_error(aws: AppConfigStubs) -> None:
    aws.stub.add_client_error("get_application", "AccessDeniedException", "not allowed", 403)
    with pytest.raises(ConfigError, match="AppConfig permissions"):
        aws.store.app_id()


# -- hosted configuration versions over moto's server (real HTTP, real serialisation) -------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_hosted_versions_round_trip_through_appconfig(moto_url: str, clock: FakeClock) -> None:
    client = boto3.client(
        "appconfig",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    app = client.create_application(Name="cutover")["Id"]
    client.create_configuration_profile(
        ApplicationId=app, Name="migration-flags", LocationUri="hosted", Type="AWS.AppConfig.FeatureFlags"
    )
    store = AppConfigVersionStore(
        client, application=app, environment="prod", profile="migration-flags", flag_key=KEY
    )
    first_note = Note("advance", "ops@test", "2026-11-02T09:00:00Z", None, 3, 0, text="to group-1")
    first = store.create_version(FlagContent(True, frozenset({3, 1, 2})), first_note, None)
    second_note = Note("rollback", "ops@test", "2026-11-02T10:00:00Z", first, 0, 1, rollback=True)
    second = store.create_version(FlagContent(True, frozenset({1, 3})), second_note, first)

    reader = AppConfigVersionStore(
        client, application=app, environment="prod", profile="migration-flags", flag_key=KEY
    )
    assert (first, second) == (1, 2)
    assert reader.content(1) == FlagContent(True, frozenset({1, 2, 3}))
    assert reader.content(2) == FlagContent(True, frozenset({1, 3}))
    assert Note.parse(reader.description(2)) == second_note
    stored = client.get_hosted_configuration_version(
        ApplicationId=app, ConfigurationProfileId=reader.profile_id(), VersionNumber=2
    )
    doc = json.loads(stored["Content"].read())
    assert set(doc) == {"version", "flags", "values"}
    assert doc["flags"][KEY]["attributes"]["tenant_ids"]["constraints"]["elements"] == {
        "type": "number",
        "minimum": 1,
    }
