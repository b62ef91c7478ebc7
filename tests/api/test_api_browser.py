"""The dashboard in a real headless Chromium, served by ``cutover run`` on 127.0.0.1 after an hour
of history and a live wave of demo conversions worked by the local runners.

The page must render, its SVG chart must have data points, its group bars must show the flag's
tenants, its panel must forecast moving the next group, its nonce-bound style and script must run
under the CSP, and it must refresh itself. A screenshot is written to the test's temporary
directory.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

import httpx
import pytest

from controller.cli.demo import rollout_groups
from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.ports import Claim, Dispatched, Finish
from controller.ledger.sqlite import SQLiteLedger

from .support import run_controller, write_flag, write_rollout

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,900",
)


def find_browser() -> str | None:
    """A Chromium binary: ``CUTOVER_CHROMIUM`` if set, else the first one on PATH."""
    configured = os.environ.get("CUTOVER_CHROMIUM")
    if configured:
        return configured if shutil.which(configured) else None
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium binary found (looked for CUTOVER_CHROMIUM, " + ", ".join(BROWSERS) + " on PATH)",
)


def seed_history(workdir: FsPath, groups: dict[str, list[int]]) -> None:
    """The last hour as a rollout left it: finished conversions, decided minute by minute under two
    flag versions with a rising share on the new path, and a few failures."""
    ledger = SQLiteLedger(workdir / "ledger.db")
    rng = random.Random(5)
    tenants = [t for ids in groups.values() for t in ids]
    early = set(groups["group-1"])
    later = early | set(groups["group-2"])
    now = time.time()
    n = 0
    for minutes_ago in range(55, 1, -1):
        at = now - minutes_ago * 60
        version, migrated = ("v-history-1", early) if minutes_ago > 20 else ("v-history-2", later)
        claims = []
        for _ in range(rng.randint(6, 14)):
            tenant = rng.choice(tenants)
            path = Path.NEW if tenant in migrated else Path.LEGACY
            claims.append(Claim(ConversionRequest(f"h{n}", tenant, {}), path, version, "history"))
            n += 1
        ledger.claim(claims, at)
        for path in Path:
            taken = ledger.mark_dispatching(
                ledger.pending_dispatch(path, 100), f"H{minutes_ago}{path.value}", at
            )
            ledger.mark_dispatched(
                [Dispatched(r.conversion_id, r.fence, f"job-{r.conversion_id}") for r in taken], at
            )
            ledger.mark_finished(
                [
                    Finish(
                        r.conversion_id,
                        r.fence,
                        ConversionState.FAILED
                        if i == 0 and minutes_ago % 17 == 0
                        else ConversionState.SUCCEEDED,
                        "worker exited with status 2: form 'Expenses' has no columns",
                    )
                    for i, r in enumerate(taken)
                ],
                at + 30,
            )
    ledger.close()


@pytest.fixture
def running(tmp_path: FsPath) -> Iterator[tuple[str, FsPath, dict[str, list[int]]]]:
    """``cutover run`` on a free loopback port, over a demo workdir with history; stopped afterwards."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    groups = rollout_groups()
    write_rollout(workdir / "rollout.json", groups)
    write_flag(workdir / "flags.json", groups["group-1"] + groups["group-2"])
    seed_history(workdir, groups)
    env = {
        "CUTOVER_ROLLOUT_FILE": str(workdir / "rollout.json"),
        "CUTOVER_CYCLE_SECONDS": "0.25",
        "CUTOVER_BUDGET": "6",
    }
    with run_controller(workdir, env) as server:
        yield server.base, workdir, groups
    # Stopped in order, and every line it logged is one JSON event.
    events = [json.loads(line) for line in server.log_text().splitlines()]
    assert server.returncode == 0
    assert events[-1]["event"] == "service.stopped"
    assert {"service.started", "conversion.received", "route.decided", "conversion.outcome"} <= {
        e["event"] for e in events
    }


def live_wave(base: str, groups: dict[str, list[int]]) -> list[str]:
    """Four conversions per group through the intake, one of them failing; wait until all finish."""
    items: list[dict[str, Any]] = []
    for name, ids in groups.items():
        for tenant in ids[:4]:
            params = {"report": "monthly"}
            if name == "group-3" and tenant == ids[0]:
                params["simulate"] = "fail"
            items.append({"conversion_id": f"live-{tenant}", "tenant_id": tenant, "params": params})
    r = httpx.post(base + "/conversions", json={"conversions": items}, timeout=10)
    assert r.status_code == 202, r.text
    ids = [i["conversion_id"] for i in items]
    deadline = time.monotonic() + 120
    while True:
        states = [httpx.get(f"{base}/conversions/{cid}", timeout=10).json()["state"] for cid in ids]
        if all(s in ("succeeded", "failed") for s in states):
            return ids
        if time.monotonic() > deadline:
            raise AssertionError(f"live wave did not finish: {states}")
        time.sleep(0.5)


def forecast_kept(base: str, timeout: float = 60.0) -> str:
    """The page once the housekeeping thread has forecast the next group from the live wave's
    timings (the seeded history has none): the forecast is never worked out per request."""
    deadline = time.monotonic() + timeout
    while True:
        page = httpx.get(base + "/", timeout=10).text
        if 'id="forecast-group"' in page:
            return page
        if time.monotonic() > deadline:
            found = re.search(r'<section id="forecast".*?</section>', page, re.S)
            raise AssertionError(f"no forecast kept: {found.group(0) if found else 'no panel'}")
        time.sleep(0.5)


def chromium(args: list[str], profile: FsPath) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run(
        [BROWSER, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def png_size(path: FsPath) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@needs_browser
def test_the_dashboard_renders_in_chromium(
    running: tuple[str, FsPath, dict[str, list[int]]], tmp_path: FsPath
) -> None:
    base, _, groups = running
    live = live_wave(base, groups)
    status = httpx.get(base + "/status", timeout=10).json()
    assert status["cycle"]["count"] >= 3
    flag_tenants = set(groups["group-1"] + groups["group-2"])
    forecast_kept(base)

    dom = chromium(["--virtual-time-budget=7000", "--dump-dom", base + "/"], tmp_path / "profile-dom")
    html = dom.stdout
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<main>" in html, "the page rendered"
    assert 'id="flag-version"' in html
    assert re.search(r'id="flag-version">([^<]+)<', html).group(1) == status["flag"]["version"]  # type: ignore[union-attr]
    assert len(re.findall(r'<circle class="point"', html)) >= 30, "the chart has a point per busy minute"
    assert len(re.findall(r'<g class="minute"', html)) >= 30
    bars = re.findall(r'data-group="([^"]+)" data-tenants="(\d+)" data-migrated="(\d+)"', html)
    assert [(g, int(t), int(m)) for g, t, m in bars] == [
        (name, len(ids), len(flag_tenants & set(ids))) for name, ids in groups.items()
    ]
    assert sum(int(m) for _, _, m in bars) == status["flag"]["tenant_count"] == len(flag_tenants)
    assert "unavailable:" not in html
    panel = re.search(r'<section id="forecast".*?</section>', html, re.S)
    assert panel, "the next group's forecast is on the page"
    assert re.search(r'id="forecast-group">group-3<', panel.group(0)), "the next group is group-3"
    assert "after moving group-3" in panel.group(0)
    cells = re.findall(
        r"<tr><td>(makespan|peak at work|cost)</td><td[^>]*>([^<]+)</td><td[^>]*>([^<]+)</td>", panel.group(0)
    )
    assert [c[0] for c in cells] == ["makespan", "peak at work", "cost"]
    assert all(" of 6 " in c for c in cells[1][1:]), "peak at work against the budget of 6"
    assert int(re.search(r'data-refreshes="(\d+)"', html).group(1)) >= 1, "the page refreshed itself"  # type: ignore[union-attr]
    failed = [cid for cid in live if httpx.get(f"{base}/conversions/{cid}").json()["state"] == "failed"]
    assert failed
    assert f'<a href="/conversions/{failed[0]}">' in html
    assert "Content Security Policy" not in dom.stderr, "style and script run under the CSP"

    shot = tmp_path / "dashboard.png"
    taken = chromium([f"--screenshot={shot}", base + "/"], tmp_path / "profile-shot")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert png_size(shot) == (1280, 900)
    assert shot.stat().st_size > 20_000, "a blank page compresses to almost nothing"
    print(f"dashboard screenshot: {shot}")
