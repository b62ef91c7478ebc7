"""The cycle loop of a running controller: one cycle every ``cycle_seconds`` on its own thread.

A failing cycle is logged and retried on the next tick; the loop's heartbeat is what ``/healthz``
reports. After every tick, failed or not, the loop calls its ``after_cycle`` hook (the API's read
model re-reads the ledger there, off the request path).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from controller.core.ports import Intake
from controller.engine.cycle import Controller
from controller.plumbing.ticker import Ticker

log = logging.getLogger("cutover.loop")


class CycleLoop:
    """Runs ``controller.run_cycle`` periodically until stopped."""

    def __init__(
        self, controller: Controller, interval: float, *, after_cycle: Callable[[], None] | None = None
    ) -> None:
        self.controller = controller
        self.interval = interval
        self.after_cycle = after_cycle
        self.heartbeat: float | None = None
        self.last_error: str | None = None
        self.consecutive_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cutover-cycle", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def healthy(self, now: float) -> bool:
        """Alive, and ticking: the last heartbeat is recent compared with the interval."""
        grace = max(30.0, self.interval * 5)
        return self.alive and self.heartbeat is not None and now - self.heartbeat < grace

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.controller.run_cycle()
                self.last_error = None
                self.consecutive_errors = 0
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.consecutive_errors += 1
                log.exception("cycle.failed")
            self.heartbeat = time.time()
            self._after_cycle()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _after_cycle(self) -> None:
        if self.after_cycle is None:
            return
        try:
            self.after_cycle()
        except Exception:
            # The hook serves readers; its failure must not stop the cycles.
            log.exception("cycle.after_cycle_failed")


class IntakeThreads:
    """One ticker thread per intake of a service (finders, queues)."""

    def __init__(self, intakes: list[Intake]) -> None:
        self._tickers = [
            Ticker(f"cutover-intake-{i.stats.kind}-{i.stats.name}", i.tick, i.interval) for i in intakes
        ]

    def start(self) -> None:
        for ticker in self._tickers:
            ticker.start()

    def stop(self) -> None:
        for ticker in self._tickers:
            ticker.stop()
