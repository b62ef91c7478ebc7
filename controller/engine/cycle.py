"""The reconcile loop: one flag read, then claim, poll, admit and dispatch — safe to rerun anywhere.

Level-triggered: every step re-derives what to do from the ledger and what the backends report.
An intent is written before each submit, so a crash at any point leaves either an intent (found
or released by reconciliation) or a recorded job — never a second submission, never a lost one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from controller.core.admission import Load, Split, clamp_threads, spare, split_budget
from controller.core.domain import (
    ConversionRecord,
    ConversionState,
    DispatchBatch,
    DispatchItem,
    JobRef,
    JobState,
    JobStatus,
    Path,
)
from controller.core.errors import BackendError, CutoverError, SubmitRejectedError
from controller.core.ports import (
    Backend,
    Claimed,
    Dispatched,
    Finish,
    FlagReader,
    Inventory,
    Ledger,
    Route,
    RouteGroups,
    Waiting,
)
from controller.core.routing import RoutingPolicy, basis, decide_tenants
from controller.core.transitions import RetryPolicy, Verdict, after_poll
from controller.engine.claims import batch_claims
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus

if TYPE_CHECKING:
    from controller.engine.shadows import ShadowRunner

log = logging.getLogger("cutover.cycle")

DISPATCH_LEASE = "dispatch"  # the lease whose holder dispatches for all replicas
STRAY_MEMORY_SECONDS = 24 * 3600.0  # a stray the backend has not known for this long is let go


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
    # None: the project's split (``split_budget``). A simulation may put another policy in its
    # place to compare with it (benchmarks/peak.py); a running controller never does.
    split: Callable[[int, Load, int], Split] | None = None


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
        shadows: ShadowRunner | None = None,
    ) -> None:
        self.ledger = ledger
        self._claims = batch_claims(ledger)
        self.shadows = shadows  # shadow runs, in budget real work leaves free
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
        # The new path's cap in force at this process's last dispatch (none before the first).
        self._cap_before = 0
        # Since when the answers about a dispatch attempt (conversion, fence) have all been UNKNOWN.
        self._unseen_since: dict[tuple[str, int], float] = {}
        self._snapshot: FlagSnapshot | None = None

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
        self._snapshot = status.snapshot
        errors: list[str] = []
        reconciled, released = self.reconcile_intents(started - self.config.intent_grace_seconds)
        held, hold_reason, claimed = self._route(status, started)
        polled = self._poll(started, errors)
        if self.shadows is not None:
            self._shadow_step("poll", errors, self.shadows.poll, started)
        # Taken at the time of taking, not the cycle's start: the lease must cover the dispatch ahead.
        lease_at = self.clock()
        dispatcher = self.ledger.try_lease(DISPATCH_LEASE, self.holder, lease_at, self.config.lease_seconds)
        split: tuple[dict[Path, int], int, int, dict[Path, int]] = ({}, 0, 0, {})
        if dispatcher:
            lease_until = lease_at + self.config.lease_seconds
            split = self._dispatch(self.clock(), lease_until, polled, errors)
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
        if self.shadows is not None and claimed.per_path.get(Path.LEGACY):
            taken = self._taken_by(Path.LEGACY, waiting, routes, claimed)
            self._shadow_step("sample", [], self.shadows.sample_claimed, taken, self.ledger.get, now)
        if log.isEnabledFor(logging.DEBUG):
            self._log_decisions(waiting, routes, claimed)
        return False, "", dict(claimed.per_path)

    @staticmethod
    def _taken_by(
        path: Path, waiting: Waiting, routes: RouteGroups, claimed: Claimed
    ) -> list[tuple[str, int]]:
        """(conversion id, tenant) of each conversion this cycle's claim gave to ``path``."""
        by_tenant = waiting.route_by_tenant(routes)
        ids, tenant_ids = waiting.conversion_ids, waiting.tenant_ids
        return [(ids[i], tenant_ids[i]) for i in claimed.created if by_tenant[tenant_ids[i]].path is path]

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
        unseen: set[Path] = field(default_factory=set)  # paths whose status poll failed
        handed: dict[Path, int] = field(default_factory=dict)  # conversions dispatched, unfinished
        unknown: dict[Path, int] = field(default_factory=dict)  # conversions answered UNKNOWN

    def _poll(self, now: float, errors: list[str]) -> Controller._Polled:
        out = Controller._Polled()
        for path, backend in self.backends.items():
            records = self.ledger.in_flight(path, limit=100_000)
            if not records:
                continue
            out.handed[path] = len(records)
            refs = {r.conversion_id: JobRef(r.job_ref or "", r.conversion_id) for r in records}
            try:
                states = backend.poll(list(refs.values()))
            except BackendError as exc:
                errors.append(f"poll {path.value}: {exc}")
                log.warning("backend.poll_failed", extra={"path": path.value, "error": str(exc)})
                out.unseen.add(path)
                continue
            finishes: list[Finish] = []
            status_counts: Counter[JobStatus] = Counter()
            for record in records:
                state = states.get(refs[record.conversion_id])
                if state is None:
                    continue
                status_counts[state.status] += 1
                verdict = after_poll(
                    state, record.attempts, self._unseen_for(record, state, now), self.config.retry
                )
                if verdict is Verdict.SUCCEED:
                    finishes.append(
                        Finish(
                            record.conversion_id,
                            record.fence,
                            ConversionState.SUCCEEDED,
                            state.output or "",
                            state.work_seconds,
                            state.work_started_at,
                            state.slot_at,
                        )
                    )
                elif verdict is Verdict.FAIL:
                    finishes.append(
                        Finish(
                            record.conversion_id,
                            record.fence,
                            ConversionState.FAILED,
                            state.reason,
                            state.work_seconds,
                            state.work_started_at,
                            state.slot_at,
                        )
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
            out.unknown[path] = status_counts[JobStatus.UNKNOWN] + sum(
                1 for r in records if states.get(refs[r.conversion_id]) is None
            )
            out.queued[path] = status_counts[JobStatus.QUEUED]
        return out

    def _unseen_for(self, record: ConversionRecord, state: JobState, now: float) -> float:
        """How long the answers about this dispatch attempt have been UNKNOWN without a break, as
        this process saw them (a restart starts counting again: it errs towards waiting)."""
        key = (record.conversion_id, record.fence)
        if state.status is not JobStatus.UNKNOWN:
            self._unseen_since.pop(key, None)
            return 0.0
        if len(self._unseen_since) > 100_000:
            self._unseen_since.clear()  # attempts settled elsewhere leave entries behind; start over
        return now - self._unseen_since.setdefault(key, now)

    # -- dispatch: split the budget, then submit each path's work ------------------------------

    @dataclass(frozen=True, slots=True)
    class Admission:
        """What a dispatch would work from now, and how it would split the budget (read only)."""

        load: Load
        split: Split
        legacy_todo: list[ConversionRecord]
        new_todo: list[ConversionRecord]
        new_running: int  # budget slots the new path holds (see ``_held``)
        admitted_new: int  # new-path work that counts against the budget (running, or handed over)

    def _held(self, polled: Controller._Polled) -> dict[Path, int]:
        """Budget slots each path may hold now, never less than the truth.

        A backend knows what its last successful poll told it. When this cycle's poll of a path
        failed (throttled, timed out), that figure may be 0 (right after a restart, or a build
        started since): the path is then taken to hold one slot per conversion handed to it and
        not finished. A conversion the poll answered UNKNOWN about (a build not found, an answer
        that could not be read) may be at work all the same: one slot each. Intents whose submit
        had an unknown outcome are never polled, yet what they started may run: each counts as one
        slot until reconciliation settles it."""
        # Every intent there is (written before now; a day ahead covers any clock skew).
        intents = Counter(r.path for r in self.ledger.intents(self.clock() + 86400.0, self.config.max_claims))
        held: dict[Path, int] = {}
        for path, backend in self.backends.items():
            seen = backend.in_use()
            if path in polled.unseen:
                seen = max(seen, polled.handed.get(path, 0))
            held[path] = seen + intents[path] + polled.unknown.get(path, 0)
        return held

    def admission(self, queued_new: int, polled: Controller._Polled | None = None) -> Controller.Admission:
        """The load both paths hold and want now and the split of the budget it gives, reading the
        ledger and the backends and changing nothing. ``queued_new`` is the new-path work a poll saw
        waiting in the backend's queue; ``polled`` what this cycle's poll found (None: every poll
        answered, nothing unknown). The dispatch step applies it; a simulation asks it to tell
        which cycles can change what runs."""
        cfg = self.config
        legacy, new = self.backends.get(Path.LEGACY), self.backends.get(Path.NEW)
        # One dispatch per path per cycle carries at most max_batch_items (a manifest's, an array
        # job's size); max_claims bounds only what one cycle routes.
        legacy_todo = self.ledger.pending_dispatch(Path.LEGACY, cfg.max_batch_items) if legacy else []
        new_todo = self.ledger.pending_dispatch(Path.NEW, cfg.max_batch_items) if new else []
        held = self._held(polled or Controller._Polled())
        legacy_in_use = held.get(Path.LEGACY, 0)
        new_running = held.get(Path.NEW, 0)
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
        load = Load(legacy_in_use, admitted_new, len(legacy_todo), len(new_todo) + queued_new)
        split = (cfg.split or split_budget)(cfg.budget, load, cfg.legacy_max_threads)
        return Controller.Admission(load, split, legacy_todo, new_todo, new_running, admitted_new)

    def _dispatch(
        self, now: float, lease_until: float, polled: Controller._Polled, errors: list[str]
    ) -> tuple[dict[Path, int], int, int, dict[Path, int]]:
        cfg = self.config
        legacy, new = self.backends.get(Path.LEGACY), self.backends.get(Path.NEW)
        plan = self.admission(polled.queued.get(Path.NEW, 0), polled)
        if self.clock() > lease_until - cfg.lease_seconds / 2:
            # As for a submit (``_submit``): the split holds only while no other replica can take
            # the lease and dispatch on its own view. A process that got here late (paused after
            # taking the lease) may have read the backends before another dispatcher's work was
            # seen; a cap raised on that, for the new path or its shadows, lets queued work start
            # beside it. Nothing is changed; the next cycle dispatches.
            errors.append("dispatch: the dispatch lease ran short; left for the next cycle")
            log.warning("dispatch.lease_short", extra={"path": "all"})
            return {}, 0, 0, {}
        load, split, legacy_todo, new_todo = plan.load, plan.split, plan.legacy_todo, plan.new_todo
        legacy_in_use, new_running = plan.load.legacy_in_use, plan.new_running
        budget = cfg.budget
        if self.shadows is not None:
            # Before real work is submitted: shadows holding budget it needs are stopped first.
            room = spare(budget, load, split)
            stuck = self._shadow_step("make_room", errors, self.shadows.make_room, room, now)
            if isinstance(stuck, int) and stuck > 0:
                # Shadows that could not be stopped still load the database: real work waits for them.
                # All they hold counts, the room this split left them as well as the excess: the split
                # made again here hands out the whole budget it is given, that room included.
                held = room + stuck
                budget -= held
                load = replace(load, legacy_in_use=load.legacy_in_use + held)
                split = (cfg.split or split_budget)(cfg.budget, load, cfg.legacy_max_threads)
        dispatched: dict[Path, int] = {}
        cap_in_force = split.new_capacity
        if new is not None:
            cap = new.set_capacity(split.new_capacity)
            self._new_caps = cap is not None
            if cap is None:
                # The backend cannot cap itself: hold back so that dispatched, unfinished work fits.
                new_todo = new_todo[: max(0, split.new_capacity - plan.admitted_new)]
            else:
                cap_in_force = cap
            if new_todo:
                dispatched[Path.NEW] = self._submit(new, new_todo, 0, now, lease_until, errors)
        # A lowered cap takes effect asynchronously (UpdateComputeEnvironment): until the next poll
        # has seen what runs under it, queued jobs may still start under the cap before. The slots
        # a lowering frees are handed to a build from the next cycle on, never in this one.
        capped = max(cap_in_force, self._cap_before) if self._new_caps else cap_in_force
        self._cap_before = cap_in_force
        threads = clamp_threads(split.legacy_threads, budget, legacy_in_use, capped)
        if legacy is not None and legacy_todo and threads >= 1:
            # The build takes the split's share of the backlog (one whose threads were clamped, a
            # share in proportion), and never more than one dispatch may hold: a manifest of many
            # thousands on a few threads could outlast CodeBuild's timeout.
            items = len(legacy_todo) if split.legacy_items is None else split.legacy_items
            if threads < split.legacy_threads:
                items = math.ceil(items * threads / split.legacy_threads)
            todo = legacy_todo[: max(1, min(items, cfg.max_batch_items))]
            dispatched[Path.LEGACY] = self._submit(legacy, todo, threads, now, lease_until, errors)
        else:
            threads = 0
        in_use = {Path.LEGACY: legacy_in_use + threads, Path.NEW: new_running}
        for backend in self.backends.values():
            self._stop_strays(backend)
        if self.shadows is not None:
            real = plan.load  # what real work holds and wants, before any stuck shadow is counted in
            busy = bool(
                real.legacy_in_use or real.new_running or real.legacy_waiting or real.new_waiting or threads
            )
            self._shadow_step(
                "dispatch", errors, self.shadows.dispatch, self._snapshot, now, lease_until, busy=busy
            )
        return dispatched, cap_in_force, threads, in_use

    def _shadow_step(
        self, name: str, errors: list[str], step: Callable[..., object], *args: object, **kwargs: object
    ) -> object:
        """Run a shadow step; its failure is reported and never stops the real cycle."""
        try:
            return step(*args, **kwargs)
        except CutoverError as exc:
            errors.append(f"shadow {name}: {exc}")
            log.warning("shadow.step_failed", extra={"step": name, "error": str(exc)})
            return None

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
            # Back, retries and all, with a quarter of the lease left to record what it started.
            time_limit=lease_until - self.config.lease_seconds / 4 - self.clock(),
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
            # A listing may lag behind the submit it should show, so one look proves nothing: each is
            # kept as a late intent, looked for again every cycle until the intent grace has passed.
            errors.append(f"submit {backend.path.value}: {exc}")
            log.warning("dispatch.unknown", extra={"path": backend.path.value, "error": str(exc)})
            settled = [r for r in taken if not self._intended(r)]
            if settled:
                self._settle_late(backend, self._remember_late(backend.path, key, settled))
            return 0
        if not self.ledger.try_lease(DISPATCH_LEASE, self.holder, self.clock(), self.config.lease_seconds):
            # The submit outlasted the lease (a paused process): another replica dispatches now and
            # counts these intents as held until they are recorded, which the fences keep exact.
            errors.append(f"submit {backend.path.value}: the dispatch lease was lost during the submit")
            log.warning("dispatch.lease_lost", extra={"path": backend.path.value, "batch": key})
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

    def _late(self, path: Path) -> dict[str, dict[str, Any]]:
        """Late intents of ``path``: conversion id -> {"key": batch key, "since": when the submit
        whose answer was lost came back}, kept in the ledger's value store."""
        raw = self.ledger.get_value(_late_key(path))
        found = json.loads(raw) if raw else {}
        return found if isinstance(found, dict) else {}

    def _remember_late(
        self, path: Path, key: str, records: Sequence[ConversionRecord]
    ) -> dict[str, dict[str, Any]]:
        """Record, durably and before looking, that a submit under ``key`` whose answer was lost may
        have started these conversions although their intents were settled meanwhile. Returns the
        path's late intents, these among them."""
        late = self._late(path)
        now = self.clock()
        for r in records:
            late[r.conversion_id] = {"key": key, "since": now}
        self.ledger.put_value(_late_key(path), json.dumps(late, sort_keys=True), now)
        return late

    def _settle_late(
        self, backend: Backend, late: dict[str, dict[str, Any]], adopt: Sequence[ConversionRecord] = ()
    ) -> tuple[dict[str, JobRef], dict[str, dict[str, Any]]]:
        """Look for what late intents started. A job found is the conversion's own when its current
        intent (one of ``adopt``, found to have started nothing) takes it; any other is a stray,
        recorded and stopped (``_cancel_orphans``). A late intent is forgotten once found, or once
        the intent grace has passed without the listing showing it. Returns the jobs found and the
        late intents left (all of them when the lookup failed)."""
        if not late:
            return {}, {}
        try:
            found = backend.find([(cid, str(info.get("key", ""))) for cid, info in late.items()])
        except BackendError as exc:
            log.warning("dispatch.orphans_unknown", extra={"path": backend.path.value, "error": str(exc)})
            return {}, late
        now = self.clock()
        taken = [r for r in adopt if r.conversion_id in found]
        if taken:
            adopted = self.ledger.mark_dispatched(
                [Dispatched(r.conversion_id, r.fence, found[r.conversion_id].job_id) for r in taken], now
            )
            for cid in adopted:
                log.info("reconcile.late_job_taken", extra={"conversion_id": cid, "job": found[cid].job_id})
        self._cancel_orphans(backend, list(found.values()))
        grace = self.config.intent_grace_seconds
        left = {
            cid: info
            for cid, info in late.items()
            if cid not in found and now - float(info.get("since", now)) <= grace
        }
        if left != late:
            self.ledger.put_value(_late_key(backend.path), json.dumps(left, sort_keys=True), now)
        return found, left

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
        (then it is the conversion's job); any other is a stray and must not run. A stray is
        recorded in the ledger before it is stopped, and stopped again every cycle until the
        backend shows it stopped (``_stop_strays``): a stop call can fail, or not take."""
        strays = []
        for ref in refs:
            current = self.ledger.get(ref.conversion_id)
            if current is None or current.job_ref != ref.job_id:
                strays.append(ref)
        if not strays:
            return
        recorded = self._strays(backend.path)
        now = self.clock()
        for ref in strays:
            recorded.setdefault(ref.job_id, {"conversion_id": ref.conversion_id, "since": now})
        self.ledger.put_value(_strays_key(backend.path), json.dumps(recorded, sort_keys=True), now)
        for ref in strays:
            log.warning(
                "dispatch.cancelled_late", extra={"conversion_id": ref.conversion_id, "job": ref.job_id}
            )
            self._stop(backend, ref)

    def _strays(self, path: Path) -> dict[str, dict[str, Any]]:
        raw = self.ledger.get_value(_strays_key(path))
        found = json.loads(raw) if raw else {}
        return found if isinstance(found, dict) else {}

    def _stop(self, backend: Backend, ref: JobRef) -> None:
        try:
            backend.cancel(ref)
        except BackendError as exc:
            log.warning("dispatch.stray_not_stopped", extra={"job": ref.job_id, "error": str(exc)})

    def _stop_strays(self, backend: Backend) -> None:
        """Stop each recorded stray again until the backend shows it ended; one the backend has not
        known for a day is let go (it keeps no record that long)."""
        recorded = self._strays(backend.path)
        if not recorded:
            return
        refs = {job: JobRef(job, str(info.get("conversion_id", ""))) for job, info in recorded.items()}
        try:
            look = backend.outcomes if isinstance(backend, Inventory) else backend.poll
            states = look(list(refs.values()))
        except BackendError as exc:
            log.warning("dispatch.strays_unseen", extra={"path": backend.path.value, "error": str(exc)})
            states = {}
        now = self.clock()
        left: dict[str, dict[str, Any]] = {}
        for job, ref in refs.items():
            state = states.get(ref)
            if state is not None and state.status.terminal:
                log.info("dispatch.stray_stopped", extra={"job": job, "conversion_id": ref.conversion_id})
                continue
            since = float(recorded[job].get("since", now))
            if state is not None and state.status is JobStatus.UNKNOWN and now - since > STRAY_MEMORY_SECONDS:
                log.warning(
                    "dispatch.stray_forgotten", extra={"job": job, "conversion_id": ref.conversion_id}
                )
                continue
            left[job] = recorded[job]
            self._stop(backend, ref)
        if left != recorded:
            self.ledger.put_value(_strays_key(backend.path), json.dumps(left, sort_keys=True), now)

    # -- reconcile intents left by a crash -------------------------------------------------------

    def reconcile_intents(self, older_than: float) -> tuple[int, int]:
        """Settle intents older than ``older_than``: record jobs the backend has, release the rest.

        A conversion may also have a late intent (``_remember_late``): an earlier submit that landed
        after its intent was settled here, its answer lost. While that is unsettled, the current
        intent is not released; when the backend has nothing for the current intent but has the
        late intent's job, that job is recorded as the conversion's, so it runs once."""
        stale = self.ledger.intents(older_than, limit=self.config.max_claims)
        found_n = released_n = 0
        by_path: dict[Path, list[ConversionRecord]] = {}
        for r in stale:
            if r.path is not None:
                by_path.setdefault(r.path, []).append(r)
        now = self.clock()
        for path, backend in self.backends.items():
            records = by_path.get(path, [])
            late = self._late(path)
            if not records:
                self._settle_late(backend, late)
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
            unfound = [r for r in records if r.conversion_id not in found]
            adopt = [r for r in unfound if r.conversion_id in late]
            late_found, still_late = self._settle_late(backend, late, adopt=adopt)
            found_n += sum(1 for r in unfound if r.conversion_id in late_found)
            missing = [
                (r.conversion_id, r.fence)
                for r in unfound
                if r.conversion_id not in late_found and r.conversion_id not in still_late
            ]
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


def _strays_key(path: Path) -> str:
    """Where the dispatcher records the strays of a path (``ValueStore``)."""
    return f"dispatch:strays:{path.value}"


def _late_key(path: Path) -> str:
    """Where the late intents of a path are kept (``ValueStore``)."""
    return f"dispatch:late:{path.value}"


def batch_key(path: Path, records: Sequence[ConversionRecord]) -> str:
    """A deterministic name for one dispatch attempt of these conversions (their next fences)."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(f"{r.conversion_id}:{r.fence + 1}\n".encode())
    prefix = "L" if path is Path.LEGACY else "N"
    return f"{prefix}{digest.hexdigest()[:20]}"
