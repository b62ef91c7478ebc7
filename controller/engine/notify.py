"""Signals for people and alarms: a short message per terminal failure, per flag version change,
per rollout gate verdict change and per automatic rollout action (a storm of them becomes one
summary), and per-minute counts and gauges for the metrics the alarms watch. The cycle only hands
events over; sending happens later, off the cycle's path.

The transports are ports (``Notifier``, ``MetricSink``); the log implementations live here, the
SNS and CloudWatch ones in ``controller.engine.notify_aws``. Nothing here decides routing or retries.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.gates import GateReport, GateVerdict
from controller.core.ports import CycleView, Datum, MetricSink, Notifier
from flags.lkg import FlagChange
from flags.snapshot import FlagState

log = logging.getLogger("cutover.notify")

# Metric names and the dimension the Terraform alarms are built on.
SUCCEEDED = "ConversionsSucceeded"
FAILED = "ConversionsFailed"
RECONCILE_DUPLICATES = "ReconcileDuplicates"
RECONCILE_ORPHANS = "ReconcileOrphans"
FLAG_STATE_NOT_OK = "FlagStateNotOk"
CYCLES_COMPLETED = "CyclesCompleted"
PATH_DIMENSION = "Path"
GATE_FAILING = "GateFailing"  # 1 while a rollout group fails its gate; without a dimension: any group
GROUP_DIMENSION = "Group"

SUBJECT_MAX = 100  # SNS subjects: at most 100 printable ASCII characters
_NOT_OK = frozenset({FlagState.STALE, FlagState.UNAVAILABLE, FlagState.INVALID})
_LIST_MAX = 20
T = TypeVar("T")


class LogNotifier:
    """Messages as log lines (``notify.message``), when no SNS topic is configured."""

    def publish(self, subject: str, message: str) -> None:
        """Log the message."""
        log.info("notify.message", extra={"subject": subject, "body": message})


class LogMetrics:
    """Metric values as debug log lines, when CloudWatch is not used."""

    def put(self, datums: Sequence[Datum]) -> None:
        """Log the values."""
        for d in datums:
            log.debug("metrics.datum", extra={"metric": d.name, "value": d.value, "minute": d.minute})


# -- messages (pure) ---------------------------------------------------------------------------------


def _ascii(text: str, limit: int) -> str:
    plain = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return plain if len(plain) <= limit else plain[: limit - 3] + "..."


def _ids(values: Sequence[object]) -> str:
    if not values:
        return "none"
    shown = ", ".join(str(v) for v in values[:_LIST_MAX])
    return shown if len(values) <= _LIST_MAX else f"{shown} and {len(values) - _LIST_MAX} more"


def _path_words(path: Path | None) -> str:
    return {Path.NEW: "the new path (AWS Batch)", Path.LEGACY: "the old path (CodeBuild)"}.get(
        path or Path.LEGACY, "no path"
    )


def failure_message(record: ConversionRecord, reason: str) -> tuple[str, str]:
    """Subject and body for one conversion that failed for good."""
    subject = _ascii(
        f"cutover: conversion {record.conversion_id} failed on {(record.path or Path.LEGACY).value}",
        SUBJECT_MAX,
    )
    attempts = f"{record.attempts} attempt{'s' if record.attempts != 1 else ''}"
    body = "\n".join(
        [
            f"Conversion {record.conversion_id} of tenant {record.tenant_id} failed on "
            f"{_path_words(record.path)} after {attempts}.",
            f"Reason: {_ascii(reason or 'none given', 500)}",
            f"Flag version: {record.flag_version or 'none'}; job: {record.job_ref or 'none'}",
            f"To try again: cutover requeue {record.conversion_id}",
        ]
    )
    return subject, body


def flag_change_message(change: FlagChange) -> tuple[str, str]:
    """Subject and body for a new flag version in force: old -> new, tenants added and removed."""
    old = change.old.version if change.old else "none"
    new = change.new
    added, removed = sorted(change.added), sorted(change.removed)
    subject = _ascii(
        f"cutover: flag {old} -> {new.version} (+{len(added)} -{len(removed)} tenants)", SUBJECT_MAX
    )
    state = "enabled" if new.enabled else "switched off: everything goes to the old path"
    body = "\n".join(
        [
            f"Flag {new.flag_key} changed from version {old} to {new.version} ({state}).",
            f"Tenants added ({len(added)}): {_ids(added)}",
            f"Tenants removed ({len(removed)}): {_ids(removed)}",
            f"Tenants on the new path now: {new.tenant_count}",
        ]
    )
    return subject, body


def storm_message(failures: Sequence[tuple[ConversionRecord, str]], window_seconds: float) -> tuple[str, str]:
    """One summary for failures that were not announced one by one."""
    minutes = max(1, round(window_seconds / 60))
    by_path = Counter((r.path or Path.LEGACY).value for r, _ in failures)
    reasons = Counter(_ascii(why or "none given", 120) for _, why in failures)
    subject = _ascii(f"cutover: {len(failures)} more conversions failed in {minutes} min", SUBJECT_MAX)
    lines = [
        f"{len(failures)} more conversions failed for good in the last {minutes} minutes "
        f"({', '.join(f'{n} on {p}' for p, n in sorted(by_path.items()))}).",
        "Most common reasons:",
        *[f"  {n} x {why}" for why, n in reasons.most_common(3)],
        f"Conversions: {_ids([r.conversion_id for r, _ in failures])}",
    ]
    return subject, "\n".join(lines)


def gate_change_message(
    name: str, old: GateVerdict, new: GateVerdict, reasons: Sequence[str]
) -> tuple[str, str]:
    """Subject and body for a rollout group whose gate verdict changed."""
    subject = _ascii(f"cutover: gate of {name} {old.value} -> {new.value}", SUBJECT_MAX)
    body = "\n".join(
        [
            f"The rollout gate of group {name} changed from {old.value} to {new.value}.",
            *[f"  {_ascii(r, 300)}" for r in reasons[:5]],
            "See `cutover gate` for the evidence.",
        ]
    )
    return subject, body


def notes_storm_message(notes: Sequence[tuple[str, str]], window_seconds: float) -> tuple[str, str]:
    """One summary for rollout messages that were not sent one by one."""
    minutes = max(1, round(window_seconds / 60))
    subject = _ascii(f"cutover: {len(notes)} more rollout messages in {minutes} min", SUBJECT_MAX)
    return subject, "\n".join([f"Held back in the last {minutes} minutes:", *[f"  {s}" for s, _ in notes]])


@dataclass(slots=True)
class Throttle(Generic[T]):
    """At most ``burst`` messages per ``window`` seconds; what is held back comes out as one summary
    when the window closes. Pure: the caller passes the time."""

    burst: int = 5
    window: float = 300.0
    _start: float | None = None
    _sent: int = 0
    held: list[T] = field(default_factory=list)

    def allow(self, now: float) -> bool:
        """True when one more message may go out now."""
        if self._start is None or now - self._start >= self.window:
            if self.held:
                return False  # the summary of the closed window goes first
            self._start, self._sent = now, 0
        if self._sent < self.burst:
            self._sent += 1
            return True
        return False

    def summary(self, now: float) -> list[T]:
        """The failures held back, once their window has closed (then the window starts afresh)."""
        if not self.held or self._start is None or now - self._start < self.window:
            return []
        out, self.held = self.held, []
        self._start, self._sent = now, 0
        return out


# -- collecting and sending ----------------------------------------------------------------------


class Signals:
    """Takes events from the cycle (cheap, in memory) and sends them on ``tick``: messages through
    the notifier (throttled), metric values through the sink (one call per tick)."""

    def __init__(
        self,
        notifier: Notifier,
        metrics: MetricSink,
        clock: Callable[[], float],
        *,
        burst: int = 5,
        window_seconds: float = 300.0,
        max_pending: int = 10_000,
    ) -> None:
        self.notifier = notifier
        self.metrics = metrics
        self._clock = clock
        self._throttle: Throttle[tuple[ConversionRecord, str]] = Throttle(burst, window_seconds)
        self._flag_throttle: Throttle[FlagChange] = Throttle(burst, window_seconds)
        self._notes_throttle: Throttle[tuple[str, str]] = Throttle(burst, window_seconds)
        self._notes: deque[tuple[str, str]] = deque(maxlen=1000)
        self._verdicts: dict[str, GateVerdict] = {}
        self._lock = threading.Lock()
        self._failures: deque[tuple[ConversionRecord, str]] = deque(maxlen=max_pending)
        self._changes: deque[FlagChange] = deque(maxlen=100)
        self._counts: Counter[tuple[str, int, tuple[tuple[str, str], ...]]] = Counter()
        self._gauges: list[Datum] = []
        self._cycles_seen = 0
        self.view: CycleView | None = None

    # -- hooks the cycle calls (no I/O) ---------------------------------------------------------

    def conversion_finished(self, record: ConversionRecord, state: ConversionState, reason: str) -> None:
        """``Controller(on_finished=...)``: count the outcome; keep a terminal failure to announce."""
        minute = int(self._clock() // 60)
        name = SUCCEEDED if state is ConversionState.SUCCEEDED else FAILED
        dims = ((PATH_DIMENSION, (record.path or Path.LEGACY).value),)
        with self._lock:
            self._counts[(name, minute, dims)] += 1
            if state is ConversionState.FAILED:
                self._failures.append((record, reason))

    def flag_changed(self, change: FlagChange) -> None:
        """``build(on_flag_change=...)``: keep the change to announce."""
        with self._lock:
            self._changes.append(change)

    def reconciled(self, duplicates: int, orphans: int) -> None:
        """The latest reconciliation's findings, as gauges for the alarms."""
        minute = int(self._clock() // 60)
        with self._lock:
            self._gauges.append(Datum(RECONCILE_DUPLICATES, float(duplicates), minute))
            self._gauges.append(Datum(RECONCILE_ORPHANS, float(orphans), minute))

    def announce(self, subject: str, body: str) -> None:
        """A message about the rollout (an automatic action), sent on the next tick."""
        with self._lock:
            self._notes.append((subject, body))

    def gates_judged(self, report: GateReport) -> None:
        """The latest gate: ``GateFailing`` per group and for any group, and a message for every
        group whose verdict changed since the last report (not for the first one seen)."""
        minute = int(self._clock() // 60)
        with self._lock:
            for g in report.groups:
                failing = 1.0 if g.verdict is GateVerdict.FAIL else 0.0
                self._gauges.append(Datum(GATE_FAILING, failing, minute, ((GROUP_DIMENSION, g.name),)))
                before = self._verdicts.get(g.name)
                if before is not None and before is not g.verdict:
                    self._notes.append(gate_change_message(g.name, before, g.verdict, g.reasons))
                self._verdicts[g.name] = g.verdict
            worst = 1.0 if any(g.verdict is GateVerdict.FAIL for g in report.groups) else 0.0
            self._gauges.append(Datum(GATE_FAILING, worst, minute))

    # -- sending (on the housekeeping thread) -----------------------------------------------------

    def tick(self, now: float) -> None:
        """Sample the controller, then send what is due: messages, summaries, metric values."""
        minute = int(now // 60)
        view = self.view
        with self._lock:
            if view is not None:
                self._counts[(CYCLES_COMPLETED, minute, ())] += max(0, view.cycles - self._cycles_seen)
                self._cycles_seen = view.cycles
                state = view.flag_state
                if state is not None:
                    self._gauges.append(Datum(FLAG_STATE_NOT_OK, 1.0 if state in _NOT_OK else 0.0, minute))
            failures = list(self._failures)
            self._failures.clear()
            changes = list(self._changes)
            self._changes.clear()
            notes = list(self._notes)
            self._notes.clear()
            datums = [
                Datum(n, float(v), m, d) for (n, m, d), v in sorted(self._counts.items())
            ] + self._gauges
            self._counts.clear()
            self._gauges = []
        for change in changes:
            if self._flag_throttle.allow(now):
                self.notifier.publish(*flag_change_message(change))
            else:
                log.warning("notify.flag_change_held", extra={"version": change.new.version})
        for record, reason in failures:
            if self._throttle.allow(now):
                self.notifier.publish(*failure_message(record, reason))
            else:
                self._throttle.held.append((record, reason))
        held = self._throttle.summary(now)
        if held:
            self.notifier.publish(*storm_message(held, self._throttle.window))
        for note in notes:
            if self._notes_throttle.allow(now):
                self.notifier.publish(*note)
            else:
                self._notes_throttle.held.append(note)
        held_notes = self._notes_throttle.summary(now)
        if held_notes:
            self.notifier.publish(*notes_storm_message(held_notes, self._notes_throttle.window))
        if datums:
            self.metrics.put(datums)
