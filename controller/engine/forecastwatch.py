"""The forecast for moving the next rollout group, kept for the dashboard.

Working it out reads the ledger's whole history and runs two simulations, seconds on a large
ledger: the housekeeping thread does it (``tick``) once a page has asked for it (``read``), again
when the flag in force has changed, every ``retry`` seconds while there is none (no history yet),
and otherwise every ``ttl`` seconds; the page only reads what is kept. A service nobody watches
spends nothing on it. The
work itself is the caller's (``controller.bootstrap.next_group_forecast``); this module only
decides when, and keeps the answer with when it was made or why there is none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.core.errors import CutoverError

DEFAULT_TTL = 300.0  # seconds: a peak's profile changes by the day, not by the minute
DEFAULT_RETRY = 30.0  # seconds, while the history cannot give a forecast yet


@dataclass(frozen=True, slots=True)
class KeptForecast:
    """One forecast as the page shows it: the ``{"group", "forecast"}`` or ``{"group",
    "unavailable"}`` document, when it was worked out and how long that took; or the error that
    stopped it (``problem``)."""

    document: Mapping[str, Any] | None
    worked_at: float
    seconds: float
    problem: str = ""

    @property
    def made(self) -> bool:
        """Whether it holds a forecast, not why there is none."""
        return self.document is not None and "forecast" in self.document


class ForecastWatch:
    """Keeps the latest forecast for the next group, worked out again by ``tick``."""

    def __init__(
        self,
        compute: Callable[[float], Mapping[str, Any]],
        inputs: Callable[[], Hashable],
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = DEFAULT_TTL,
        retry: float = DEFAULT_RETRY,
    ) -> None:
        self._compute = compute
        self._inputs = inputs
        self._clock = clock
        self.ttl = ttl
        self.retry = retry
        self._latest: KeptForecast | None = None
        self._worked_on: Hashable = None
        self._wanted = False
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        """Work the forecast out again if the flag in force changed or the kept one is old: ``ttl``
        for a forecast, ``retry`` for the reason there is none."""
        if not self._wanted:
            return
        inputs = self._inputs()
        latest = self._latest
        kept_for = (self.ttl if latest.made else self.retry) if latest is not None else 0.0
        if latest is not None and inputs == self._worked_on and now - latest.worked_at < kept_for:
            return
        self.refresh(now, inputs)

    def refresh(self, now: float | None = None, inputs: Hashable = None) -> KeptForecast:
        """Work the forecast out now and keep it; a cutover error is kept as the problem."""
        with self._lock:
            when = self._clock() if now is None else now
            started = time.monotonic()
            try:
                kept = KeptForecast(dict(self._compute(when)), when, time.monotonic() - started)
            except CutoverError as exc:
                kept = KeptForecast(None, when, time.monotonic() - started, str(exc))
            self._latest = kept
            self._worked_on = self._inputs() if inputs is None else inputs
            return kept

    def read(self) -> KeptForecast | None:
        """The forecast kept, for a page: from now on the housekeeping thread keeps one."""
        self._wanted = True
        return self._latest

    @property
    def latest(self) -> KeptForecast | None:
        """The forecast kept, without working anything out (None before the first)."""
        return self._latest
