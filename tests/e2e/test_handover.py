"""Replacing a replica in order hands the dispatch over at once, not after the lease expires.

Two ``cutover run`` processes share one ledger; the one dispatching gets SIGTERM (what ECS sends a
task it replaces). Without the hand-over the other could dispatch only once the 30-second lease
ran out, and a rolling deployment at the month-start peak would pause dispatching for that long
per replica.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import RunningController, run_controller, write_flag

pytestmark = pytest.mark.slow

LEASE_SECONDS = 30.0  # what bootstrap gives a 0.25 s cycle: max(30, 6 cycles)


def cycle(running: RunningController) -> dict[str, Any]:
    return dict(httpx.get(running.base + "/status", timeout=5).json()["cycle"])


def dispatcher(running: RunningController) -> bool:
    return bool(cycle(running)["dispatcher"])


def wait_for(what: str, check: Callable[[], bool], seconds: float) -> float:
    """Poll ``check`` until it is true; the time it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def test_an_orderly_stop_hands_the_dispatch_lease_to_another_replica(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    write_flag(shared / "flags.json", [1, 2, 3])
    (tmp_path / "b").mkdir()
    same_world = {
        "CUTOVER_FLAG_FILE": str(shared / "flags.json"),
        "CUTOVER_LEDGER": f"sqlite:///{shared / 'ledger.db'}",
        "CUTOVER_LOCAL_STATE_DIR": str(shared / "state"),
        "CUTOVER_OUTPUT_DIR": str(shared / "output"),
    }
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(run_controller(shared, same_world))
        wait_for("the first replica dispatches", lambda: dispatcher(a), 30)
        with run_controller(tmp_path / "b", same_world) as b:
            wait_for("the second replica runs cycles", lambda: cycle(b)["count"] >= 2, 30)
            assert not dispatcher(b)
            assert dispatcher(a)
            stack.close()  # SIGTERM to the first, and wait for it to exit
            assert a.returncode == 0, a.log_text()[-2000:]
            took = wait_for("the second replica dispatches", lambda: dispatcher(b), LEASE_SECONDS)
    events = [json.loads(line)["event"] for line in a.log_text().splitlines()]
    assert "lease.released" in events
    assert events.index("lease.released") < events.index("service.stopped")
    # The first replica renewed the lease up to its last cycle, just before it stopped: waiting
    # for it to expire would have taken most of LEASE_SECONDS.
    assert took < LEASE_SECONDS * 0.75, f"took {took:.1f} s"
