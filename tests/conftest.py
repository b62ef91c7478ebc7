"""Fixtures shared by every tier of the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.ledger.sqlite import SQLiteLedger
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sqlite_ledger(tmp_path: Path):
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    yield ledger
    ledger.close()
