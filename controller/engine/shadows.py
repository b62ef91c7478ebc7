"""Shadow runs beside the cycle: sample conversions the old path owns, run them again on the new
path (and, for noise, on the old path) with budget real work leaves free, record how they end,
then — off the cycle, on the housekeeping thread — compare their outputs and clean them up.

A shadow never changes its conversion: this module writes only shadow records (``ShadowStore``)
and talks only to the shadow backends, instances of their own whose outputs go to a quarantine.
Real work never waits for a shadow: the cycle hands over only what its admission leaves spare,
and shadows holding budget that real work needs are stopped before real work is submitted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controller.core.domain import (
    ConversionRecord,
    ConversionState,
    DispatchBatch,
    DispatchItem,
    JobRef,
    JobStatus,
    Path,
)
from controller.core.errors import BackendError, NotFoundError, SubmitRejectedError
from controller.core.gates import GateVerdict
from controller.core.parity import UNGROUPED, Parity, build_report, group_verdicts
from controller.core.ports import Backend, LeaseStore, OwnershipStore, ShadowFinish, ShadowStore
from controller.core.routing import RoutingPolicy, decide
from controller.core.shadow import (
    ShadowKind,
    ShadowPlan,
    ShadowRecord,
    ShadowScope,
    ShadowState,
    ShadowWhen,
    shadow_id,
)
from controller.engine.planwatch import PlanWatch
from controller.shadow.judge import Judge
from controller.shadow.outputs import OutputError, Outputs
from flags.rollout import RolloutPlan
from flags.snapshot import FlagSnapshot

log = logging.getLogger("cutover.shadow")

_LIVE = (ShadowState.PENDING, ShadowState.DISPATCHING, ShadowState.DISPATCHED)
CHECKS_LEASE = "shadow-checks"  # the lease whose holder compares and cleans for all replicas
DAY = 86_400.0


def scope_of(plan: RolloutPlan | None, global_rate: float, global_aa_rate: float) -> ShadowScope:
    """Who gets shadows under ``plan`` and the global rates."""
    if plan is None:
        return ShadowScope(global_rate=global_rate, global_aa_rate=global_aa_rate)
    tenants: set[int] = set()
    for name in plan.shadow.groups:
        tenants |= plan.group(name).tenant_ids
    return ShadowScope(plan.shadow, frozenset(tenants), global_rate, global_aa_rate)


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """The shadow runner's knobs, from the settings and the plan."""

    global_rate: float = 0.0
    global_aa_rate: float = 0.0
    intent_grace_seconds: float = 60.0
    lease_seconds: float = 30.0
    pending_seconds: float = 6 * 3600.0  # a sampled shadow that got no room by then is skipped
    max_preemptions: int = 3
    resubmits: int = 1  # a failed shadow is run again as often as a failed conversion is
    max_batch: int = 200
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)


def shadow_key(prefix: str, shadows: Sequence[ShadowRecord]) -> str:
    """A deterministic name for one dispatch attempt of these shadows (their next fences)."""
    digest = hashlib.sha256()
    for s in shadows:
        digest.update(f"{s.shadow_id}:{s.fence + 1}\n".encode())
    return f"{prefix}{digest.hexdigest()[:20]}"


class ShadowRunner:
    """The cycle's shadow steps: ``sample`` after routing, ``poll`` after polling, ``make_room``
    once the budget is split and before real work is submitted, ``dispatch`` after it."""

    def __init__(
        self,
        store: ShadowStore,
        backends: Mapping[Path, Backend],
        config: ShadowConfig,
        *,
        plan: Callable[[], RolloutPlan | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.backends = backends
        self.config = config
        self.plan = plan
        self.clock = clock
        self._status: dict[str, JobStatus] = {}
        self._held: dict[Path, int] = {}
        self._room = 0
        self._active = True

    # -- sampling ------------------------------------------------------------------------------

    def scope(self) -> ShadowScope:
        return scope_of(self.plan(), self.config.global_rate, self.config.global_aa_rate)

    def sample(self, owned: Sequence[ConversionRecord], now: float) -> int:
        """Record the shadows of conversions the old path just took, as the sampling rule says."""
        scope = self.scope()
        if not scope.enabled:
            return 0
        cap = scope.plan.max_per_tenant_per_day
        day_start = now - now % DAY
        used: dict[int, int] = {}
        shadows: list[ShadowRecord] = []
        for record in owned:
            if record.path is not Path.LEGACY:
                continue
            kinds = scope.kinds(record.conversion_id, record.tenant_id)
            if not kinds:
                continue
            if cap is not None:
                if record.tenant_id not in used:
                    used[record.tenant_id] = self.store.shadows_since(record.tenant_id, day_start)
                if used[record.tenant_id] >= cap:
                    continue
                used[record.tenant_id] += 1
            shadows.extend(_pending(record, kind) for kind in kinds)
        if not shadows:
            return 0
        created = self.store.add_shadows(shadows, now)
        if created:
            log.info("shadow.sampled", extra={"shadows": len(created)})
        return len(created)

    def sample_claimed(
        self,
        taken: Iterable[tuple[str, int]],
        load: Callable[[str], ConversionRecord | None],
        now: float,
    ) -> int:
        """``sample`` for conversions the old path just claimed, given as (conversion id, tenant):
        the claim hands out no records, so only those the sampling rule picks are read (``load``)."""
        scope = self.scope()
        if not scope.enabled:
            return 0
        picked = [cid for cid, tenant in taken if scope.kinds(cid, tenant)]
        return self.sample([r for r in map(load, picked) if r is not None], now)

    # -- poll: record how shadow runs ended -------------------------------------------------------

    def poll(self, now: float) -> None:
        """Record finished shadow runs and settle shadow intents a crash left behind."""
        self._status.clear()
        # Nothing sampled and nothing in flight: the poll and the dispatch have nothing to do.
        self._active = self.scope().enabled or bool(self.store.shadows(_LIVE, limit=1))
        if not self._active:
            return
        for kind in ShadowKind:
            backend = self.backends.get(kind.path)
            if backend is None:
                continue
            self._poll_kind(backend, kind, now)
            self._reconcile(backend, kind, now)

    def _poll_kind(self, backend: Backend, kind: ShadowKind, now: float) -> None:
        records = self.store.shadows([ShadowState.DISPATCHED], kind=kind, limit=100_000)
        if not records:
            return
        refs = {r.shadow_id: JobRef(r.job_ref or "", r.conversion_id) for r in records}
        try:
            states = backend.poll(list(refs.values()))
        except BackendError as exc:
            log.warning("shadow.poll_failed", extra={"kind": kind.value, "error": str(exc)})
            return
        finishes: list[ShadowFinish] = []
        for r in records:
            state = states.get(refs[r.shadow_id])
            if state is None:
                continue
            self._status[r.shadow_id] = state.status
            timing = (state.work_seconds, state.work_started_at, state.slot_at)
            if state.status is JobStatus.SUCCEEDED:
                finishes.append(
                    ShadowFinish(r.shadow_id, r.fence, ShadowState.SUCCEEDED, state.output, "", *timing)
                )
            elif state.status is JobStatus.FAILED or (
                state.status is JobStatus.UNKNOWN
                and now - (r.dispatched_at or now) > self.config.intent_grace_seconds
            ):
                why = state.reason or "no such job"
                if r.fence - r.preemptions <= self.config.resubmits:
                    # The same second chance a conversion gets, so parity compares like with like.
                    self.store.release_shadows(
                        [(r.shadow_id, r.fence)], now, f"attempt failed ({why}); again"
                    )
                else:
                    finishes.append(
                        ShadowFinish(r.shadow_id, r.fence, ShadowState.FAILED, None, why, *timing)
                    )
        if finishes:
            done = self.store.finish_shadows(finishes, now)
            log.info("shadow.finished", extra={"kind": kind.value, "shadows": len(done)})

    def _reconcile(self, backend: Backend, kind: ShadowKind, now: float) -> None:
        stale = [
            r
            for r in self.store.shadows([ShadowState.DISPATCHING], kind=kind, limit=10_000)
            if (r.updated_at or now) < now - self.config.intent_grace_seconds
        ]
        if not stale:
            return
        try:
            found = backend.find([(r.conversion_id, r.intent or "") for r in stale])
        except BackendError as exc:
            log.warning("shadow.reconcile_failed", extra={"kind": kind.value, "error": str(exc)})
            return
        self.store.mark_shadows_dispatched(
            [
                (r.shadow_id, r.fence, found[r.conversion_id].job_id)
                for r in stale
                if r.conversion_id in found
            ],
            now,
        )
        missing = [(r.shadow_id, r.fence) for r in stale if r.conversion_id not in found]
        if missing:
            self.store.release_shadows(missing, now, "intent reconciled: the backend never got it")

    # -- admission: stop what real work needs, then use what it leaves ------------------------------

    def held(self) -> dict[Path, int]:
        """Budget slots the shadow backends hold now (a backend that cannot say: its shadows)."""
        out: dict[Path, int] = {}
        for path, backend in self.backends.items():
            try:
                out[path] = backend.in_use()
            except BackendError:
                kind = ShadowKind.NEW if path is Path.NEW else ShadowKind.AA
                out[path] = len(self.store.shadows([ShadowState.DISPATCHED], kind=kind, limit=100_000))
        return out

    def make_room(self, room: int, now: float) -> int:
        """Stop shadows while they hold more than ``room`` slots (those found running first, newest
        first), then cap the new-path shadow backend to what is left; returns the slots shadows
        still hold beyond ``room`` (stops that failed), which the cycle must keep from real work."""
        self._room = max(0, room)
        held = self.held()
        if sum(held.values()) > self._room:
            held = self._preempt(held, now)
        self._held = held
        self._cap_new(now)
        return max(0, sum(held.values()) - self._room)

    def _preempt(self, held: dict[Path, int], now: float) -> dict[Path, int]:
        """Stop shadows one at a time until what the backends say they hold fits in the room."""
        dispatched = self.store.shadows([ShadowState.DISPATCHED], limit=100_000)
        # Those seen running first (they hold a slot), the newest first (they have done the least).
        seen = self._status
        order = [
            r
            for _, r in sorted(
                enumerate(dispatched),
                key=lambda pair: (
                    seen.get(pair[1].shadow_id, JobStatus.RUNNING) is not JobStatus.RUNNING,
                    -pair[0],
                ),
            )
        ]
        for r in order:
            if sum(held.values()) <= self._room:
                break
            backend = self.backends.get(r.path)
            if backend is None:
                continue
            try:
                backend.cancel(JobRef(r.job_ref or "", r.conversion_id))
            except BackendError as exc:
                log.warning("shadow.preempt_failed", extra={"shadow_id": r.shadow_id, "error": str(exc)})
                continue
            self.store.release_shadows(
                [(r.shadow_id, r.fence)], now, "stopped to make room for real work", preempted=True
            )
            if r.preemptions + 1 >= self.config.max_preemptions:
                why = f"stopped {r.preemptions + 1} times to make room for real work"
                self.store.skip_shadows([r.shadow_id], why, now)
            log.info("shadow.preempted", extra={"shadow_id": r.shadow_id})
            held = self.held()  # what the backends hold now, not what the stop was hoped to free
        return held

    def _cap_new(self, now: float) -> None:
        backend = self.backends.get(Path.NEW)
        if backend is None:
            return
        cap = max(0, self._room - self._held.get(Path.LEGACY, 0))
        try:
            backend.set_capacity(cap)
        except BackendError as exc:
            log.warning("shadow.capacity_failed", extra={"error": str(exc)})

    def dispatch(
        self, snapshot: FlagSnapshot | None, now: float, lease_until: float, *, busy: bool = False
    ) -> int:
        """Hand pending shadows to the shadow backends, within the room ``make_room`` found; none
        while real work runs or waits (``busy``) when the plan says shadows wait for idle paths."""
        free = self._room - sum(self._held.values())
        if free <= 0 or not self._active:
            return 0
        if busy and self.scope().plan.when is ShadowWhen.IDLE:
            return 0
        pending = self.store.shadows([ShadowState.PENDING], limit=min(self.config.max_batch, free * 4 + 20))
        chosen = self._eligible(pending, snapshot, now)[:free]
        if not chosen or self.clock() > lease_until - self.config.lease_seconds / 2:
            return 0
        aa = [c for c in chosen if c.kind is ShadowKind.AA]
        fresh = [c for c in chosen if c.kind is ShadowKind.NEW]
        if aa:
            # Old-path shadows start as soon as they are handed over: lower the new-path shadows' cap
            # by them first, so that no moment (a crash between the two) has both over the room.
            self._held[Path.LEGACY] = self._held.get(Path.LEGACY, 0) + len(aa)
            self._cap_new(now)
            # Then look again: new-path shadows waiting in their runner's queue hold nothing when
            # ``make_room`` looks, yet may start under the cap before it is lowered (a runner starts
            # work as slots free, and real work was submitted in between). Old-path shadows get only
            # what is left now; the lowered cap keeps anything more from starting after this look.
            now_held = self.held()
            aa = aa[: max(0, self._room - sum(now_held.values()))]
        sent = sum(self._submit(ShadowKind.AA, [record], now) for record in aa)
        if fresh:
            sent += self._submit(ShadowKind.NEW, fresh, now)
        return sent

    def _eligible(
        self, pending: Sequence[ShadowRecord], snapshot: FlagSnapshot | None, now: float
    ) -> list[ShadowRecord]:
        """Pending shadows that may still run: their tenant is not migrated, they are not too old."""
        moved: list[str] = []
        stale: list[str] = []
        out: list[ShadowRecord] = []
        for r in pending:
            if decide(r.tenant_id, snapshot, self.config.routing).path is Path.NEW:
                moved.append(r.shadow_id)
            elif (r.created_at or now) < now - self.config.pending_seconds:
                stale.append(r.shadow_id)
            elif r.kind.path in self.backends:
                out.append(r)
        if moved:
            self.store.skip_shadows(moved, "its tenant is migrated: shadows stop", now)
        if stale:
            self.store.skip_shadows(stale, "no spare budget in time", now)
        return out

    def _submit(self, kind: ShadowKind, records: Sequence[ShadowRecord], now: float) -> int:
        backend = self.backends[kind.path]
        key = shadow_key("S" if kind is ShadowKind.NEW else "A", records)
        taken = self.store.mark_shadows_dispatching(records, key, now)
        if not taken:
            return 0
        batch = DispatchBatch(
            key=key,
            path=kind.path,
            items=tuple(
                DispatchItem(r.conversion_id, r.tenant_id, r.params, r.flag_version or "", r.fence)
                for r in taken
            ),
            concurrency=len(taken) if kind is ShadowKind.AA else 0,
        )
        try:
            refs = backend.submit(batch)
        except SubmitRejectedError as exc:
            self.store.release_shadows([(r.shadow_id, r.fence) for r in taken], self.clock(), str(exc))
            return 0
        except BackendError as exc:
            # Outcome unknown: the intents stay, and the poll step reconciles them later.
            log.warning("shadow.submit_unknown", extra={"kind": kind.value, "error": str(exc)})
            return 0
        by_cid = {r.conversion_id: r for r in taken}
        recorded = self.store.mark_shadows_dispatched(
            [
                (by_cid[ref.conversion_id].shadow_id, by_cid[ref.conversion_id].fence, ref.job_id)
                for ref in refs
            ],
            self.clock(),
        )
        log.info("shadow.dispatched", extra={"kind": kind.value, "batch": key, "shadows": len(recorded)})
        return len(recorded)


def _pending(record: ConversionRecord, kind: ShadowKind) -> ShadowRecord:
    return ShadowRecord(
        shadow_id=shadow_id(kind, record.conversion_id),
        conversion_id=record.conversion_id,
        tenant_id=record.tenant_id,
        params=dict(record.params),
        kind=kind,
        state=ShadowState.PENDING,
        flag_version=record.flag_version,
    )


# -- off the cycle: compare and clean up -------------------------------------------------------------


class ShadowChecks:
    """Compares finished shadows with their conversions' outputs and removes quarantined outputs
    after the retention; one replica at a time (a lease), on the housekeeping thread."""

    def __init__(
        self,
        store: ShadowStore,
        conversions: OwnershipStore,
        judge: Judge,
        outputs: Outputs,
        *,
        quarantine: str,
        retention_seconds: float,
        leases: LeaseStore | None = None,
        holder: str = "controller",
        batch: int = 50,
        lease_seconds: float = 120.0,
        plan: Callable[[], RolloutPlan | None] = lambda: None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.conversions = conversions
        self.judge = judge
        self.outputs = outputs
        self.quarantine = quarantine
        self.retention_seconds = retention_seconds
        self.leases = leases
        self.holder = holder
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.compared = 0
        self.cleaned = 0

    def tick(self, now: float) -> None:
        if self.leases is not None and not self.leases.try_lease(
            CHECKS_LEASE, self.holder, now, self.lease_seconds
        ):
            return
        self.compare(now)
        self.clean(now)

    def compare(self, now: float) -> int:
        """Judge shadows that ran and whose conversion has ended; returns how many were judged."""
        judged = 0
        plan = self.plan()
        if plan is not None:
            self.judge.options = replace(
                self.judge.options, ignore=plan.shadow.ignore, compare_styles=plan.shadow.compare_styles
            )
        for shadow in self.store.shadows([ShadowState.SUCCEEDED, ShadowState.FAILED], limit=self.batch):
            real = self.conversions.get(shadow.conversion_id)
            if real is not None and not real.state.terminal:
                continue  # its conversion is still at work: nothing to compare with yet
            baseline = real.reason if real is not None and real.state is ConversionState.SUCCEEDED else None
            finding = self.judge.judge(shadow, baseline or None)
            if self.store.record_comparison(
                shadow.shadow_id, finding.verdict, finding.comparison.to_json(), finding.note, now
            ):
                judged += 1
                log.info(
                    "shadow.compared",
                    extra={"shadow_id": shadow.shadow_id, "verdict": finding.verdict.value},
                )
        self.compared += judged
        return judged

    def clean(self, now: float) -> int:
        """Remove the quarantined outputs of shadows compared longer ago than the retention."""
        done = 0
        for shadow in self.store.shadows(
            [ShadowState.COMPARED], compared_before=now - self.retention_seconds, limit=self.batch
        ):
            try:
                if shadow.output:
                    self.outputs.remove(shadow.output, self.quarantine)
            except OutputError as exc:
                log.warning("shadow.clean_failed", extra={"shadow_id": shadow.shadow_id, "error": str(exc)})
                continue
            done += self.store.mark_cleaned(shadow.shadow_id, now)
        self.cleaned += done
        return done


@dataclass
class Shadows:
    """Shadow runs as one process runs them: the cycle's steps, the checks, the plan they follow."""

    runner: ShadowRunner
    checks: ShadowChecks
    plan: PlanWatch
    backends: Mapping[Path, Backend]

    _cached: tuple[float, dict[str, Any]] | None = None

    def report(
        self,
        *,
        group: str | None = None,
        tenant: int | None = None,
        now: float | None = None,
        fresh_for: float = 0.0,
    ) -> dict[str, Any]:
        """The parity report; ``NotFoundError`` for a group the plan does not have. The whole
        report may be served from the last one while younger than ``fresh_for`` seconds (pages)."""
        plan = self.plan()
        if (
            group is not None
            and group != UNGROUPED
            and (plan is None or group not in [g.name for g in plan.groups])
        ):
            raise NotFoundError(f"no rollout group {group!r} in the plan")
        whole = group is None and tenant is None
        if whole and now is not None and self._cached is not None and now - self._cached[0] < fresh_for:
            return self._cached[1]
        report = parity_report(self.runner.store, plan, group=group, tenant=tenant)
        if whole and now is not None:
            self._cached = (now, report)
        return report

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()


# -- the report -------------------------------------------------------------------------------------


def parity_report(
    store: ShadowStore,
    plan: RolloutPlan | None,
    *,
    group: str | None = None,
    tenant: int | None = None,
    limit: int = 200_000,
) -> dict[str, Any]:
    """The parity report of every shadow the ledger holds (``cutover shadow``, ``GET /shadow``)."""
    shadows = store.shadows(list(ShadowState), limit=limit)

    def group_of(tenant_id: int) -> str | None:
        found = plan.group_of(tenant_id) if plan is not None else None
        return found.name if found is not None else None

    return build_report(
        shadows,
        group_of,
        plan.shadow if plan is not None else ShadowPlan(),
        group=group,
        tenant=tenant,
        include=[g.name for g in plan.groups] if plan is not None and tenant is None else (),
    )


def parity_verdicts(store: ShadowStore, plan: RolloutPlan) -> dict[str, tuple[Parity, str]]:
    """Each rollout group's parity verdict, as a gate reads it: a group whose shadows differ
    beyond noise fails; one without enough samples for its threshold is inconclusive."""
    return group_verdicts(parity_report(store, plan))


def gate_parity(store: ShadowStore, plan: RolloutPlan) -> dict[str, tuple[GateVerdict, str]]:
    """The parity the gate judges: for each group that had shadow runs (or is named for them),
    its verdict and why; groups without any are left out, so a plan without shadows gates as before."""
    report = parity_report(store, plan)
    out: dict[str, tuple[GateVerdict, str]] = {}
    for g in report["groups"]:
        if g["samples"] or g["pending"] or g["unreadable"] or g["name"] in plan.shadow.groups:
            out[g["name"]] = (GateVerdict(g["parity"]), str(g["parity_reason"]))
    return out
