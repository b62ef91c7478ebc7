"""Scheduled target finders: where conversions come from when no one posts them.

``CUTOVER_TARGET_FINDER=package.module:callable`` names a function that gets a ``FinderContext``
and returns conversions (a list, or ``Found`` with a new watermark). The runner calls it once per
schedule slot across all replicas (a lease in the ledger), with a timeout, validates its answer
item by item through the same rules as ``POST /conversions``, and moves the watermark only after
the conversions are durable. A finder that raises, hangs or returns garbage costs its run, nothing
else; a bad item in a good answer costs only itself (skipped and reported with its key or row).
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.core.domain import ConversionRequest
from controller.core.errors import ConfigError, CutoverError, InputError
from controller.core.ports import Ledger, SourceStats
from controller.core.schedule import Schedule
from controller.intake.validation import accept, parse_item
from controller.settings import Settings

log = logging.getLogger("cutover.intake")


@dataclass(frozen=True, slots=True)
class FinderContext:
    """What a finder is told: the time of its slot, where the previous run stopped, and the settings."""

    now: float
    slot: float
    watermark: str | None
    log: logging.Logger
    settings: Settings


@dataclass(frozen=True, slots=True)
class Found:
    """A finder's answer: conversions (requests or plain mappings) and the watermark to keep."""

    conversions: Sequence[ConversionRequest | Mapping[str, Any]]
    watermark: str | None = None


Finder = Callable[[FinderContext], "Found | Sequence[ConversionRequest | Mapping[str, Any]]"]


def load_finder(spec: str) -> Finder:
    """Import ``package.module:callable``; a ``ConfigError`` names the variable when it cannot."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"CUTOVER_TARGET_FINDER: {spec!r} is not of the form package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"CUTOVER_TARGET_FINDER: cannot import {module_name!r} ({exc})") from exc
    target = getattr(module, attr, None)
    if not callable(target):
        raise ConfigError(f"CUTOVER_TARGET_FINDER: {module_name!r} has no callable {attr!r}")
    finder: Finder = target
    return finder


@dataclass(frozen=True, slots=True)
class Answer:
    """A finder's answer once read: the valid requests, the items skipped (with why), the watermark."""

    requests: list[ConversionRequest]
    skipped: list[str]
    watermark: str | None
    given: bool


def to_requests(answer: object) -> Answer:
    """Validate a finder's answer item by item: a bad item is skipped and described (garbage costs
    only itself, so one bad row cannot hold the watermark and every valid item behind it); an
    answer that is not a list of data at all, or a bad watermark, raises ``InputError``."""
    if isinstance(answer, Found):
        items, watermark, given = answer.conversions, answer.watermark, True
    elif isinstance(answer, list | tuple):
        items, watermark, given = answer, None, False
    else:
        raise InputError(f"a finder must return a list or Found, got {type(answer).__name__}")
    if watermark is not None and not isinstance(watermark, str):
        raise InputError(f"a finder's watermark must be a string, got {type(watermark).__name__}")
    plain: list[Any] = []
    for item in items:
        if isinstance(item, ConversionRequest):
            plain.append(
                {"conversion_id": item.conversion_id, "tenant_id": item.tenant_id, "params": item.params}
            )
        else:
            plain.append(item)
    try:
        # Through JSON, as a body would come: what is not data is refused as a whole.
        data = json.loads(json.dumps(plain))
    except (TypeError, ValueError) as exc:
        raise InputError(f"a finder returned something that is not data ({exc})") from exc
    requests: list[ConversionRequest] = []
    skipped: list[str] = []
    for index, item in enumerate(data):
        try:
            requests.append(parse_item(index, item))
        except InputError as exc:
            skipped.append(f"{exc} (item: {_shown(item)})")
    return Answer(requests, skipped, watermark, given)


def _shown(item: object) -> str:
    """An item as the report shows it: its JSON (a key or row), cut short."""
    text = json.dumps(item, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 300 else text[:299] + "…"


class FinderRunner:
    """Runs one finder once per due slot, on whichever replica takes the lease first."""

    interval: float

    def __init__(
        self,
        name: str,
        finder: Finder,
        schedule: Schedule,
        *,
        ledger: Ledger,
        settings: Settings,
        clock: Callable[[], float],
        holder: str,
        timeout: float,
    ) -> None:
        self.name = name
        self.finder = finder
        self.schedule = schedule
        self.ledger = ledger
        self.settings = settings
        self.clock = clock
        self.holder = holder
        self.timeout = timeout
        self.stats = SourceStats(name=name, kind="finder")
        self._key = f"intake:finder:{name}"
        self._hung: threading.Thread | None = None
        self.interval = 1.0

    def tick(self) -> bool:
        """Run the finder if its slot is due (the intake thread calls this every second)."""
        return self.run_due()

    def _state(self) -> dict[str, Any]:
        raw = self.ledger.get_value(self._key)
        return json.loads(raw) if raw else {}

    def run_due(self) -> bool:
        """Run the finder if its current slot has not run yet; True when this call ran it."""
        now = self.clock()
        slot = self.schedule.latest_slot(now)
        state = self._state()
        if state.get("last_slot") is not None and state["last_slot"] >= slot:
            return False
        if not self.ledger.try_lease(self._key, self.holder, now, self.timeout + 30):
            return False
        state = self._state()  # another replica may have finished the slot before we took the lease
        if state.get("last_slot") is not None and state["last_slot"] >= slot:
            return False
        self._run(slot, state, now)
        return True

    def _run(self, slot: float, state: dict[str, Any], now: float) -> None:
        self.stats.runs += 1
        self.stats.last_run_at = now
        if self._hung is not None and self._hung.is_alive():
            self._fail("the previous run is still hung; not starting another")
            return
        context = FinderContext(now, slot, state.get("watermark"), log, self.settings)
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["answer"] = self.finder(context)
            except BaseException as exc:  # the finder is user code: whatever it raises is its run's error
                outcome["error"] = exc

        thread = threading.Thread(target=call, name=f"cutover-finder-{self.name}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._hung = thread
            self._fail(f"timed out after {self.timeout:.0f}s")
            return
        if "error" in outcome:
            exc = outcome["error"]
            self._fail(f"raised {type(exc).__name__}: {exc}")
            return
        try:
            answer = to_requests(outcome.get("answer"))
            requests, watermark, given = answer.requests, answer.watermark, answer.given
            result = accept(self.ledger, requests, now)
        except CutoverError as exc:
            self._fail(str(exc))
            return
        self._report_skipped(answer.skipped)
        new_watermark = watermark if given else state.get("watermark")
        self.ledger.put_value(
            self._key,
            json.dumps({"last_slot": slot, "watermark": new_watermark, "last_run_at": now}),
            self.clock(),
        )
        self.stats.last_slot = slot
        self.stats.watermark = new_watermark
        self.stats.found += len(requests)
        self.stats.accepted += len(result.accepted)
        self.stats.duplicates += len(result.duplicates)
        if not answer.skipped:
            self.stats.last_error = ""
        log.info(
            "intake.finder_ran",
            extra={
                "finder": self.name,
                "found": len(requests),
                "accepted": len(result.accepted),
                "duplicates": len(result.duplicates),
            },
        )

    def _report_skipped(self, skipped: list[str]) -> None:
        if not skipped:
            return
        self.stats.malformed += len(skipped)
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        self.stats.last_error = f"skipped {skipped[0]}{more}"
        for why in skipped:
            log.warning("intake.finder_skipped", extra={"finder": self.name, "error": why})

    def _fail(self, why: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = why
        log.warning("intake.finder_failed", extra={"finder": self.name, "error": why})


def finder_from_settings(
    settings: Settings, ledger: Ledger, clock: Callable[[], float], holder: str
) -> FinderRunner | None:
    """The finder ``CUTOVER_TARGET_FINDER`` names, on ``CUTOVER_FIND_EVERY``, or None."""
    if not settings.target_finder:
        return None
    from controller.core.schedule import parse_schedule

    name = settings.target_finder.rpartition(":")[0].rsplit(".", 1)[-1] or "finder"
    return FinderRunner(
        name,
        load_finder(settings.target_finder),
        parse_schedule(settings.find_every),
        ledger=ledger,
        settings=settings,
        clock=clock,
        holder=holder,
        timeout=settings.finder_timeout,
    )
