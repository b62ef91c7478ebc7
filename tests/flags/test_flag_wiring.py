"""Settings name the flag source; the composition root builds it with the settings' bounds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from controller.bootstrap import make_flag_source
from controller.core.errors import ConfigError
from controller.settings import Settings, load_settings
from flags.agent import AgentFlagSource
from flags.appconfigdata import AppConfigDataSource
from flags.file_source import FileFlagSource

from .agent_fake import FakeAgent


def test_each_flag_source_setting_builds_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert isinstance(make_flag_source(Settings(flag_file=tmp_path / "f.json"), time.time), FileFlagSource)
    agent = make_flag_source(Settings(flag_source="agent"), time.time)
    assert isinstance(agent, AgentFlagSource)
    agent.close()
    assert isinstance(make_flag_source(Settings(flag_source="appconfigdata"), time.time), AppConfigDataSource)


def test_the_agent_token_setting_is_sent_as_a_bearer_token(agent: FakeAgent) -> None:
    agent.token = "from-settings"
    agent.deploy(True, [4])
    source = make_flag_source(
        Settings(flag_source="agent", agent_url=agent.url, agent_token="from-settings"), time.time
    )
    try:
        assert source.fetch().tenant_ids == {4}
    finally:
        source.close()  # type: ignore[attr-defined]


def test_agent_timeouts_must_fit_well_inside_a_cycle() -> None:
    with pytest.raises(
        ConfigError, match="CUTOVER_AGENT_CONNECT_TIMEOUT \\+ CUTOVER_AGENT_READ_TIMEOUT must stay under"
    ):
        load_settings(
            flag_source="agent", cycle_seconds=2.0, agent_connect_timeout=1.0, agent_read_timeout=1.5
        )
    assert load_settings(flag_source="agent", cycle_seconds=5.0).agent_read_timeout == 2.0
