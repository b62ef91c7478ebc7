"""``cutover status`` against a running API: a readable summary, the raw document with ``--json``,
and one line on stderr with a non-zero exit when the controller cannot answer."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path as FsPath

from controller.api.app import create_app
from controller.api.status import status_lines
from controller.cli.app import _listen
from controller.ledger.sqlite import SQLiteLedger
from controller.service import Service

from .support import SwitchableLedger, make_service, run_until_settled, serve, write_flag

REPO = FsPath(__file__).resolve().parents[2]


def cutover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_status_prints_a_summary_and_the_raw_document(service: Service) -> None:
    from controller.core.domain import ConversionRequest

    service.ledger.accept([ConversionRequest("a", 1, {}), ConversionRequest("b", 9, {})], 0.0)
    run_until_settled(service)
    with serve(create_app(service, None)) as base:
        summary = cutover("status", "--url", base)
        raw = cutover("status", "--url", base, "--json")
    assert summary.returncode == 0, summary.stderr
    assert "(ok, 3 tenants" in summary.stdout
    assert "succeeded 2" in summary.stdout
    assert raw.returncode == 0
    assert json.loads(raw.stdout)["conversions"]["succeeded"] == 2


def test_status_of_a_controller_whose_ledger_is_down_is_one_line_on_stderr(tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", [1])
    ledger = SwitchableLedger(SQLiteLedger(tmp_path / "ledger.db"))
    service, _ = make_service(tmp_path, ledger=ledger)  # type: ignore[arg-type]
    ledger.down = True
    with serve(create_app(service, None)) as base:
        done = cutover("status", "--url", base)
    assert done.returncode == 2
    assert done.stderr.startswith("cutover: error: ")
    assert "503" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_status_of_nothing_listening_is_one_line_on_stderr() -> None:
    done = cutover("status", "--url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "cannot read the status of http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_summary_names_holds_errors_and_version_skew() -> None:
    doc = {
        "flag": {
            "version": "v2",
            "state": "stale",
            "tenant_count": 5,
            "age_seconds": 900.0,
            "problem": "agent down",
        },
        "budget": 20,
        "in_flight": {"legacy": 4, "new": 6},
        "conversions": {"claimed": 1},
        "queued": {"legacy": 0, "new": 12},
        "cycle": {"held": True, "hold_reason": "flag v2 is 900s old", "errors": ["poll new: timed out"]},
        "skew": {
            "window_seconds": 600,
            "skewed": True,
            "versions": [
                {"flag_version": "v2", "legacy": 3, "new": 7},
                {"flag_version": None, "legacy": 2, "new": 0},
            ],
        },
    }
    text = "\n".join(status_lines(doc))
    assert "flag problem: agent down" in text
    assert "queued at the backends: legacy 0 / new 12" in text
    assert "work held: flag v2 is 900s old" in text
    assert "cycle error: poll new: timed out" in text
    assert "v2 (legacy 3, new 7), no flag (legacy 2, new 0)" in text
    assert "auto-advance" not in text  # an older server, or auto-advance off


def test_status_lines_say_what_auto_advance_does_next() -> None:
    doc = {
        "flag": {"version": "v3", "state": "ok", "tenant_count": 50, "age_seconds": 1.0},
        "budget": 20,
        "in_flight": {"legacy": 1, "new": 2},
        "conversions": {"received": 0},
        "auto_advance": {
            "enabled": True,
            "next_action": "wait",
            "group": "group-3",
            "why": "the last change to bake",
        },
    }
    assert status_lines(doc)[-1] == "auto-advance: next wait group-3: the last change to bake"


def test_the_listener_is_tcp_so_its_connections_send_without_delay() -> None:
    """asyncio sets TCP_NODELAY only on connections of a socket made with IPPROTO_TCP; with proto 0
    every answer of ``cutover run`` waited ~40 ms for the client's delayed ACK."""
    listener = _listen("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
    finally:
        listener.close()
