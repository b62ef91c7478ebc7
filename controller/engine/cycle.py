"""The reconcile loop: one flag read, then claim, poll, admit and dispatch — safe to rerun anywhere.

Level-triggered: every step re-derives what to do from the ledger and what the backends report.
An intent is written before each submit, so a crash at any point leaves either an intent (found
or released by reconciliation) or a recorded job — never a second submission, never a lost one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from controller.core.admission import Load, clamp_threads, split_budget
from controller.core.domain import (
    ConversionRecord,
    ConversionState,
    DispatchBatch,
    DispatchItem,
    JobRef,
    JobStatus,
    Path,
)
from controller.core.errors import BackendError, SubmitRejectedError
from controller.core.ports import (
    Backend,
    Claimed,
    Dispatched,
    Finish,
    FlagReader,
    Ledger,
    Route,
    RouteGroups,
    Waiting,
)
from controller.core.routing import RoutingPolicy, basis, decide_tenants
from controller.core.transitions import RetryPolicy, Verdict, after_poll
from controller.engine.claims import batch_claims
from flags.snapshot import FlagState, FlagStatus

log = logging.getLogger("cutover.cycle")

DISPATCH_LEASE = "dispatch"  # the lease whose holder dispatches for all replicas


@dataclass(frozen=True, slots=True)
class CycleConfig:
    """The cycle's knobs, taken from the settings by the composition root."""

    budget: int = 20
    max_claims: int = 20_000
    max_batch_items: int = 1000
    legacy_max_threads: int = 16
    intent_grace_seconds: float = 60.0
    lease_seconds: float = 30.0
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle saw and did; the service answers ``/status`` from the latest one."""

    started_at: float
    finished_at: float
    flag: FlagStatus
    held: bool = False
    hold_reason: str = ""
    claimed: Mapping[Path, int] = field(default_factory=dict)
    dispatched: Mapping[Path, int] = field(default_factory=dict)
    succeeded: Mapping[Path, int] = field(default_factory=dict)
    failed: Mapping[Path, int] = field(default_factory=dict)
    resubmitted: int = 0
    reconciled: int = 0
    released: int = 0
    running: Mapping[Path, int] = field(default_factory=dict)
    queued: Mapping[Path, int] = field(default_factory=dict)
    in_use: Mapping[Path, int] = field(default_factory=dict)
    new_capacity: int = 0
    legacy_threads: int = 0
    dispatcher: bool = False
    errors: tuple[str, ...] = ()


class Controller:
    """Runs cycles against one ledger, one flag reader and one backend per path."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        flags: FlagReader,
        backends: Mapping[Path, Backend],
        config: CycleConfig,
        clock: Callable[[], float] = time.time,
        holder: str = "controller",
        on_finished: Callable[[ConversionRecord, ConversionState, str], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self._claims = batch_claims(ledger)
        self.flags = flags
        self.backends = backends
        self.config = config
        self.clock = clock
        self.holder = holder
        self._on_finished = on_finished
        self.last_report: CycleReport | None = None
        self.cycles = 0
        self._lock = threading.Lock()
        # Whether the new path's backend caps itself; unknown (so assumed not) until it has answered.
        self._new_caps = False

    # -- the cycle ---------------------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        """One pass of the loop. Safe to call again after a crash at any point inside it."""
        with self._lock:
            report = self._cycle()
        self.last_report = report
        self.cycles += 1
        return report

    def _cycle(self) -> CycleReport:
        started = self.clock()
        status = self.flags.read()
        errors: list[str] = []
        reconciled, released = self.reconcile_intents(started - self.config.intent_grace_seconds)
        held, hold_reason, claimed = self._route(status, started)
        polled = self._poll(started, errors)
        # Taken at the time of taking, not the cycle's start: the lease must cover the dispatch ahead.
        lease_at = self.clock()
        dispatcher = self.ledger.try_lease(DISPATCH_LEASE, self.holder, lease_at, self.config.lease_seconds)
        split: tuple[dict[Path, int], int, int, dict[Path, int]] = ({}, 0, 0, {})
        if dispatcher:
            lease_until = lease_at + self.config.lease_seconds
            split = self._dispatch(self.clock(), lease_until, polled.queued, errors)
        dispatched, new_capacity, legacy_threads, in_use = split
        return CycleReport(
            started_at=started,
            finished_at=self.clock(),
            flag=status,
            held=held,
            hold_reason=hold_reason,
            claimed=claimed,
            dispatched=dispatched,
            succeeded=polled.succeeded,
            failed=polled.failed,
            resubmitted=polled.resubmitted,
            reconciled=reconciled,
            released=released,
            running=polled.running,
            queued=polled.queued,
            in_use=in_use,
            new_capacity=new_capacity,
            legacy_threads=legacy_threads,
            dispatcher=dispatcher,
            errors=tuple(errors),
        )

    # -- route: claim every new request under this cycle's snapshot ----------------------------

    def _route(self, status: FlagStatus, now: float) -> tuple[bool, str, dict[Path, int]]:
        routing = basis(status, self.config.routing)
        if routing.hold:
            return True, routing.reason, {}
        waiting = self._claims.waiting(self.config.max_claims)
        if not waiting.conversion_ids:
            return False, "", {}
        # One decision per outcome, not per tenant or conversion: a burst of tens of thousands
        # makes no object per conversion on its way to the ledger.
        suffix = f"; {routing.reason}" if routing.reason else ""
        routes: list[tuple[Route, AbstractSet[int]]] = []
        for decision, tenants in decide_tenants(waiting.tenant_ids, routing.snapshot, self.config.routing):
            if decision.path is None:
                return True, decision.reason, {}
            routes.append((Route(decision.path, decision.flag_version, decision.reason + suffix), tenants))
        claimed = self._claims.claim_waiting(waiting, routes, now)
        if log.isEnabledFor(logging.DEBUG):
            self._log_decisions(waiting, routes, claimed)
        return False, "", dict(claimed.per_path)

    @staticmethod
    def _log_decisions(waiting: Waiting, routes: RouteGroups, claimed: Claimed) -> None:
        """One ``route.decided`` line per conversion this cycle's claim made owned, in intake order."""
        by_tenant = waiting.route_by_tenant(routes)
        ids, tenant_ids = waiting.conversion_ids, waiting.tenant_ids
        for i in claimed.created:
            route = by_tenant[tenant_ids[i]]
            log.debug(
                "route.decided",
                extra={
                    "conversion_id": ids[i],
                    "tenant_id": tenant_ids[i],
                    "path": route.path.value,
                    "flag_version": route.flag_version,
                },
            )

    # -- poll: record outcomes, clone-and-resubmit failures ------------------------------------

    @dataclass(slots=True)
    class _Polled:
        succeeded: dict[Path, int] = field(default_factory=dict)
        failed: dict[Path, int] = field(default_factory=dict)
        running: dict[Path, int] = field(default_factory=dict)
        queued: dict[Path, int] = field(default_factory=dict)
        resubmitted: int = 0

    def _poll(self, now: float, errors: list[str]) -> Controller._Polled:
        out = Controller._Polled()
        for path, backend in self.backends.items():
            records = self.ledger.in_flight(path, limit=100_000)
            if not records:
                continue
            refs = {r.conversion_id: JobRef(r.job_ref or "", r.conversion_id) for r in records}
            try:
                states = backend.poll(list(refs.values()))
            except BackendError as exc:
                errors.append(f"poll {path.value}: {exc}")
                log.warning("backend.poll_failed", extra={"path": path.value, "error": str(exc)})
                continue
            finishes: list[Finish] = []
            status_counts: Counter[JobStatus] = Counter()
            for record in records:
                state = states.get(refs[record.conversion_id])
                if state is None:
                    continue
                status_counts[state.status] += 1
                age = now - (record.dispatched_at or now)
                verdict = after_poll(state, record.attempts, age, self.config.retry)
                if verdict is Verdict.SUCCEED:
                    finishes.append(
                        Finish(
                            record.conversion_id,
                            record.fence,
                            ConversionState.SUCCEEDED,
                            state.output or "",
                        )
                    )
                elif verdict is Verdict.FAIL:
                    finishes.append(
                        Finish(record.conversion_id, record.fence, ConversionState.FAILED, state.reason)
                    )
                elif verdict is Verdict.RESUBMIT:
                    why = f"attempt {record.attempts} failed ({state.reason}); resubmitting on {path.value}"
                    if self.ledger.resubmit(record.conversion_id, record.fence, why, now):
                        out.resubmitted += 1
                        log.info("conversion.resubmitted", extra={"conversion_id": record.conversion_id})
            done = set(self.ledger.mark_finished(finishes, now))
            for f in finishes:
                if f.conversion_id not in done:
                    continue
                bucket = out.succeeded if f.state is ConversionState.SUCCEEDED else out.failed
                bucket[path] = bucket.get(path, 0) + 1
                log.info(
                    "conversion.finished",
                    extra={
                        "conversion_id": f.conversion_id,
                        "path": path.value,
                        "state": f.state.value,
                    },
                )
                if self._on_finished is not None:
                    record = next(r for r in records if r.conversion_id == f.conversion_id)
                    self._on_finished(record, f.state, f.reason)
            out.running[path] = status_counts[JobStatus.RUNNING]
            out.queued[path] = status_counts[JobStatus.QUEUED]
        return out

    # -- dispatch: split the budget, then submit each path's work ------------------------------

    def _dispatch(
        self, now: float, lease_until: float, queued: Mapping[Path, int], errors: list[str]
    ) -> tuple[dict[Path, int], int, int, dict[Path, int]]:
        cfg = self.config
        legacy, new = self.backends.get(Path.LEGACY), self.backends.get(Path.NEW)
        legacy_todo = self.ledger.pending_dispatch(Path.LEGACY, cfg.max_claims) if legacy else []
        new_todo = self.ledger.pending_dispatch(Path.NEW, cfg.max_claims) if new else []
        legacy_in_use = legacy.in_use() if legacy else 0
        new_running = new.in_use() if new else 0
        admitted_new = new_running
        if new is not None and not self._new_caps:
            # A backend that cannot cap runs whatever it was handed, queued or not, so all of it
            # counts: what the ledger says was handed over, not what this cycle's poll happened to
            # see (a poll can fail; an intent with an unknown outcome is not polled at all).
            counts = self.ledger.counts()
            handed = counts.path_state(Path.NEW, ConversionState.DISPATCHING) + counts.path_state(
                Path.NEW, ConversionState.DISPATCHED
            )
            admitted_new = max(new_running, handed)
        load = Load(legacy_in_use, admitted_new, len(legacy_todo), len(new_todo) + queued.get(Path.NEW, 0))
        split = split_budget(cfg.budget, load, cfg.legacy_max_threads)
        dispatched: dict[Path, int] = {}
        cap_in_force = split.new_capacity
        if new is not None:
            cap = new.set_capacity(split.new_capacity)
            self._new_caps = cap is not None
            if cap is None:
                # The backend cannot cap itself: hold back so that dispatched, unfinished work fits.
                new_todo = new_todo[: max(0, split.new_capacity - admitted_new)]
            else:
                cap_in_force = cap
            if new_todo:
                dispatched[Path.NEW] = self._submit(new, new_todo, 0, now, lease_until, errors)
        threads = clamp_threads(split.legacy_threads, cfg.budget, legacy_in_use, cap_in_force)
        if legacy is not None and legacy_todo and threads >= 1:
            dispatched[Path.LEGACY] = self._submit(legacy, legacy_todo, threads, now, lease_until, errors)
        else:
            threads = 0
        in_use = {Path.LEGACY: legacy_in_use + threads, Path.NEW: new_running}
        return dispatched, cap_in_force, threads, in_use

    def _submit(
        self,
        backend: Backend,
        records: Sequence[ConversionRecord],
        concurrency: int,
        now: float,
        lease_until: float,
        errors: list[str],
    ) -> int:
        key = batch_key(backend.path, records)
        taken = self.ledger.mark_dispatching(records, key, now)
        if not taken:
            return 0
        if self.clock() > lease_until - self.config.lease_seconds / 2:
            # The admission holds only while no other replica can take the lease and dispatch on
            # its own view; a submit must have half the lease left to come back in (a slow step
            # or a paused process got here late). Nothing was started: the intents go back.
            self.ledger.release([(r.conversion_id, r.fence) for r in taken], self.clock(), "lease ran short")
            errors.append(f"submit {backend.path.value}: dispatch lease ran short; left for the next cycle")
            log.warning("dispatch.lease_short", extra={"path": backend.path.value})
            return 0
        batch = DispatchBatch(
            key=key,
            path=backend.path,
            items=tuple(
                DispatchItem(r.conversion_id, r.tenant_id, r.params, r.flag_version or "", r.fence)
                for r in taken
            ),
            concurrency=concurrency,
        )
        try:
            refs = backend.submit(batch)
        except SubmitRejectedError as exc:
            self.ledger.release([(r.conversion_id, r.fence) for r in taken], self.clock(), str(exc))
            errors.append(f"submit {backend.path.value}: {exc}")
            log.warning("dispatch.rejected", extra={"path": backend.path.value, "error": str(exc)})
            return 0
        except BackendError as exc:
            # Outcome unknown: the intents stay, and reconciliation asks the backend later - unless
            # reconciliation already settled some while the call was out. Their intent is gone, so
            # nothing would ever find what this call may have started: look now, and stop it.
            errors.append(f"submit {backend.path.value}: {exc}")
            log.warning("dispatch.unknown", extra={"path": backend.path.value, "error": str(exc)})
            settled = [r for r in taken if not self._intended(r)]
            if settled:
                try:
                    found = backend.find([(r.conversion_id, key) for r in settled])
                except BackendError as find_exc:
                    log.warning(
                        "dispatch.orphans_unknown", extra={"path": backend.path.value, "error": str(find_exc)}
                    )
                else:
                    self._cancel_orphans(backend, list(found.values()))
            return 0
        fences = {r.conversion_id: r.fence for r in taken}
        recorded = set(
            self.ledger.mark_dispatched(
                [Dispatched(ref.conversion_id, fences[ref.conversion_id], ref.job_id) for ref in refs],
                self.clock(),
            )
        )
        # Someone else settled these intents meanwhile.
        self._cancel_orphans(backend, [ref for ref in refs if ref.conversion_id not in recorded])
        log.info(
            "dispatch.submitted",
            extra={
                "path": backend.path.value,
                "batch": key,
                "conversions": len(recorded),
                "concurrency": concurrency,
            },
        )
        return len(recorded)

    def _intended(self, record: ConversionRecord) -> bool:
        """True while ``record``'s dispatch intent is still the conversion's current one."""
        current = self.ledger.get(record.conversion_id)
        return (
            current is not None
            and current.state is ConversionState.DISPATCHING
            and (current.fence == record.fence)
        )

    def _cancel_orphans(self, backend: Backend, refs: Sequence[JobRef]) -> None:
        """Stop jobs made for intents settled meanwhile, unless reconciliation recorded that very job
        (then it is the conversion's job); any other must not run."""
        for ref in refs:
            current = self.ledger.get(ref.conversion_id)
            if current is not None and current.job_ref == ref.job_id:
                continue
            backend.cancel(ref)
            log.warning("dispatch.cancelled_late", extra={"conversion_id": ref.conversion_id})

    # -- reconcile intents left by a crash -------------------------------------------------------

    def reconcile_intents(self, older_than: float) -> tuple[int, int]:
        """Settle intents older than ``older_than``: record jobs the backend has, release the rest."""
        stale = self.ledger.intents(older_than, limit=self.config.max_claims)
        found_n = released_n = 0
        by_path: dict[Path, list[ConversionRecord]] = {}
        for r in stale:
            if r.path is not None:
                by_path.setdefault(r.path, []).append(r)
        now = self.clock()
        for path, records in by_path.items():
            backend = self.backends.get(path)
            if backend is None:
                continue
            try:
                found = backend.find([(r.conversion_id, r.intent or "") for r in records])
            except BackendError as exc:
                log.warning("reconcile.failed", extra={"path": path.value, "error": str(exc)})
                continue
            recorded = self.ledger.mark_dispatched(
                [
                    Dispatched(r.conversion_id, r.fence, found[r.conversion_id].job_id)
                    for r in records
                    if r.conversion_id in found
                ],
                now,
            )
            found_n += len(recorded)
            missing = [(r.conversion_id, r.fence) for r in records if r.conversion_id not in found]
            if missing:
                released_n += self.ledger.release(missing, now, "intent reconciled: the backend never got it")
            log.info(
                "reconcile.intents",
                extra={"path": path.value, "found": len(recorded), "released": len(missing)},
            )
        return found_n, released_n

    def step_down(self) -> bool:
        """Give up the dispatch lease, so another replica dispatches from its next cycle instead of
        after the lease expires. Only once no cycle of this controller runs any more (an orderly
        stop): True when this controller was the dispatcher."""
        return self.ledger.end_lease(DISPATCH_LEASE, self.holder)

    # -- the state the service shows -------------------------------------------------------------

    @property
    def flag_state(self) -> FlagState | None:
        return self.last_report.flag.state if self.last_report else None


def batch_key(path: Path, records: Sequence[ConversionRecord]) -> str:
    """A deterministic name for one dispatch attempt of these conversions (their next fences)."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(f"{r.conversion_id}:{r.fence + 1}\n".encode())
    prefix = "L" if path is Path.LEGACY else "N"
    return f"{prefix}{digest.hexdigest()[:20]}"
