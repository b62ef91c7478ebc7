"""The read model: what ``/status``, ``/tenants``, ``/metrics`` and the dashboard show, read from the
ledger once per cycle and served from memory in between.

Each part (counters, the last hour of per-minute decisions, unfinished work per tenant, recent
failures, the persisted flag) is stamped with the cycle it was read in. After each cycle the loop
calls ``refresh``, which re-reads the parts asked for since the cycle before, off the request path;
a part nobody asked for is left stale and read by the first request that wants it. Intake and
requeue through this API mark what they change, so their effect shows at once; writes from
elsewhere (other replicas, queue and finder intakes) show after the next cycle. A part whose read
failed keeps the error, and every request raises it until the next cycle reads again.

Whatever serves a document made from the model (``/status``) registers with ``on_change``: it is
called after each refresh and after each write through this API (``changed``), off the request
path, so such a document is made once per cycle or write rather than once per request.

Reads only what the ledger offers for these views and the service's memory; never writes, never
calls a backend or the flag source.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from controller.api.history import DecisionRow
from controller.api.status import status_document
from controller.api.tenants import InFlight, PlanFile, TenantsOverview, in_flight_by_tenant, overview
from controller.core.domain import ConversionRecord, ConversionState
from controller.core.errors import CutoverError
from controller.core.ports import Counts, LedgerInsights
from controller.core.routing import basis
from controller.engine.loop import CycleLoop
from controller.service import Service
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus

HISTORY_SECONDS = 3600  # the dashboard's chart spans an hour; the status skew window lies inside it
RECENT_FAILURES = 12


class Part(StrEnum):
    """The pieces of the model, each read from the ledger on its own."""

    COUNTS = "counts"
    DECISIONS = "decisions"
    LOAD = "load"
    FAILURES = "failures"
    PERSISTED_FLAG = "persisted_flag"


@dataclass(frozen=True, slots=True)
class Read:
    """One part as read: its value or the error reading it raised, and when it was read."""

    value: Any
    error: CutoverError | None
    generation: tuple[int, int]  # (cycles run, cycles announced by the loop) when read
    mark: int  # the part's write mark when read
    taken_at: float

    def get(self) -> Any:
        if self.error is not None:
            # The same error object answers many requests: drop the traceback each raise would extend.
            raise self.error.with_traceback(None)
        return self.value


class ReadModel:
    """The per-cycle view of one service's ledger (thread-safe: requests and the loop share it)."""

    def __init__(self, service: Service, plan: PlanFile) -> None:
        self.service = service
        self.plan = plan
        self._readers: Mapping[Part, Callable[[float], Any]] = {
            Part.COUNTS: lambda now: service.ledger.counts(),
            Part.DECISIONS: lambda now: tuple(service.ledger.decisions_since(now - HISTORY_SECONDS)),
            Part.LOAD: lambda now: in_flight_by_tenant(service.ledger),
            Part.FAILURES: self._read_failures,
            Part.PERSISTED_FLAG: lambda now: service.ledger.load_flag(),
        }
        self._parts: dict[Part, Read] = {}
        self._announced = 0  # cycles the loop has announced through ``refresh``
        # Every key present from the start: threads assign values, never add keys.
        self._asked: dict[Part, int] = dict.fromkeys(Part, -1)
        self._marks: dict[Part, int] = dict.fromkeys(Part, 0)
        self._serial = itertools.count(1)  # next() is atomic: two writers never share a mark
        self._lock = threading.Lock()
        self._tenants: tuple[Read, object, TenantsOverview] | None = None
        self._listeners: list[Callable[[], None]] = []
        self._notifying = threading.local()  # a listener's reads are not requests: they ask for nothing

    # -- keeping it current ---------------------------------------------------------------------

    def refresh(self) -> None:
        """The loop's hook after each cycle, failed or not: re-read the parts asked for since the
        cycle before, so the requests of this cycle find them in memory."""
        wanted = [part for part, asked in self._asked.items() if asked >= self._announced]
        with self._lock:
            self._announced += 1
            for part in wanted:
                self._parts[part] = self._read(part)
        self._notify()

    def wrote(self, *parts: Part) -> None:
        """Something this process wrote changed ``parts``: the next read of each reads it again."""
        for part in parts:
            self._marks[part] = next(self._serial)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each refresh and each ``changed`` (it must not raise)."""
        self._listeners.append(listener)

    def changed(self) -> None:
        """A write through this API is recorded (``wrote`` and its counters): let the listeners
        remake what they serve. Called off the event loop, as it may read the ledger."""
        self._notify()

    def _notify(self) -> None:
        self._notifying.on = True
        try:
            for listener in self._listeners:
                listener()
        finally:
            self._notifying.on = False

    def version(self) -> tuple[object, ...]:
        """Changes whenever a part may read differently: a cycle ran or was announced, or this
        process wrote to a part."""
        return (*self._generation(), *self._marks.values())

    def _generation(self) -> tuple[int, int]:
        # Cycles run directly on the controller (tests, the demo) count as well as announced ones.
        return self.service.controller.cycles, self._announced

    def _current(self, part: Part) -> Read | None:
        """The part as last read, if nothing has happened since that it would miss."""
        read = self._parts.get(part)
        if read is None or read.generation != self._generation() or read.mark != self._marks[part]:
            return None
        return read

    def _get(self, part: Part) -> Read:
        if not getattr(self._notifying, "on", False):
            self._asked[part] = self._announced
        read = self._current(part)
        if read is not None:
            return read
        with self._lock:  # one reader reads; the others wait for its answer rather than ask again
            read = self._current(part)
            if read is None:
                read = self._parts[part] = self._read(part)
            return read

    def _read(self, part: Part) -> Read:
        # Stamped before reading: a cycle or a write landing during the read leaves it stale.
        generation, mark, now = self._generation(), self._marks[part], self.service.clock()
        try:
            return Read(self._readers[part](now), None, generation, mark, now)
        except CutoverError as exc:
            return Read(None, exc, generation, mark, now)

    def _read_failures(self, now: float) -> Sequence[ConversionRecord] | None:
        ledger = self.service.ledger
        if not isinstance(ledger, LedgerInsights):
            return None
        return tuple(ledger.recent(ConversionState.FAILED, RECENT_FAILURES))

    # -- the parts ---------------------------------------------------------------------------------

    def counts(self) -> Counts:
        """Conversions per state and path."""
        counts: Counts = self._get(Part.COUNTS).get()
        return counts

    def decisions(self) -> Sequence[DecisionRow]:
        """Claims per minute, path and flag version over the last hour."""
        rows: Sequence[DecisionRow] = self._get(Part.DECISIONS).get()
        return rows

    def failures(self) -> Sequence[ConversionRecord] | None:
        """The latest failed conversions, newest first; None when the ledger cannot list them."""
        records: Sequence[ConversionRecord] | None = self._get(Part.FAILURES).get()
        return records

    def flag(self, now: float) -> FlagStatus:
        """The flag status the cycle routes by, without touching the flag source.

        Before the first cycle it is the persisted last-known-good flag (or none), marked as not read yet.
        """
        report = self.service.controller.last_report
        if report is not None:
            return report.flag
        if self.service.flags.last is not None:
            return self.service.flags.last
        # Read the persisted flag directly: loading it through ``service.flags`` would race the cycle.
        good: FlagSnapshot | None = self._get(Part.PERSISTED_FLAG).get()
        if good is None:
            return FlagStatus(None, FlagState.UNAVAILABLE, now, "no flag read yet")
        state = FlagState.OK if good.enabled else FlagState.DISABLED
        return FlagStatus(good, state, now, "persisted flag; the source has not been read yet")

    def tenants(self, snapshot: FlagSnapshot | None) -> TenantsOverview:
        """The rollout-group overview under ``snapshot``, recomputed when the unfinished work, the
        flag or the plan changes; raises ``LedgerError`` when the ledger did not answer."""
        read = self._get(Part.LOAD)
        groups = self.plan.groups()
        flag = (snapshot.version, snapshot.enabled, len(snapshot.tenant_ids)) if snapshot else None
        key = (flag, self.plan.stamp, self.plan.problem)
        cached = self._tenants
        if cached is not None and cached[0] is read and cached[1] == key:
            return cached[2]
        load: Mapping[int, InFlight]
        load, complete = read.get()
        view = replace(
            overview(groups, snapshot, load),
            plan_problem=self.plan.problem,
            load_complete=complete,
            computed_at=read.taken_at,
        )
        self._tenants = (read, key, view)
        return view

    # -- what the endpoints answer -------------------------------------------------------------------

    def readiness(self, now: float, *, probe: bool = False) -> tuple[bool, str]:
        """Ready when the ledger answers and routing has a basis under the policy (a valid flag or
        the configured fallback); otherwise the reason. ``probe`` asks the ledger now (``/readyz``);
        without it the ledger's answer at the last read stands (the dashboard)."""
        try:
            if probe:
                self.service.ledger.ping()
            else:
                self.counts()
            status = self.flag(now)
        except CutoverError as exc:
            return False, f"ledger: {exc}"
        routing = basis(status, self.service.controller.config.routing)
        return not routing.hold, routing.reason

    def status(self, loop: CycleLoop | None, now: float, *, intake: Mapping[str, int]) -> dict[str, Any]:
        """The ``/status`` document."""
        return status_document(
            self.service, loop, self.flag(now), self.counts(), self.decisions(), now, intake=intake
        )
