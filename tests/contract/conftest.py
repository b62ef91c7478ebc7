"""The ledger implementations the contract suite runs against.

Each factory takes pytest's ``tmp_path`` and returns a fresh, empty ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.ledger.memory import MemoryLedger
from controller.ledger.sqlite import SQLiteLedger


def _dynamodb(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A DynamoDB ledger on a fresh table of the suite's moto server (127.0.0.1), deleted afterwards."""
    from controller.ledger.dynamodb import DynamoDBLedger, create_table
    from controller.plumbing.aws import Retrier
    from tests.aws.moto_world import World, shared_server

    client = World(shared_server()).client("dynamodb", hooked=False)
    table = f"contract-{uuid.uuid4().hex[:12]}"
    create_table(client, table)
    request.addfinalizer(lambda: client.delete_table(TableName=table))
    return DynamoDBLedger(client, table, retrier=Retrier(sleep=lambda _: None))


LEDGER_FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], Any]] = {
    "sqlite": lambda tmp_path, request: SQLiteLedger(tmp_path / "contract.db"),
    "dynamodb": _dynamodb,
    "memory": lambda tmp_path, request: MemoryLedger(),
}


@pytest.fixture(params=sorted(LEDGER_FACTORIES))
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    instance = LEDGER_FACTORIES[request.param](tmp_path, request)
    yield instance
    instance.close()
