"""The Data API source against boto3 with botocore's Stubber (requests and answers shape-checked
against the real service model): sessions, poll intervals, unchanged answers, expired tokens."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from controller.core.errors import FlagInvalidError, FlagNotDeployedError, FlagUnavailableError
from flags.appconfigdata import AppConfigDataSource
from tests.fakes import FakeClock

SESSION = {
    "ApplicationIdentifier": "cutover",
    "EnvironmentIdentifier": "prod",
    "ConfigurationProfileIdentifier": "migration-flags",
    "RequiredMinimumPollIntervalInSeconds": 15,
}


def body(doc: Any) -> StreamingBody:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return StreamingBody(io.BytesIO(data), len(data))


def flag(*ids: int, enabled: bool = True) -> dict[str, Any]:
    return {"migrated_tenants": {"enabled": enabled, "tenant_ids": list(ids)}}


class Data:
    """A stubbed appconfigdata client and the source reading through it."""

    def __init__(self, clock: FakeClock) -> None:
        self.client = boto3.client(
            "appconfigdata",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.stub = Stubber(self.client)
        self.source = AppConfigDataSource(
            self.client, "cutover", "prod", "migration-flags", "migrated_tenants", clock
        )
        self.tokens = 0

    def session(self) -> str:
        self.tokens += 1
        token = f"token-{self.tokens}"
        self.stub.add_response("start_configuration_session", {"InitialConfigurationToken": token}, SESSION)
        return token

    def poll(self, token: str, content: Any, interval: int = 30, **extra: Any) -> str:
        self.tokens += 1
        nxt = f"token-{self.tokens}"
        answer = {
            "NextPollConfigurationToken": nxt,
            "NextPollIntervalInSeconds": interval,
            "ContentType": "application/json",
            "Configuration": body(content),
            **extra,
        }
        self.stub.add_response("get_latest_configuration", answer, {"ConfigurationToken": token})
        return nxt


@pytest.fixture
def data(clock: FakeClock) -> Iterator[Data]:
    d = Data(clock)
    with d.stub:
        yield d
    d.stub.assert_no_pending_responses()


def test_reads_the_flag_and_serves_it_until_the_next_poll_is_due(data: Data, clock: FakeClock) -> None:
    token = data.poll(data.session(), flag(1, 2), interval=30)
    first = data.source.fetch()
    assert first.tenant_ids == {1, 2}
    assert first.version_from_content  # the Data API gives no version number
    clock.advance(29)
    assert data.source.fetch() is first  # no call: the Stubber would fail on one
    clock.advance(2)
    data.poll(token, flag(1, 2, 3))
    assert data.source.fetch().tenant_ids == {1, 2, 3}


def test_an_empty_body_means_unchanged_and_confirms_the_snapshot(data: Data, clock: FakeClock) -> None:
    token = data.poll(data.session(), flag(5), interval=15)
    first = data.source.fetch()
    clock.advance(20)
    data.poll(token, b"", interval=15)
    again = data.source.fetch()
    assert (again.tenant_ids, again.version) == (first.tenant_ids, first.version)
    assert again.fetched_at == clock()  # the source confirmed it just now: its age starts over


def test_the_version_label_is_the_version_when_there_is_one(data: Data) -> None:
    data.poll(data.session(), flag(5), VersionLabel="group-2")
    snap = data.source.fetch()
    assert (snap.version, snap.version_from_content) == ("group-2", False)


def test_a_refused_token_starts_a_new_session_once(data: Data, clock: FakeClock) -> None:
    token = data.poll(data.session(), flag(1), interval=15)
    data.source.fetch()
    clock.advance(16)
    data.stub.add_client_error(
        "get_latest_configuration",
        "BadRequestException",
        "Token expired",
        400,
        expected_params={"ConfigurationToken": token},
    )
    data.poll(data.session(), flag(1, 9))
    assert data.source.fetch().tenant_ids == {1, 9}
    assert data.source.sessions == 2


def test_a_rejected_version_stays_rejected_while_the_service_says_unchanged(
    data: Data, clock: FakeClock
) -> None:
    token = data.poll(data.session(), flag(1), interval=15)
    data.source.fetch()
    clock.advance(16)
    token = data.poll(token, {"migrated_tenants": {"enabled": True, "tenant_ids": [1, 2.5]}}, interval=15)
    with pytest.raises(FlagInvalidError, match=r"tenant_ids\[1\]"):
        data.source.fetch()
    clock.advance(16)
    data.poll(token, b"", interval=15)
    with pytest.raises(FlagInvalidError, match=r"tenant_ids\[1\]"):
        data.source.fetch()


def test_nothing_deployed_is_not_deployed_yet(data: Data) -> None:
    data.stub.add_client_error(
        "start_configuration_session",
        "ResourceNotFoundException",
        "no such profile",
        404,
        expected_params=SESSION,
    )
    with pytest.raises(FlagNotDeployedError, match="no such profile"):
        data.source.fetch()


def test_a_service_error_is_unavailable(data: Data) -> None:
    data.session()
    data.stub.add_client_error("get_latest_configuration", "InternalServerException", "boom", 500)
    with pytest.raises(FlagUnavailableError, match="boom") as caught:
        data.source.fetch()
    assert not isinstance(caught.value, FlagNotDeployedError)


def test_multi_variant_flags_in_ion_are_rejected(data: Data) -> None:
    data.poll(data.session(), b"{migrated_tenants:{}}", ContentType="application/ion")
    with pytest.raises(FlagInvalidError, match="Amazon Ion"):
        data.source.fetch()


class BrokenStream:
    """A response body whose connection drops while it is read."""

    def read(self, *args: Any) -> bytes:
        from urllib3.exceptions import ProtocolError

        raise ProtocolError("Connection broken: IncompleteRead(0 bytes read, 40 more expected)")

    def close(self) -> None:
        return None


def test_a_body_lost_in_transit_is_read_again_from_a_new_session_and_never_lost(
    data: Data, clock: FakeClock
) -> None:
    """The poll that carried a new version broke while its body was read: its token was spent, so
    the next poll must not ask "anything new since?" with it (the answer would be "unchanged" for
    good); a new session hands over the whole configuration, and the new version is applied."""
    from flags.lkg import LastKnownGood
    from flags.snapshot import FlagState
    from tests.flags.test_flag_last_known_good import MemoryStore

    lkg = LastKnownGood(data.source, MemoryStore(), clock)
    token = data.poll(data.session(), flag(1), interval=15)
    assert lkg.read().snapshot.tenant_ids == {1}  # type: ignore[union-attr]
    clock.advance(16)
    data.stub.add_response(
        "get_latest_configuration",
        {
            "NextPollConfigurationToken": "spent-with-the-broken-answer",
            "NextPollIntervalInSeconds": 15,
            "ContentType": "application/json",
            "Configuration": StreamingBody(BrokenStream(), 40),  # type: ignore[arg-type]
        },
        {"ConfigurationToken": token},
    )
    broken = lkg.read()
    assert broken.state is FlagState.UNAVAILABLE
    assert broken.snapshot is not None
    assert broken.snapshot.tenant_ids == {1}
    clock.advance(16)
    data.poll(data.session(), flag(1, 2))
    fixed = lkg.read()
    assert fixed.state is FlagState.OK
    assert fixed.snapshot is not None
    assert fixed.snapshot.tenant_ids == {1, 2}
