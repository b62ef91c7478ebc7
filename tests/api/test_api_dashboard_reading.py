"""The dashboard reads right at 3 a.m.: the hour chart spans the data it has, an invalid flag
document does not read as a bad version, work waiting for the budget says why, and each failure
shows the command that runs it again."""

from __future__ import annotations

from typing import Any

from controller.api import dashboard
from controller.api.charts import share_chart
from controller.api.dashboard import DashboardData, FailureRow
from controller.api.history import MinuteShare, from_first_activity


def status(state: str = "ok", version: str | None = "3", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "flag": {
            "version": version,
            "state": state,
            "enabled": True,
            "tenant_count": 9,
            "source": "file",
            "age_seconds": 4.0,
            "problem": "not JSON" if state == "invalid" else "",
        },
        "budget": 8,
        "in_flight": {"legacy": 3, "new": 5},
        "queued": {"legacy": 0, "new": 0},
        "conversions": {
            "received": 0,
            "claimed": 12,
            "dispatching": 0,
            "dispatched": 8,
            "succeeded": 0,
            "failed": 1,
        },
        "by_path": {
            p: dict.fromkeys(("claimed", "dispatching", "dispatched", "succeeded", "failed"), 0)
            for p in ("legacy", "new")
        },
        "cycle": {"held": False, "hold_reason": "", "errors": [], "new_capacity": 5, "legacy_threads": 3},
        "intake": {"accepted": 0, "duplicates": 0, "rejected": 0},
        "last_cycle_at": 1000.0,
        "skew": {"window_seconds": 600, "versions": []},
    }
    doc.update(extra)
    return doc


def page(doc: dict[str, Any], failures: list[FailureRow] | None = None) -> str:
    data = DashboardData(
        now=1010.0,
        ready=True,
        ready_reason="",
        healthy=True,
        refresh_seconds=5,
        status=doc,
        failures=failures or [],
    )
    return dashboard.render(data, "nonce")


def test_a_fresh_start_fills_the_chart_instead_of_three_bars_at_its_edge() -> None:
    hour = [MinuteShare(100 + i) for i in range(57)] + [
        MinuteShare(157 + i, legacy=4, new=2) for i in range(3)
    ]
    trimmed = from_first_activity(hour)
    assert len(trimmed) == 10  # never fewer minutes than that, so one busy minute is not a wall
    assert trimmed[-1].minute == 159
    assert from_first_activity([MinuteShare(1, legacy=1)] + [MinuteShare(2 + i) for i in range(59)]) == [
        MinuteShare(1, legacy=1)
    ] + [MinuteShare(2 + i) for i in range(59)]
    svg = share_chart(trimmed)
    xs = [float(part.split('"')[0]) for part in svg.split('<rect class="legacy" x="')[1:]]
    assert xs[0] > 44 + 1100 * 0.6  # the busy minutes sit at the right, one tenth of the width each
    assert xs[-1] - xs[0] > 1100 * 0.15


def test_an_invalid_document_reads_as_such_with_the_version_still_serving() -> None:
    html = page(status("invalid", "3"))
    assert "invalid document" in html
    assert "serving v3" in html
    assert "flag <b>3</b>" not in html


def test_work_waiting_for_the_budget_says_how_much_and_why() -> None:
    assert "12 owned conversions wait for the budget — the budget is full: legacy 3 + new 5 of 8" in page(
        status()
    )
    held = status(
        cycle={
            "held": True,
            "hold_reason": "flag unavailable and CUTOVER_ON_FLAG_UNAVAILABLE=pause",
            "errors": [],
            "new_capacity": 0,
            "legacy_threads": 0,
        }
    )
    assert "wait for the budget — work is held: flag unavailable" in page(held)
    free = status(in_flight={"legacy": 1, "new": 1})
    assert "6 of 8 slots are free" in page(free)


def test_each_failure_shows_the_command_that_requeues_it() -> None:
    html = page(status(), [FailureRow("inv-7", 7, "new", "worker exited 1", 1000.0)])
    assert '<code class="requeue">cutover requeue inv-7</code>' in html
