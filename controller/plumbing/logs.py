"""Structured logs: one JSON object per line, the event name plus every ``extra=`` field.

The cycle and the service log stable dotted event names with the conversion's facts as extras
(``conversion.received``, ``route.decided``, ``conversion.dispatched``, ``conversion.finished``,
``conversion.outcome``, ``conversion.resubmitted``, ``conversion.requeued``, ``flag.changed``,
``flag.rejected``…), so CloudWatch Logs Insights can answer "what happened to conversion X"::

    fields @timestamp, event, path, flag_version, job_ref, state, reason
    | filter conversion_id = "X" | sort @timestamp

Secrets handed to ``configure_logging`` are masked in every line, whatever logged them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from controller.settings import Settings

MASK = "********"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: ``ts``, ``level``, ``logger``, ``event``, then the extras."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        line = json.dumps(doc, default=str, ensure_ascii=False)
        for secret in self._secrets:
            line = line.replace(secret, MASK)
        return line


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) as JSON lines; returns the installed handler.

    With ``CUTOVER_LOG_DECISIONS`` on and the level at INFO or below, the cycle's per-conversion
    ``route.decided`` events (logged at DEBUG) are emitted too, so each decision leaves one line.
    """
    secrets = [settings.api_token.get_secret_value()] if settings.api_token else []
    if settings.agent_token is not None:
        secrets.append(settings.agent_token.get_secret_value())
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    decisions = settings.log_decisions and root.level <= logging.INFO
    logging.getLogger("cutover.cycle").setLevel(logging.DEBUG if decisions else logging.NOTSET)
    return handler


class LogBudget:
    """At most ``burst`` lines per ``window_seconds`` for one kind of event, so that a flood (a
    client retrying a bad token in a loop) cannot fill the log; the lines held back are counted and
    reported with the next line let through."""

    def __init__(
        self, burst: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst = burst
        self._window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._started = -float("inf")
        self._spent = 0
        self._held_back = 0

    def take(self) -> int | None:
        """None when this line must be held back; else how many were held back since the last one."""
        with self._lock:
            now = self._clock()
            if now - self._started >= self._window:
                self._started, self._spent = now, 0
            if self._spent >= self._burst:
                self._held_back += 1
                return None
            self._spent += 1
            held, self._held_back = self._held_back, 0
            return held
