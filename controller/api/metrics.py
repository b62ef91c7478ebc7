"""Prometheus metrics of one controller process, on a registry of its own.

Two kinds: what is measured as it happens (backend call latencies through ``InstrumentedBackend``,
outcomes through the controller's ``on_finished`` hook, intake counts), and what is read at scrape
time from the state the cycle keeps (the ledger's counters as the read model holds them, the last
cycle report, the flag). The instrumented backend also logs one ``conversion.dispatched`` event per
conversion handed to a path, and the outcome hook one ``conversion.outcome`` event, each with the
facts an investigation needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.api.status import in_flight as slots_in_use
from controller.core.domain import ConversionRecord, ConversionState, DispatchBatch, JobRef, JobState, Path
from controller.core.errors import BackendError, CutoverError
from controller.core.gates import GateVerdict
from controller.core.ports import Backend, Counts, ReconcileCounts
from controller.plumbing.forwarding import ForwardingBackend
from flags.snapshot import FlagState

if TYPE_CHECKING:
    from controller.engine.loop import CycleLoop
    from controller.service import Service

log = logging.getLogger("cutover.service")

# ``*_created`` series only repeat the process start time per label set; they double the scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated

_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800)


@dataclass(frozen=True, slots=True)
class FailureNote:
    """A conversion that ended FAILED in this process, for the dashboard when the ledger cannot list them."""

    conversion_id: str
    tenant_id: int
    path: Path | None
    reason: str
    finished_at: float


class IntakeStats:
    """Intake totals since this process started (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.rejected = 0
        self.accepted = 0
        self.duplicates = 0

    def record(self, *, accepted: int = 0, duplicates: int = 0, rejected: bool = False) -> None:
        """Count one request: its accepted and duplicate conversions, or its rejection."""
        with self._lock:
            self.requests += 1
            self.rejected += rejected
            self.accepted += accepted
            self.duplicates += duplicates

    def snapshot(self) -> dict[str, int]:
        """The totals as a plain mapping."""
        with self._lock:
            return {
                "requests": self.requests,
                "rejected": self.rejected,
                "accepted": self.accepted,
                "duplicates": self.duplicates,
            }


class ServiceMetrics:
    """The registry and the live instruments of one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.intake = IntakeStats()
        self.failures: deque[FailureNote] = deque(maxlen=50)
        self.dispatch_seconds = Histogram(
            "cutover_dispatch_seconds",
            "Time a path's backend took to accept one dispatch batch.",
            ["path"],
            buckets=_CALL_BUCKETS,
            registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "cutover_poll_seconds",
            "Time a path's backend took to report the state of its in-flight conversions.",
            ["path"],
            buckets=_CALL_BUCKETS,
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "cutover_backend_errors",
            "Backend calls that raised, per path and call.",
            ["path", "call"],
            registry=self.registry,
        )
        self.outcomes = Counter(
            "cutover_outcomes",
            "Conversions this process saw finish, per path and terminal state.",
            ["path", "state"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "cutover_conversion_run_seconds",
            "From dispatch to outcome (queue and run time) of finished conversions.",
            ["path", "state"],
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self._observed = False
        for path in Path:
            self.dispatch_seconds.labels(path.value)
            self.poll_seconds.labels(path.value)
            for state in (ConversionState.SUCCEEDED, ConversionState.FAILED):
                self.outcomes.labels(path.value, state.value)

    def instrument(self, backend: Backend) -> Backend:
        """Wrap a backend so its calls are timed and each dispatched conversion is logged."""
        return InstrumentedBackend(backend, self)

    def finished(self, record: ConversionRecord, state: ConversionState, reason: str) -> None:
        """The controller's ``on_finished`` hook: count, time and log one outcome."""
        now = time.time()
        path = record.path.value if record.path else "none"
        self.outcomes.labels(path, state.value).inc()
        run = max(0.0, now - record.dispatched_at) if record.dispatched_at else None
        if run is not None:
            self.run_seconds.labels(path, state.value).observe(run)
        if state is ConversionState.FAILED:
            self.failures.appendleft(
                FailureNote(record.conversion_id, record.tenant_id, record.path, reason, now)
            )
        log.info(
            "conversion.outcome",
            extra={
                "conversion_id": record.conversion_id,
                "tenant_id": record.tenant_id,
                "path": path,
                "flag_version": record.flag_version,
                "job_ref": record.job_ref,
                "state": state.value,
                "reason": reason,
                "attempts": record.attempts,
                "run_seconds": None if run is None else round(run, 3),
            },
        )

    def observe(
        self, service: Service, loop: CycleLoop | None, *, counts: Callable[[], Counts] | None = None
    ) -> None:
        """Read the service's state at every scrape (once per registry); ``counts`` gives the ledger's
        counters (the read model's, so a scrape does not query the ledger; by default the ledger's)."""
        if not self._observed:
            self.registry.register(StateCollector(service, loop, self, counts or service.ledger.counts))
            self._observed = True

    def render(self) -> bytes:
        """The Prometheus text exposition of everything registered."""
        return generate_latest(self.registry)


class InstrumentedBackend(ForwardingBackend):
    """A backend seen through a timer: same answers, plus latency histograms and dispatch events."""

    def __init__(self, inner: Backend, metrics: ServiceMetrics) -> None:
        super().__init__(inner)
        self._metrics = metrics

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        started = time.perf_counter()
        try:
            refs = self.inner.submit(batch)
        except BackendError:
            self._metrics.backend_errors.labels(self.path.value, "submit").inc()
            raise
        finally:
            self._metrics.dispatch_seconds.labels(self.path.value).observe(time.perf_counter() - started)
        if log.isEnabledFor(logging.INFO):
            for item, ref in zip(batch.items, refs, strict=False):
                log.info(
                    "conversion.dispatched",
                    extra={
                        "conversion_id": item.conversion_id,
                        "tenant_id": item.tenant_id,
                        "path": self.path.value,
                        "flag_version": item.flag_version or None,
                        "job_ref": ref.job_id,
                        "batch": batch.key,
                        "attempt_fence": item.fence,
                    },
                )
        return refs

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        started = time.perf_counter()
        try:
            return self.inner.poll(refs)
        except BackendError:
            self._metrics.backend_errors.labels(self.path.value, "poll").inc()
            raise
        finally:
            self._metrics.poll_seconds.labels(self.path.value).observe(time.perf_counter() - started)


class StateCollector(Collector):
    """Builds the scrape-time gauges from the ledger's counters and the last cycle report."""

    def __init__(
        self,
        service: Service,
        loop: CycleLoop | None,
        metrics: ServiceMetrics,
        counts: Callable[[], Counts],
    ) -> None:
        self.service = service
        self.loop = loop
        self.metrics = metrics
        self.counts = counts

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._ledger()
        yield from self._cycle()
        yield from self._flag()
        yield from self._intake()
        yield from self._reconcile()
        yield from self._gates()

    def _ledger(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("cutover_ledger_up", "1 when the ledger answered the read behind this scrape.")
        conversions = GaugeMetricFamily(
            "cutover_conversions", "Conversions in the ledger per path and state.", labels=["path", "state"]
        )
        try:
            counts = self.counts()
        except CutoverError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        conversions.add_metric(
            ["none", ConversionState.RECEIVED.value], counts.state(ConversionState.RECEIVED)
        )
        for path in Path:
            for state in ConversionState:
                if state is not ConversionState.RECEIVED:
                    conversions.add_metric([path.value, state.value], counts.path_state(path, state))
        yield up
        yield conversions

    def _cycle(self) -> Iterator[Metric]:
        controller = self.service.controller
        report = controller.last_report
        budget = GaugeMetricFamily("cutover_budget", "Conversions worked at once on both paths, at most.")
        budget.add_metric([], self.service.settings.budget)
        in_flight = GaugeMetricFamily(
            "cutover_in_flight", "Budget slots each path holds (last cycle).", labels=["path"]
        )
        queued = GaugeMetricFamily(
            "cutover_queued",
            "Conversions a backend holds queued, not yet running (last cycle).",
            labels=["path"],
        )
        slots = slots_in_use(report)
        for path in Path:
            in_flight.add_metric([path.value], slots[path])
            queued.add_metric([path.value], report.queued.get(path, 0) if report else 0)
        capacity = GaugeMetricFamily("cutover_new_capacity", "Slots the new path may use (last cycle).")
        capacity.add_metric([], report.new_capacity if report else 0)
        cycles = CounterMetricFamily("cutover_cycles", "Controller cycles run by this process.")
        cycles.add_metric([], controller.cycles)
        duration = GaugeMetricFamily("cutover_cycle_duration_seconds", "Duration of the last cycle.")
        last = GaugeMetricFamily("cutover_last_cycle_timestamp_seconds", "When the last cycle finished.")
        held = GaugeMetricFamily("cutover_cycle_held", "1 when the last cycle held work back.")
        errors = GaugeMetricFamily("cutover_cycle_errors", "Errors the last cycle recorded.")
        if report is not None:
            duration.add_metric([], max(0.0, report.finished_at - report.started_at))
            last.add_metric([], report.finished_at)
            held.add_metric([], 1 if report.held else 0)
            errors.add_metric([], len(report.errors))
        healthy = GaugeMetricFamily("cutover_cycle_loop_healthy", "1 while the cycle loop is ticking.")
        healthy.add_metric([], 1 if self.loop is None or self.loop.healthy(time.time()) else 0)
        yield from (budget, in_flight, queued, capacity, cycles, duration, last, held, errors, healthy)

    def _flag(self) -> Iterator[Metric]:
        report = self.service.controller.last_report
        status = report.flag if report else self.service.flags.last
        snap = status.snapshot if status else None
        info = InfoMetricFamily("cutover_flag", "The flag version in force and where it came from.")
        info.add_metric(
            [],
            {
                "version": snap.version if snap else "",
                "source": snap.source if snap else self.service.settings.flag_source,
                "enabled": "" if snap is None else str(snap.enabled).lower(),
            },
        )
        state = GaugeMetricFamily("cutover_flag_state", "1 for the flag's current state.", labels=["state"])
        current = status.state if status else FlagState.UNAVAILABLE
        for s in FlagState:
            state.add_metric([s.value], 1 if s is current else 0)
        tenants = GaugeMetricFamily("cutover_flag_tenants", "Tenants the flag in force migrates.")
        tenants.add_metric([], snap.tenant_count if snap else 0)
        yield from (info, state, tenants)
        if snap is not None:
            age = GaugeMetricFamily(
                "cutover_flag_age_seconds", "Seconds since the source last confirmed the flag."
            )
            age.add_metric([], max(0.0, time.time() - snap.fetched_at))
            yield age

    def _intake(self) -> Iterator[Metric]:
        totals = self.metrics.intake.snapshot()
        requests = CounterMetricFamily(
            "cutover_intake_requests", "Intake requests, per result.", labels=["result"]
        )
        requests.add_metric(["accepted"], totals["requests"] - totals["rejected"])
        requests.add_metric(["rejected"], totals["rejected"])
        items = CounterMetricFamily(
            "cutover_intake_conversions", "Conversions in accepted intake requests.", labels=["result"]
        )
        items.add_metric(["accepted"], totals["accepted"])
        items.add_metric(["duplicate"], totals["duplicates"])
        yield from (requests, items)
        sources = CounterMetricFamily(
            "cutover_intake_source",
            "What scheduled finders and queues did: runs, found, accepted, duplicates, malformed, errors.",
            labels=["kind", "name", "what"],
        )
        last_run = GaugeMetricFamily(
            "cutover_intake_source_last_run_timestamp",
            "When each finder or queue last ran.",
            labels=["kind", "name"],
        )
        for intake in self.service.intakes:
            st = intake.stats
            for what in ("runs", "found", "accepted", "duplicates", "malformed", "errors"):
                sources.add_metric([st.kind, st.name, what], getattr(st, what))
            if st.last_run_at is not None:
                last_run.add_metric([st.kind, st.name], st.last_run_at)
        yield from (sources, last_run)

    def _reconcile(self) -> Iterator[Metric]:
        found = reconcile_totals(self.service.backends)
        dup = CounterMetricFamily(
            "cutover_reconcile_duplicates", "Jobs reconciliation found submitted twice.", labels=["path"]
        )
        orphans = CounterMetricFamily(
            "cutover_reconcile_orphans", "Jobs reconciliation found that no record owns.", labels=["path"]
        )
        for path in Path:
            counts = found.get(path, {})
            dup.add_metric([path.value], counts.get("duplicates", 0))
            orphans.add_metric([path.value], counts.get("orphans", 0))
        report = self.service.controller.last_report
        intents = GaugeMetricFamily(
            "cutover_intents_settled",
            "Dispatch intents settled by the last cycle's reconciliation.",
            labels=["how"],
        )
        intents.add_metric(["found"], report.reconciled if report else 0)
        intents.add_metric(["released"], report.released if report else 0)
        yield from (dup, orphans, intents)

    def _gates(self) -> Iterator[Metric]:
        # The gate the housekeeping thread last worked out: a scrape never reads the ledger for it.
        verdict = GaugeMetricFamily(
            "cutover_gate_verdict", "1 for each rollout group's gate verdict.", labels=["group", "verdict"]
        )
        report = self.service.gates.latest
        for g in report.groups if report is not None else ():
            for v in GateVerdict:
                verdict.add_metric([g.name, v.value], 1 if g.verdict is v else 0)
        yield verdict


def reconcile_totals(backends: Mapping[Path, Backend]) -> dict[Path, Mapping[str, int]]:
    """Reconciliation counts of the backends that keep them; others count as zero."""
    out: dict[Path, Mapping[str, int]] = {}
    for path, backend in backends.items():
        if isinstance(backend, ReconcileCounts):
            try:
                out[path] = backend.reconcile_counts()
            except CutoverError:
                continue
    return out
