"""A daemon thread that calls a function every few seconds: the local runners' pump and the intakes.

Owns no state of its own beyond the thread; an exception in a tick is kept (``error``) for the
supervisor to report, and the ticking goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Ticker:
    """Calls ``tick`` every ``interval`` seconds on a daemon thread until ``stop``."""

    def __init__(self, name: str, tick: Callable[[], object], interval: float) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self.error: BaseException | None = None

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tick()
            except Exception as exc:  # keep supervising; the error is reported, not swallowed
                self.error = exc
