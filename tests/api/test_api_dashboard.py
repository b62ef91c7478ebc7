"""The dashboard as HTML: self-contained (no external resources, nonce-bound style and script),
escaped, bounded whatever the number of tenants, and still served when the ledger is down."""

from __future__ import annotations

import re
import time
from pathlib import Path as FsPath

import pytest

from controller.api.app import create_app
from controller.api.history import MinuteShare
from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.ports import Claim, Dispatched, Finish
from controller.ledger.sqlite import SQLiteLedger
from controller.service import Service

from .conftest import GROUPS
from .support import SwitchableLedger, client, make_service, run_until_settled, write_flag, write_rollout

pytestmark = pytest.mark.anyio


async def page(service: Service) -> tuple[str, dict[str, str]]:
    async with client(create_app(service, None)) as c:
        r = await c.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    return r.text, dict(r.headers)


async def test_the_page_is_self_contained_and_nonce_bound(service: Service) -> None:
    service.controller.run_cycle()
    html, headers = await page(service)
    csp = headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce is not None
    assert f'<style nonce="{nonce.group(1)}">' in html
    assert f'<script nonce="{nonce.group(1)}">' in html
    assert "default-src 'none'" in csp
    assert not re.search(r'(src|href)="(https?:)?//', html), "no resource from another origin"
    assert "<link" not in html
    _, again = await page(service)
    assert again["content-security-policy"] != csp, "a fresh nonce per response"


async def test_the_page_shows_the_flag_groups_chart_budget_and_failures(tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", GROUPS["group-1"] + GROUPS["group-2"])
    write_rollout(tmp_path / "rollout.json", GROUPS)
    from .support import FakeBackend

    backends = {Path.LEGACY: FakeBackend(Path.LEGACY, ("c11",)), Path.NEW: FakeBackend(Path.NEW)}
    service, _ = make_service(tmp_path, backends=backends)
    service.ledger.accept([ConversionRequest(f"c{i}", 1 + i % 12, {}) for i in range(24)], time.time())
    run_until_settled(service)
    html, _ = await page(service)
    version = service.controller.last_report.flag.snapshot.version  # type: ignore[union-attr]
    assert f'id="flag-version">{version}<' in html
    assert re.findall(r'data-group="(group-\d)" data-tenants="(\d+)" data-migrated="(\d+)"', html) == [
        ("group-1", "3", "3"),
        ("group-2", "4", "4"),
        ("group-3", "5", "0"),
    ]
    assert 'id="groups-flag-tenants">7<' in html
    assert len(re.findall(r'<g class="minute"', html)) >= 1
    assert len(re.findall(r'<circle class="point"', html)) >= 1
    assert '<a href="/conversions/c11">c11</a>' in html
    assert 'id="in-flight">' in html
    service.close()


async def test_names_from_the_plan_and_reasons_from_backends_are_escaped(tmp_path: FsPath) -> None:
    hostile = '<script>alert("x")</script>'
    write_flag(tmp_path / "flags.json", [1])
    write_rollout(tmp_path / "rollout.json", {hostile: [1, 2]})
    service, _ = make_service(tmp_path)
    ledger = service.ledger
    assert isinstance(ledger, SQLiteLedger)
    now = time.time()
    ledger.claim([Claim(ConversionRequest("f1", 1, {}), Path.NEW, "v1", "")], now)
    taken = ledger.mark_dispatching(ledger.pending_dispatch(Path.NEW, 1), "N", now)
    ledger.mark_dispatched([Dispatched(r.conversion_id, r.fence, "j") for r in taken], now)
    ledger.mark_finished([Finish("f1", taken[0].fence, ConversionState.FAILED, f"exit 1: {hostile}")], now)
    service.controller.flags.read()
    html, _ = await page(service)
    assert hostile not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    service.close()


def _seed_many_tenants(tmp_path: FsPath, tenants: int) -> Service:
    groups = {f"group-{g}": list(range(g * tenants // 5 + 1, (g + 1) * tenants // 5 + 1)) for g in range(5)}
    write_rollout(tmp_path / "rollout.json", groups)
    write_flag(tmp_path / "flags.json", groups["group-0"] + groups["group-1"])
    service, _ = make_service(tmp_path)
    now = time.time()
    service.ledger.claim(
        [Claim(ConversionRequest(f"c{t}", t, {}), Path.LEGACY, "v0", "") for t in range(1, tenants + 1)], now
    )
    service.controller.flags.read()
    return service


async def test_the_page_does_not_grow_with_the_number_of_tenants(tmp_path: FsPath) -> None:
    """5,000 tenants (all draining) render the same elements as 50: aggregates and capped lists."""
    small = _seed_many_tenants(tmp_path / "small", 50)
    large = _seed_many_tenants(tmp_path / "large", 5000)
    small_html, _ = await page(small)
    large_html, _ = await page(large)
    for tag in ("<rect", "<tr", "<div", "<svg"):
        assert large_html.count(tag) == small_html.count(tag), tag
    assert len(large_html) < 60_000
    assert 'id="draining-total">2000<' in large_html
    small.close()
    large.close()


async def test_the_page_is_served_with_its_problems_when_the_ledger_is_down(tmp_path: FsPath) -> None:
    write_flag(tmp_path / "flags.json", [1])
    ledger = SwitchableLedger(SQLiteLedger(tmp_path / "ledger.db"))
    service, _ = make_service(tmp_path, ledger=ledger)  # type: ignore[arg-type]
    service.controller.run_cycle()
    ledger.down = True
    html, _ = await page(service)
    assert "not ready: ledger:" in html
    assert html.count("unavailable: ledger") >= 4


def test_the_chart_draws_one_column_per_busy_minute() -> None:
    from controller.api.charts import share_chart

    series = [MinuteShare(100 + i, legacy=i, new=10 - i) for i in range(10)] + [MinuteShare(110)]
    svg = share_chart(series)
    assert svg.count('<g class="minute"') == 10
    assert svg.count('<circle class="point"') == 10
    assert 'data-minute="105" data-legacy="5" data-new="5"' in svg
    assert "no routing decisions" in share_chart([MinuteShare(1)])
