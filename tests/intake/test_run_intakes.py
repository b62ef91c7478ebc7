"""`cutover run` with a scheduled finder: conversions arrive by themselves and show on /status and /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_takes_conversions_from_its_finder(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "CUTOVER_TARGET_FINDER": "tests.intake.sample_finder:find",
            "CUTOVER_FIND_EVERY": "3600",
            "CUTOVER_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
            "CUTOVER_FLAG_FILE": str(tmp_path / "flags.json"),
            "CUTOVER_LOCAL_STATE_DIR": str(tmp_path / "state"),
            "CUTOVER_OUTPUT_DIR": str(tmp_path / "out"),
            "CUTOVER_CYCLE_SECONDS": "0.2",
        }
    )
    (tmp_path / "flags.json").write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [2]}}')
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        status = {}
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"{base}/status", timeout=5).json()
            except httpx.HTTPError:
                status = {}
            if status.get("conversions", {}).get("succeeded") == 3:
                break
            time.sleep(0.3)
        assert status["conversions"]["succeeded"] == 3, status
        source = status["intake"]["sources"][0]
        assert (source["kind"], source["name"], source["accepted"], source["errors"]) == (
            "finder",
            "sample_finder",
            3,
            0,
        )
        assert status["by_path"]["new"]["succeeded"] == 1
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert (
            'cutover_intake_source_total{kind="finder",name="sample_finder",what="accepted"} 3.0' in metrics
        )
        record = httpx.get(f"{base}/conversions/slot{source['watermark']}-1", timeout=5).json()
        assert (record["tenant_id"], record["path"], record["state"]) == (2, "new", "succeeded")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
