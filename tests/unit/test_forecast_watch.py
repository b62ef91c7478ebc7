"""The next group's forecast as the dashboard keeps it: worked out off the request path, again when
the flag moves, soon while there is none, and rendered from what was kept."""

from __future__ import annotations

from typing import Any

from controller.api.dashboard import DashboardData, forecast_section
from controller.core.errors import LedgerError
from controller.engine.forecastwatch import ForecastWatch, KeptForecast

SIDE = {
    "migrated_tenants": 20,
    "makespan_seconds": 754.0,
    "peak_in_flight": {"legacy": 12, "new": 8, "total": 20},
    "budget": 20,
    "queue_wait_seconds": {"p50": 3.0, "p95": 61.0},
    "conversions": {"legacy": 900, "new": 100},
    "cost": {"legacy": 1.5, "new": 0.75, "total": 2.25, "currency": "USD"},
}
DOC = {
    "group": "group-2",
    "forecast": {
        "profile": {"name": "last-peak", "conversions": 1000, "source": "ledger history"},
        "before": SIDE,
        "after": SIDE | {"migrated_tenants": 50},
        "warnings": ["the new path's cap <b>is</b> below what it needs"],
    },
}


class Counter:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, now: float) -> dict[str, Any]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def test_the_watch_works_it_out_again_when_the_flag_moves_or_it_is_old():
    flag = {"migrated": frozenset({1})}
    compute = Counter([{"group": "group-2", "unavailable": "no history"}, DOC])
    watch = ForecastWatch(compute, lambda: flag["migrated"], ttl=300.0, retry=30.0)
    watch.tick(0.0)  # nobody has asked for it: nothing is worked out
    assert (watch.read(), compute.calls) == (None, 0)
    watch.tick(0.0)
    assert (compute.calls, watch.latest.made) == (1, False)
    watch.tick(10.0)  # none yet: tried again only after ``retry``
    assert compute.calls == 1
    watch.tick(31.0)
    assert (compute.calls, watch.latest.made, watch.latest.worked_at) == (2, True, 31.0)
    watch.tick(300.0)  # a forecast is kept for ``ttl``
    assert compute.calls == 2
    flag["migrated"] = frozenset({1, 2})  # unless the flag in force moves
    watch.tick(301.0)
    assert compute.calls == 3
    watch.tick(700.0)
    assert compute.calls == 4


def test_an_error_is_kept_as_the_problem_and_shown():
    def broken(now: float) -> dict[str, Any]:
        raise LedgerError("ledger unreachable")

    kept = ForecastWatch(broken, lambda: None).refresh(5.0)
    assert (kept.document, kept.problem) == (None, "ledger unreachable")
    page = forecast_section(data(kept, kept.problem))
    assert "unavailable: ledger unreachable" in page


def data(kept: KeptForecast | None, problem: str = "") -> DashboardData:
    return DashboardData(
        now=0.0,
        ready=True,
        ready_reason="",
        healthy=True,
        refresh_seconds=5,
        forecast=kept,
        forecast_problem=problem,
    )


def test_the_panel_shows_both_sides_the_warnings_escaped_and_why_there_is_none():
    page = forecast_section(data(KeptForecast(DOC, 3600.0, 1.5)))
    assert 'id="forecast-group">group-2<' in page
    assert "after moving group-2" in page
    assert '<td class="num">12m 34s</td>' in page
    assert "20 of 20 (old 12, new 8)" in page
    assert "2.25 USD" in page
    assert "&lt;b&gt;is&lt;/b&gt;" in page
    assert "worked out at 01:00 UTC" in page
    none = forecast_section(data(KeptForecast({"group": None, "unavailable": "every group is in"}, 0.0, 0.1)))
    assert 'id="forecast-unavailable">no forecast: every group is in' in none
    assert "being worked out" in forecast_section(data(None, "being worked out"))
