"""Fixtures of the flag tests: the fake agent on loopback and a flag workspace (the clock is shared)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from .agent_fake import FakeAgent


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    server = FakeAgent()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _quiet_flag_logs() -> None:
    # flag.rejected / flag.unavailable warnings are expected in these tests.
    logging.getLogger("cutover.flags").setLevel(logging.ERROR)


@pytest.fixture
def flag_file(tmp_path: Path) -> Path:
    return tmp_path / "flags.json"
