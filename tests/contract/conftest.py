"""The ledger implementations the contract suite runs against.

Each factory takes pytest's ``tmp_path`` and returns a fresh, empty ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.ledger_sqlite import SQLiteLedger

LEDGER_FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], Any]] = {
    "sqlite": lambda tmp_path, request: SQLiteLedger(tmp_path / "contract.db"),
}


@pytest.fixture(params=sorted(LEDGER_FACTORIES))
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    instance = LEDGER_FACTORIES[request.param](tmp_path, request)
    yield instance
    instance.close()
