"""Fixtures of the AWS tests: one moto server on 127.0.0.1 for the session, wiped before each test."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from controller.ledger.dynamodb import DynamoDBLedger, create_table
from controller.plumbing.aws import Backoff, Retrier
from tests.aws.moto_world import TABLE, MotoServer, World, codebuild_as_documented, shared_server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with codebuild_as_documented():
        yield shared_server()


@pytest.fixture
def world(moto_server: MotoServer) -> World:
    moto_server.reset()
    return World(moto_server)


@pytest.fixture
def waits() -> list[float]:
    """The backoff waits a test's retrier asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def retrier(waits: list[float]) -> Retrier:
    return Retrier(Backoff(attempts=5, base=0.2, cap=5.0), sleep=waits.append, rng=random.Random(7))


@pytest.fixture
def dynamo_ledger(world: World, retrier: Retrier) -> DynamoDBLedger:
    client = world.client("dynamodb")
    create_table(client, TABLE)
    world.calls.clear()
    return DynamoDBLedger(client, TABLE, retention_seconds=86400.0, retrier=retrier)
