"""Per-tenant cutover state and the rollout-group view: where each tenant stands in its move.

A tenant is ``legacy`` or ``new`` once the losing path has nothing left of it; while the flag
already says one thing and the other path still owns unfinished conversions of the tenant, it is
``draining-to-new`` or ``draining-to-legacy``. The shaping here is pure; the two ledger readers
take aggregates or one tenant's rows, never a row per tenant of the whole ledger, and the read
model (``controller.api.readmodel``) decides when to call them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path as FsPath
from typing import Any

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.errors import CutoverError
from controller.core.ports import Ledger, LedgerInsights
from controller.core.routing import Decision, RoutingPolicy, basis, decide
from flags.rollout import Group, load_plan
from flags.snapshot import FlagSnapshot, FlagStatus

UNFINISHED = (ConversionState.CLAIMED, ConversionState.DISPATCHING, ConversionState.DISPATCHED)
UNPLANNED = "not in a rollout group"


class TenantState(StrEnum):
    """Where a tenant is in its move between the paths."""

    LEGACY = "legacy"
    DRAINING_TO_NEW = "draining-to-new"
    NEW = "new"
    DRAINING_TO_LEGACY = "draining-to-legacy"


@dataclass(frozen=True, slots=True)
class InFlight:
    """A tenant's owned, unfinished conversions per path."""

    legacy: int = 0
    new: int = 0

    @classmethod
    def of(cls, per_path: Mapping[Path, int]) -> InFlight:
        return cls(per_path.get(Path.LEGACY, 0), per_path.get(Path.NEW, 0))


def cutover_state(flagged: bool, in_flight: InFlight) -> TenantState:
    """A move is complete when the losing path has nothing left for the tenant."""
    if flagged:
        return TenantState.DRAINING_TO_NEW if in_flight.legacy else TenantState.NEW
    return TenantState.DRAINING_TO_LEGACY if in_flight.new else TenantState.LEGACY


def explain_route(tenant_id: int, status: FlagStatus, policy: RoutingPolicy) -> Decision:
    """Where the cycle would send this tenant's next conversion now, as the cycle decides it."""
    routing = basis(status, policy)
    if routing.hold:
        return Decision(None, routing.snapshot.version if routing.snapshot else None, routing.reason)
    decision = decide(tenant_id, routing.snapshot, policy)
    if routing.reason and decision.path is not None:
        return Decision(decision.path, decision.flag_version, f"{decision.reason}; {routing.reason}")
    return decision


# -- the rollout plan -----------------------------------------------------------------------


class PlanFile:
    """The rollout plan file (``CUTOVER_ROLLOUT_FILE``, read by ``flags.rollout``), re-read when it
    changes on disk; the last good plan stays in use while the file is missing or malformed."""

    def __init__(self, path: FsPath | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._groups: list[Group] = []
        self.problem = "" if path else "no rollout plan configured (CUTOVER_ROLLOUT_FILE)"
        self._lock = threading.Lock()

    @property
    def stamp(self) -> tuple[int, int] | None:
        """Identifies the plan file's content last read (modification time and size)."""
        return self._stamp

    def groups(self) -> list[Group]:
        """The groups in plan order."""
        if self.path is None:
            return []
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._stamp:
                    self._groups = list(load_plan(self.path).groups)
                    self._stamp = stamp
                self.problem = ""
            except OSError as exc:
                self.problem = f"rollout plan {self.path}: {exc.strerror or exc}"
            except CutoverError as exc:
                self.problem = str(exc)
            return list(self._groups)

    def group_of(self, tenant_id: int) -> str | None:
        """The first rollout group that lists the tenant, if any."""
        for group in self.groups():
            if tenant_id in group.tenant_ids:
                return group.name
        return None


# -- the group view -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupView:
    """One rollout group: its size, how many of its tenants the flag lists, and their states."""

    name: str
    tenants: int
    migrated: int
    states: Mapping[TenantState, int]


@dataclass(frozen=True, slots=True)
class TenantNote:
    """A tenant worth naming on the board: one still draining."""

    tenant_id: int
    group: str
    state: TenantState
    in_flight: InFlight


@dataclass(frozen=True, slots=True)
class TenantsOverview:
    """Every group's view, plus the tenants currently draining (a bounded list)."""

    flag_version: str | None
    flag_tenants: int
    groups: tuple[GroupView, ...]
    draining: tuple[TenantNote, ...]
    draining_total: int
    plan_problem: str = ""
    load_complete: bool = True
    computed_at: float = 0.0
    states: Mapping[TenantState, int] = field(default_factory=dict)


def overview(
    groups: Iterable[Group],
    snapshot: FlagSnapshot | None,
    load: Mapping[int, InFlight],
    *,
    max_listed: int = 50,
) -> TenantsOverview:
    """Aggregate per group; tenants outside the plan that the flag lists or that have work in flight
    form one extra group. Cost is linear in the plan's size, output bounded."""
    flagged: frozenset[int] = snapshot.tenant_ids if snapshot and snapshot.enabled else frozenset()
    views: list[GroupView] = []
    draining: list[TenantNote] = []
    draining_total = 0
    totals = dict.fromkeys(TenantState, 0)
    planned: set[int] = set()
    idle = InFlight()

    def add(name: str, tenants: Iterable[int]) -> None:
        nonlocal draining_total
        states = dict.fromkeys(TenantState, 0)
        size = migrated = 0
        for t in tenants:
            size += 1
            on = t in flagged
            migrated += on
            busy = load.get(t, idle)
            state = cutover_state(on, busy)
            states[state] += 1
            totals[state] += 1
            if state in (TenantState.DRAINING_TO_NEW, TenantState.DRAINING_TO_LEGACY):
                draining_total += 1
                if len(draining) < max_listed:
                    draining.append(TenantNote(t, name, state, busy))
        views.append(GroupView(name, size, migrated, states))

    for group in groups:
        members = [t for t in sorted(group.tenant_ids) if t not in planned]
        planned.update(members)
        add(group.name, members)
    outside = sorted((set(flagged) | set(load)) - planned)
    if outside:
        add(UNPLANNED, outside)
    return TenantsOverview(
        flag_version=snapshot.version if snapshot else None,
        flag_tenants=len(flagged),
        groups=tuple(views),
        draining=tuple(draining),
        draining_total=draining_total,
        states=totals,
    )


# -- reading the ledger -----------------------------------------------------------------------


def in_flight_by_tenant(ledger: Ledger, *, max_records: int = 200_000) -> tuple[dict[int, InFlight], bool]:
    """Unfinished conversions per tenant; the flag says whether every one was counted."""
    if isinstance(ledger, LedgerInsights):
        return {t: InFlight.of(p) for t, p in ledger.in_flight_by_tenant().items()}, True
    counts: dict[int, dict[Path, int]] = {}
    seen = 0
    for state in UNFINISHED:
        for path in Path:
            cursor: str | None = None
            while True:
                page, cursor = ledger.query(state=state, path=path, after=cursor, limit=1000)
                for record in page:
                    per = counts.setdefault(record.tenant_id, {})
                    per[path] = per.get(path, 0) + 1
                seen += len(page)
                if cursor is None:
                    break
                if seen >= max_records:
                    return {t: InFlight.of(p) for t, p in counts.items()}, False
    return {t: InFlight.of(p) for t, p in counts.items()}, True


def tenant_in_flight(ledger: Ledger, tenant_id: int, limit: int = 1000) -> list[ConversionRecord]:
    """One tenant's owned, unfinished conversions (at most ``limit`` per state)."""
    out: list[ConversionRecord] = []
    for state in UNFINISHED:
        page, _ = ledger.query(state=state, tenant_id=tenant_id, limit=limit)
        out.extend(page)
    return out


# -- the JSON documents ---------------------------------------------------------------------


def route_document(
    tenant_id: int,
    status: FlagStatus,
    policy: RoutingPolicy,
    unfinished: Iterable[ConversionRecord],
    group: str | None,
    *,
    max_listed: int = 50,
) -> dict[str, Any]:
    """``GET /tenants/{id}/route``: the decision the cycle would make now, and the tenant's move."""
    decision = explain_route(tenant_id, status, policy)
    per_path = {Path.LEGACY: 0, Path.NEW: 0}
    listed: list[dict[str, str]] = []
    for r in unfinished:
        if r.path is None:
            continue
        per_path[r.path] += 1
        if len(listed) < max_listed:
            listed.append({"conversion_id": r.conversion_id, "path": r.path.value, "state": r.state.value})
    busy = InFlight.of(per_path)
    flagged = status.snapshot.migrated(tenant_id) if status.snapshot else False
    return {
        "tenant_id": tenant_id,
        "path": decision.path.value if decision.path else None,
        "flag_version": decision.flag_version,
        "reason": decision.reason,
        "flag_state": status.state.value,
        "cutover_state": cutover_state(flagged, busy).value,
        "group": group,
        "in_flight": {"legacy": busy.legacy, "new": busy.new},
        "in_flight_conversions": listed,
    }


def overview_document(view: TenantsOverview) -> dict[str, Any]:
    """``GET /tenants``: per group, tenants, migrated, and the count in each cutover state."""
    return {
        "flag_version": view.flag_version,
        "flag_tenants": view.flag_tenants,
        "groups": [
            {
                "name": g.name,
                "tenants": g.tenants,
                "migrated": g.migrated,
                "states": {s.value: g.states.get(s, 0) for s in TenantState},
            }
            for g in view.groups
        ],
        "states": {s.value: view.states.get(s, 0) for s in TenantState},
        "draining": [
            {
                "tenant_id": n.tenant_id,
                "group": n.group,
                "state": n.state.value,
                "in_flight": {"legacy": n.in_flight.legacy, "new": n.in_flight.new},
            }
            for n in view.draining
        ],
        "draining_total": view.draining_total,
        "plan_problem": view.plan_problem,
        "complete": view.load_complete,
    }
