"""A replica restarted after a crash takes its own dispatch lease back at once.

One ``cutover run`` killed with SIGKILL (an out-of-memory kill, a host crash) keeps its lease in
the ledger until it expires. With one controller, a restart that waited it out would stop every
dispatch for half a minute per crash. The replica's identity is its host and the address it
listens on, which no other live process can hold, so the restarted process knows the lease as its
own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.support import write_flag

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 30.0  # what bootstrap gives a 0.25 s cycle: max(30, 6 cycles)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "CUTOVER_FLAG_FILE": str(workdir / "flags.json"),
            "CUTOVER_LEDGER": f"sqlite:///{workdir / 'ledger.db'}",
            "CUTOVER_LOCAL_STATE_DIR": str(workdir / "state"),
            "CUTOVER_OUTPUT_DIR": str(workdir / "output"),
            "CUTOVER_CYCLE_SECONDS": "0.25",
        }
    )
    log = (workdir / "controller.log").open("ab")
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "run", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def dispatcher(base: str) -> bool:
    try:
        return bool(httpx.get(base + "/status", timeout=2).json()["cycle"]["dispatcher"])
    except (httpx.TransportError, KeyError, TypeError, ValueError):
        return False


def wait_for(what: str, check: Callable[[], bool], seconds: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_replica_restarted_after_sigkill_dispatches_again_without_waiting_out_its_lease(
    tmp_path: Path,
) -> None:
    write_flag(tmp_path / "flags.json", [1, 2, 3])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start(tmp_path, port)
    try:
        wait_for("the replica dispatches", lambda: dispatcher(base), 60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        restarted_at = time.monotonic()
        second = start(tmp_path, port)
        try:
            wait_for("the restarted replica dispatches", lambda: dispatcher(base), LEASE_SECONDS + 30)
            took = time.monotonic() - restarted_at
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # Start-up takes a few seconds on a busy machine; waiting out the lease would take 30 more.
    assert took < LEASE_SECONDS * 0.5, (
        f"took {took:.1f} s:\n" + (tmp_path / "controller.log").read_text()[-3000:]
    )


def test_two_replicas_on_one_host_are_told_apart_by_their_address(tmp_path: Path) -> None:
    """The identity is stable across a restart but never shared by two live replicas: a second
    replica beside the first (another port, same ledger) does not dispatch while the first does."""
    write_flag(tmp_path / "flags.json", [1, 2, 3])
    ports = free_port(), free_port()
    procs = [start(tmp_path, p) for p in ports]
    try:
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        wait_for("one replica dispatches", lambda: any(dispatcher(b) for b in bases), 60)
        time.sleep(2)
        assert sum(dispatcher(b) for b in bases) == 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
