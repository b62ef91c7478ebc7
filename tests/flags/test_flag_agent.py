"""The agent source against a real HTTP server on loopback that answers as the AppConfig Agent does."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from controller.core.errors import FlagInvalidError, FlagNotDeployedError, FlagUnavailableError
from flags.agent import AgentFlagSource
from tests.fakes import FakeClock

from .agent_fake import FakeAgent


def source(url: str, clock: FakeClock, **kw: object) -> AgentFlagSource:
    options: dict[str, object] = {"connect_timeout": 0.3, "read_timeout": 0.5, "startup_seconds": 0.0}
    options.update(kw)
    return AgentFlagSource(url, "cutover", "prod", "migration-flags", "migrated_tenants", clock, **options)  # type: ignore[arg-type]


@pytest.fixture
def src(agent: FakeAgent, clock: FakeClock) -> Iterator[AgentFlagSource]:
    s = source(agent.url, clock)
    yield s
    s.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_reads_the_one_flag_by_its_key_and_takes_the_version_from_the_header(
    agent: FakeAgent, src: AgentFlagSource
) -> None:
    agent.deploy(True, [101, 202, 303], other_flag={"enabled": True})
    snap = src.fetch()
    assert snap.enabled
    assert snap.tenant_ids == frozenset({101, 202, 303})
    assert snap.version == "1"
    assert not snap.version_from_content
    assert snap.source == "agent"
    assert (
        agent.requests[-1]["path"] == "/applications/cutover/environments/prod/configurations/migration-flags"
    )
    assert agent.requests[-1]["query"] == {"flag": ["migrated_tenants"]}


def test_a_new_deployment_is_seen_with_its_new_version(agent: FakeAgent, src: AgentFlagSource) -> None:
    agent.deploy(True, [1, 2])
    first = src.fetch()
    agent.deploy(True, [1, 2, 3])
    second = src.fetch()
    assert (first.version, second.version) == ("1", "2")
    assert second.tenant_ids - first.tenant_ids == {3}


def test_a_switched_off_flag_means_nobody_migrated_not_an_error(
    agent: FakeAgent, src: AgentFlagSource
) -> None:
    agent.deploy(False, [1, 2, 3])
    snap = src.fetch()
    assert not snap.enabled
    assert not snap.migrated(1)
    assert snap.tenant_count == 0


@pytest.mark.parametrize("header", ["ConfigurationVersion", "configuration-version"])
def test_the_version_header_is_read_in_either_documented_spelling(
    agent: FakeAgent, src: AgentFlagSource, header: str
) -> None:
    agent.deploy(True, [7])
    agent.misbehave = {"version_header": header}
    assert src.fetch().version == "1"


def test_without_a_version_header_the_content_hash_stands_in_and_the_snapshot_says_so(
    agent: FakeAgent, src: AgentFlagSource
) -> None:
    agent.deploy(True, [7])
    agent.misbehave = {"version_header": None}
    snap = src.fetch()
    assert snap.version_from_content
    assert snap.version.startswith("sha-")


def test_before_the_first_deployment_the_agent_404_is_not_deployed_yet(src: AgentFlagSource) -> None:
    with pytest.raises(FlagNotDeployedError, match="404"):
        src.fetch()


@pytest.mark.parametrize("status", [500, 502, 504])
def test_an_agent_error_is_unavailable_not_invalid(
    agent: FakeAgent, src: AgentFlagSource, status: int
) -> None:
    agent.deploy(True, [1])
    agent.misbehave = {"status": status}
    with pytest.raises(FlagUnavailableError, match=str(status)) as caught:
        src.fetch()
    assert not isinstance(caught.value, FlagNotDeployedError)


def test_the_bearer_token_is_sent_when_set(agent: FakeAgent, clock: FakeClock) -> None:
    agent.deploy(True, [5])
    agent.token = "s3cret"
    without = source(agent.url, clock)
    with_token = source(agent.url, clock, token="s3cret")
    try:
        with pytest.raises(FlagUnavailableError, match="CUTOVER_AGENT_TOKEN"):
            without.fetch()
        assert with_token.fetch().tenant_ids == {5}
        assert agent.requests[-1]["headers"]["Authorization"] == "Bearer s3cret"
    finally:
        without.close()
        with_token.close()


def test_an_agent_that_does_not_answer_in_time_is_unavailable_within_the_bound(
    agent: FakeAgent, src: AgentFlagSource
) -> None:
    agent.deploy(True, [1])
    agent.misbehave = {"slow_headers": 2.0}
    started = time.monotonic()
    with pytest.raises(FlagUnavailableError, match="did not answer"):
        src.fetch()
    assert time.monotonic() - started < 0.8 * 3 + 2  # timeout x 3 + 2 s: generous on a loaded machine


def test_a_body_that_trickles_in_is_cut_off_at_the_deadline(agent: FakeAgent, src: AgentFlagSource) -> None:
    agent.deploy(True, list(range(1, 40)))
    agent.misbehave = {"drip": 0.05}
    started = time.monotonic()
    with pytest.raises(FlagUnavailableError, match="did not answer"):
        src.fetch()
    # Each byte comes well within the read timeout; only the overall deadline (0.8 s) stops it,
    # long before the whole body (about 7 s) would have arrived.
    assert time.monotonic() - started < 0.8 * 3 + 2


def test_a_truncated_body_is_unavailable_and_never_parsed(agent: FakeAgent, src: AgentFlagSource) -> None:
    agent.deploy(True, [1, 2, 3])
    agent.misbehave = {"truncate": True}
    with pytest.raises(FlagUnavailableError, match="broke off"):
        src.fetch()


def test_a_wrong_content_type_is_an_invalid_flag(agent: FakeAgent, src: AgentFlagSource) -> None:
    agent.deploy(True, [1])
    agent.misbehave = {"content_type": "text/html"}
    with pytest.raises(FlagInvalidError, match="text/html"):
        src.fetch()


def test_a_bad_value_in_the_body_is_invalid_and_named(agent: FakeAgent, src: AgentFlagSource) -> None:
    agent.deploy(True, [1, 2, "3"])
    with pytest.raises(FlagInvalidError, match=r"tenant_ids\[2\]"):
        src.fetch()


def test_a_flag_key_the_profile_does_not_define_is_invalid(agent: FakeAgent, clock: FakeClock) -> None:
    agent.deploy(True, [1])
    s = AgentFlagSource(
        agent.url, "cutover", "prod", "migration-flags", "other_key", clock, startup_seconds=0
    )
    try:
        with pytest.raises(FlagInvalidError, match="no flag 'other_key'"):
            s.fetch()
        assert agent.requests[-1]["query"] == {"flag": ["other_key"]}
    finally:
        s.close()


def test_a_body_that_is_not_json_is_invalid(agent: FakeAgent, src: AgentFlagSource) -> None:
    agent.deploy(True, [1])
    agent.misbehave = {"body": b"<html>gateway</html>"}
    with pytest.raises(FlagInvalidError, match="not valid JSON"):
        src.fetch()


def test_connection_refused_after_the_start_up_budget_is_unavailable_at_once(clock: FakeClock) -> None:
    s = source(f"http://127.0.0.1:{closed_port()}", clock, startup_seconds=0.0)
    try:
        started = time.monotonic()
        with pytest.raises(FlagUnavailableError, match="not up"):
            s.fetch()
        assert time.monotonic() - started < 0.5
    finally:
        s.close()


def test_a_sidecar_still_starting_is_waited_for_within_the_budget(clock: FakeClock) -> None:
    port = closed_port()
    late: list[FakeAgent] = []

    def listen_later() -> None:
        time.sleep(0.4)
        agent = FakeAgent(port=port)
        agent.deploy(True, [42])
        late.append(agent)

    starter = threading.Thread(target=listen_later)
    starter.start()
    s = source(f"http://127.0.0.1:{port}", clock, startup_seconds=5.0)
    try:
        snap = s.fetch()
        assert snap.tenant_ids == {42}
        assert len(late[0].requests) == 1  # refused attempts never reached it; one request did
    finally:
        starter.join()
        s.close()
        for agent in late:
            agent.stop()


def test_once_the_agent_has_answered_a_refused_connection_is_not_retried(
    agent: FakeAgent, clock: FakeClock
) -> None:
    agent.deploy(True, [1])
    s = source(agent.url, clock, startup_seconds=30.0)
    try:
        s.fetch()
        agent.stop()
        started = time.monotonic()
        with pytest.raises(FlagUnavailableError, match="not up"):
            s.fetch()
        assert time.monotonic() - started < 1.0
    finally:
        s.close()


def test_each_fetch_is_exactly_one_request(agent: FakeAgent, src: AgentFlagSource) -> None:
    agent.deploy(True, [1, 2])
    for _ in range(5):
        src.fetch()
    assert len(agent.requests) == 5
