"""When a scheduled intake is due: a period in seconds or a five-field cron expression (UTC). Pure.

A schedule names *slots*; a run belongs to the latest slot at or before now, so every replica
that looks at the same moment agrees on which run is due, and a slot runs once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from controller.core.errors import InputError

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MAX_LOOKBACK_DAYS = 366 * 5


@dataclass(frozen=True, slots=True)
class Schedule:
    """Either every ``period`` seconds, or the cron sets of minutes, hours, days, months, weekdays."""

    text: str
    period: float | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    any_day: bool = True
    any_weekday: bool = True

    def latest_slot(self, now: float) -> float:
        """The start (epoch seconds) of the latest slot at or before ``now``."""
        if self.period is not None:
            return (now // self.period) * self.period
        moment = dt.datetime.fromtimestamp(now, dt.UTC).replace(second=0, microsecond=0)
        for back in range(_MAX_LOOKBACK_DAYS):
            day = (moment - dt.timedelta(days=back)).date()
            if not self._day_matches(day):
                continue
            for hour in sorted(self.hours, reverse=True):
                for minute in sorted(self.minutes, reverse=True):
                    slot = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
                    if slot <= moment:
                        return slot.timestamp()
        return float("-inf")

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return in_weekdays
        if self.any_weekday:
            return in_days
        return in_days or in_weekdays  # cron's rule when both are restricted


def parse_schedule(text: str) -> Schedule:
    """Parse ``"300"`` (seconds) or ``"*/15 6-18 * * 1-5"`` (cron, UTC); ``InputError`` names the field."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not 1 <= seconds <= 31 * 86400:
            raise InputError(f"schedule {text!r}: a period must be 1 to {31 * 86400} seconds")
        return Schedule(text, period=seconds)
    parts = text.split()
    if len(parts) != 5:
        raise InputError(f"schedule {text!r}: expected seconds or five cron fields, got {len(parts)} fields")
    sets = [_field(part, name, low, high) for part, (name, low, high) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(0 if d == 7 else d for d in sets[4])  # cron allows 7 for Sunday
    return Schedule(
        text,
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )


def _field(part: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for piece in part.split(","):
        base, _, step_text = piece.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                start, end = low, high
            elif "-" in base:
                a, b = base.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = end = int(base)
                if step_text:
                    end = high
        except ValueError as exc:
            raise InputError(f"cron {name} {piece!r}: not a number, range or step") from exc
        if step < 1 or not low <= start <= end <= high:
            raise InputError(f"cron {name} {piece!r}: outside {low}-{high} or a step below 1")
        values.update(range(start, end + 1, step))
    return frozenset(values)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_DURATION = 366 * 86400


def parse_duration(value: object, at: str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"`` or ``"2w"``; ``InputError``
    names ``at`` when the value is none of those or not between one second and a year."""
    text = str(value).strip().lower() if isinstance(value, str | int | float) else ""
    if isinstance(value, bool) or not text:
        raise InputError(f"{at}: expected a duration such as 90s, 30m, 24h or 7d, got {value!r:.40}")
    unit = text[-1] if text[-1] in _UNITS else "s"
    number = text[:-1] if text[-1] in _UNITS else text
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError as exc:
        raise InputError(f"{at}: expected a duration such as 90s, 30m, 24h or 7d, got {value!r:.40}") from exc
    if not 1 <= seconds <= _MAX_DURATION:
        raise InputError(f"{at}: {value!r:.40} is not between 1 second and 366 days")
    return seconds
