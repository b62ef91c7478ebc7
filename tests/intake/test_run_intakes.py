"""`cutover run` with a scheduled finder: conversions arrive by themselves and show on /status and /metrics."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.api.support import run_controller


def test_run_takes_conversions_from_its_finder(tmp_path: Path):
    (tmp_path / "flags.json").write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [2]}}')
    env = {
        "CUTOVER_TARGET_FINDER": "tests.intake.sample_finder:find",
        "CUTOVER_FIND_EVERY": "3600",
        "CUTOVER_CYCLE_SECONDS": "0.2",
    }
    with run_controller(tmp_path, env) as running:
        base = running.base
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
    assert running.returncode == 0, running.log_text()[-2000:]
