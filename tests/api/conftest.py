"""Fixtures of the service tests: a service on a real SQLite ledger in ``tmp_path`` and its app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path as FsPath

import pytest

from controller.service import Service

from .support import make_service, write_flag, write_rollout

GROUPS = {"group-1": [1, 2, 3], "group-2": [4, 5, 6, 7], "group-3": [8, 9, 10, 11, 12]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def service(tmp_path: FsPath) -> Iterator[Service]:
    """A service whose flag migrates group-1, with a three-group rollout plan."""
    write_flag(tmp_path / "flags.json", GROUPS["group-1"])
    write_rollout(tmp_path / "rollout.json", GROUPS)
    svc, _ = make_service(tmp_path)
    yield svc
    svc.close()
