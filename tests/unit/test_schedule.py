"""Schedules: which slot is due, so every replica agrees on the run."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.core.errors import InputError
from controller.core.schedule import parse_schedule


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("expr", "now", "slot"),
    [
        ("300", "2026-11-02 10:07:13", "2026-11-02 10:05:00"),
        ("*/15 * * * *", "2026-11-02 10:07:13", "2026-11-02 10:00:00"),
        ("0 2 * * *", "2026-11-02 01:59:00", "2026-11-01 02:00:00"),
        ("0 2 * * *", "2026-11-02 02:00:00", "2026-11-02 02:00:00"),
        ("30 6-18 * * 1-5", "2026-11-01 12:00:00", "2026-10-30 18:30:00"),  # Sunday → Friday evening
        ("0 0 1 * *", "2026-11-20 00:00:00", "2026-11-01 00:00:00"),  # the month-start peak
        ("0 0 1 * 0", "2026-11-03 00:00:00", "2026-11-01 00:00:00"),  # day 1 OR Sunday
        ("5,10 0 * * 7", "2026-11-02 00:00:00", "2026-11-01 00:10:00"),  # 7 is Sunday too
    ],
)
def test_latest_slot(expr, now, slot):
    assert parse_schedule(expr).latest_slot(ts(now)) == ts(slot)


def test_a_slot_is_stable_until_the_next_one():
    s = parse_schedule("0 * * * *")
    assert s.latest_slot(ts("2026-11-02 10:00:01")) == s.latest_slot(ts("2026-11-02 10:59:59"))
    assert s.latest_slot(ts("2026-11-02 11:00:00")) > s.latest_slot(ts("2026-11-02 10:59:59"))


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("0", "period must be"),
        ("* * * *", "five cron fields"),
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("*/0 * * * *", "step below 1"),
        ("a * * * *", "not a number"),
    ],
)
def test_bad_schedules_name_the_field(expr, needle):
    with pytest.raises(InputError, match=needle):
        parse_schedule(expr)
