"""Fixtures of the flag tests: a clock to move by hand, the fake agent on loopback, a flag workspace."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fake import FakeAgent


class FakeClock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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
