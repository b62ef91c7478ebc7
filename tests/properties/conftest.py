"""Depth of the property runs: a CI profile by default, a deeper one with ``--long``.

``--long`` works when pytest is pointed at this directory (``pytest tests/properties --long``);
``CUTOVER_LONG_PROPERTIES=1`` works from anywhere.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the stateful property tests with many more and longer examples",
    )


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True for a deep run: ``--long`` or ``CUTOVER_LONG_PROPERTIES=1``."""
    return (
        bool(request.config.getoption("--long", default=False))
        or os.environ.get("CUTOVER_LONG_PROPERTIES") == "1"
    )
