"""Background work beside the cycle: sending signals and the periodic reconciliation, on one
daemon thread, so that neither ever holds a cycle up. A task that fails is logged and tried again
on the next tick; it never stops the others."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("cutover.housekeeping")


class Housekeeping:
    """Calls each task with the time every ``interval`` seconds until stopped (and once at stop)."""

    def __init__(
        self,
        tasks: Sequence[Callable[[float], None]],
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tasks = list(tasks)
        self.interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cutover-housekeeping", daemon=True)
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread after one last round, so that pending signals go out."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        else:
            self.run_once()

    def run_once(self) -> None:
        """One round of every task."""
        now = self._clock()
        for task in self.tasks:
            try:
                task(now)
            except Exception as exc:  # a background task must not take the others down
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "housekeeping.failed", extra={"task": getattr(task, "__qualname__", repr(task))}
                )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()
        self.run_once()
