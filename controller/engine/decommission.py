"""May the old path be switched off? Evidence, check by check, from the flag's history, the ledger,
reconciliation's record and (on AWS) the build service itself.

Reads only: the version store (which flag versions were in force since when), the ledger (claims
per minute and path, conversions in flight, each tenant's conversions, reconciliation's record)
and, when given, a ``BuildHistory`` (CodeBuild's own list of the project's builds). Decides
nothing about routing and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.errors import CutoverError
from controller.core.ports import BuildHistory, LedgerQueries, PathHistory, ValueStore, VersionStore
from controller.engine.reconcile import FIRST_RUN, LAST_FINDING, LAST_RUN
from flags.rollout import Group, RolloutPlan
from flags.versions import Deployment

DAY = 86400.0
OWNED = (ConversionState.CLAIMED, ConversionState.DISPATCHING, ConversionState.DISPATCHED)
TENANT_RECORDS = 100_000  # a tenant's records read, newest first, for a group's evidence


@dataclass(frozen=True, slots=True)
class Check:
    """One condition, whether it holds, and the evidence in words."""

    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


class LedgerEvidence(LedgerQueries, ValueStore, Protocol):
    """What decommission reads from the ledger: its queries and reconciliation's record."""


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str | None) -> float | None:
    """A deployment's ISO-8601 time (``…Z`` as the stores write it) in epoch seconds."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _few(ids: Iterable[int], n: int = 8) -> str:
    ordered = sorted(ids)
    shown = ", ".join(map(str, ordered[:n]))
    return shown + (f" and {len(ordered) - n} more" if len(ordered) > n else "")


# -- the flag ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """One flag version in force from ``since`` (None: now, though no deployment records it)."""

    version: int | None
    since: float | None
    migrated: frozenset[int]
    rollback: bool


def flag_history(store: VersionStore, since: float) -> tuple[list[Period], str | None]:
    """The versions in force from ``since`` until now, oldest first, and why the history cannot
    tell (None when it can): the version in force at ``since`` and every completed deployment
    after it, ending with what is in force now."""
    completed = [d for d in store.deployments(10_000) if d.state == "COMPLETE" and not d.foreign]
    timed = sorted(((_epoch(d.completed_at or d.started_at), d) for d in completed), key=_order)
    known = [(at, d) for at, d in timed if at is not None]
    before = [(at, d) for at, d in known if at <= since]
    after = [(at, d) for at, d in known if at > since]
    problem = None
    if not before:
        first = iso(known[0][0]) if known else None
        problem = (
            f"the flag's history starts at {first}, after {iso(since)}"
            if first
            else "the flag has no recorded deployment"
        )
    spans: list[Period] = []
    for at, d in before[-1:] + after:
        spans.append(Period(d.version, at, _migrated(store, d.version), d.rollback))
    current = store.in_force()
    if current is not None and (not spans or spans[-1].version != current.version):
        spans.append(Period(current.version, None, current.content.migrated, False))
    return spans, problem


def _order(item: tuple[float | None, Deployment]) -> tuple[float, int]:
    return (item[0] or 0.0, item[1].number)


def _migrated(store: VersionStore, version: int) -> frozenset[int]:
    try:
        return store.content(version).migrated
    except CutoverError:
        return frozenset()


# -- the ledger ----------------------------------------------------------------------------------


def latest_legacy(ledger: LedgerQueries, tenants: Iterable[int] | None = None) -> ConversionRecord | None:
    """The old path's last conversion, overall or among ``tenants``."""
    if tenants is not None:
        found = [_latest_of_tenant(ledger, t) for t in tenants]
        present = [r for r in found if r is not None]
        return max(present, key=lambda r: r.claimed_at or r.received_at or 0.0, default=None)
    if isinstance(ledger, PathHistory):
        return ledger.latest_on_path(Path.LEGACY)
    last: ConversionRecord | None = None
    cursor: str | None = None
    while True:
        page, cursor = ledger.query(path=Path.LEGACY, after=cursor, limit=1000)
        if page:
            last = page[-1]
        if cursor is None:
            return last


def _latest_of_tenant(ledger: LedgerQueries, tenant: int) -> ConversionRecord | None:
    for r in ledger.by_tenant(tenant, TENANT_RECORDS):
        if r.path is Path.LEGACY:
            return r
    return None


def _legacy_claims(ledger: LedgerQueries, since: float, tenants: Iterable[int] | None) -> list[str]:
    """Old-path claims since ``since``: per minute overall, per record for ``tenants``."""
    if tenants is None:
        n = sum(count for _, path, _, count in ledger.decisions_since(since) if path is Path.LEGACY)
        return [f"{n} conversions"] if n else []
    out = []
    for t in tenants:
        for r in ledger.by_tenant(t, TENANT_RECORDS):
            if r.path is Path.LEGACY and (r.claimed_at or 0.0) >= since:
                out.append(r.conversion_id)
    return out


def _legacy_in_flight(ledger: LedgerQueries, tenants: Iterable[int] | None) -> int:
    if tenants is None:
        counts = ledger.counts()
        return sum(counts.path_state(Path.LEGACY, s) for s in OWNED)
    n = 0
    for t in tenants:
        for state in OWNED:
            page, _ = ledger.query(state=state, path=Path.LEGACY, tenant_id=t, limit=1)
            n += len(page)
    return n


# -- the checks ----------------------------------------------------------------------------------


def _tenants_check(required: frozenset[int], spans: Sequence[Period], version: int | None) -> Check:
    now = spans[-1].migrated if spans else frozenset()
    missing = required - now
    if not required:
        return Check(
            "tenants_in_flag", True, "no tenant to move: no rollout plan and no conversion in the period"
        )
    if missing:
        return Check("tenants_in_flag", False, f"{len(missing)} tenants are not in the flag: {_few(missing)}")
    return Check("tenants_in_flag", True, f"all {len(required)} tenants are in flag version {version}")


def _days_check(required: frozenset[int], spans: Sequence[Period], problem: str | None, days: float) -> Check:
    if problem is not None:
        return Check("in_flag_for_days", False, problem)
    out = set().union(*(required - s.migrated for s in spans)) if spans else set(required)
    if out:
        return Check(
            "in_flag_for_days",
            False,
            f"{len(out)} tenants were not in every flag version in force over the last {days:g} days: "
            f"{_few(out)}",
        )
    versions = ", ".join(str(s.version) for s in spans)
    return Check("in_flag_for_days", True, f"listed in every version in force for {days:g} days ({versions})")


def _rollback_check(
    required: frozenset[int], spans: Sequence[Period], since: float, any_counts: bool
) -> Check:
    """No rollback deployed since ``since`` (for a group: none that took any of its tenants out)."""
    previous: frozenset[int] = frozenset()
    hits = []
    for s in spans:
        if s.rollback and s.since is not None and s.since > since:
            took_out = required & (previous - s.migrated)
            if any_counts or took_out:
                hits.append(f"version {s.version} at {iso(s.since)}")
        previous = s.migrated
    if hits:
        return Check("no_rollback_since", False, "rolled back since " + f"{iso(since)}: " + "; ".join(hits))
    return Check("no_rollback_since", True, f"no rollback since {iso(since)}")


def _reconcile_check(values: ValueStore, since: float, can_list: bool) -> Check:
    first, last, finding = (_value(values, k) for k in (FIRST_RUN, LAST_RUN, LAST_FINDING))
    if finding is not None and finding.get("at", 0.0) >= since:
        return Check(
            "reconciliation_clean",
            False,
            f"reconciliation at {iso(finding['at'])} found {finding.get('duplicates', 0)} duplicates "
            f"and {finding.get('orphans', 0)} orphans",
        )
    if first is None or last is None:
        if not can_list:
            return Check(
                "reconciliation_clean",
                True,
                "not applicable: the local runners keep no listing of what they ran to reconcile against",
            )
        return Check(
            "reconciliation_clean", False, "no reconciliation has run: nothing shows the period clean"
        )
    if first["at"] > since:
        return Check(
            "reconciliation_clean",
            False,
            f"reconciliation has run only since {iso(first['at'])}, after {iso(since)}",
        )
    return Check(
        "reconciliation_clean",
        True,
        f"every reconciliation since {iso(since)} was clean (the last at {iso(last['at'])})",
    )


def _value(values: ValueStore, key: str) -> dict[str, Any] | None:
    raw = values.get_value(key)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _builds_check(builds: BuildHistory, since: float) -> Check:
    listed = builds.builds_since(since)
    if listed:
        newest = listed[0]
        return Check(
            "no_legacy_builds_since",
            False,
            f"CodeBuild lists {len(listed)} builds of the legacy project since {iso(since)}; the last "
            f"{newest.build_id} at {iso(newest.started_at)} ({newest.status})",
        )
    return Check(
        "no_legacy_builds_since", True, f"CodeBuild lists no build of the legacy project since {iso(since)}"
    )


def evidence(
    ledger: LedgerEvidence,
    store: VersionStore,
    *,
    now: float,
    days: float,
    plan: RolloutPlan | None = None,
    group: Group | None = None,
    builds: BuildHistory | None = None,
    can_list: bool = False,
) -> dict[str, Any]:
    """The decommission document: ``{"ready", "since", "checks": [{"name", "ok", "detail"}], ...}``.

    Without ``group``: every tenant of the rollout plan and every tenant with conversions in the
    period must be in the flag. With it: that group's tenants only, and the ledger's evidence is
    read per tenant (CodeBuild's builds and reconciliation are not per group and are left out).
    """
    since = now - days * DAY
    tenants: frozenset[int] | None = group.tenant_ids if group is not None else None
    if tenants is None:
        required = (plan.tenant_ids if plan is not None else frozenset()) | frozenset(
            ledger.tenant_activity(since)
        )
    else:
        required = tenants
    spans, problem = flag_history(store, since)
    checks = [
        _tenants_check(required, spans, spans[-1].version if spans else None),
        _days_check(required, spans, problem, days),
        _rollback_check(required, spans, since, any_counts=group is None),
    ]
    claims = _legacy_claims(ledger, since, tenants)
    checks.append(
        Check(
            "no_legacy_claims_since",
            not claims,
            f"the old path claimed {len(claims) if tenants is not None else claims[0]} since {iso(since)}"
            if claims
            else f"no conversion claimed by the old path since {iso(since)}",
        )
    )
    flying = _legacy_in_flight(ledger, tenants)
    checks.append(
        Check(
            "no_legacy_in_flight",
            flying == 0,
            f"{flying} conversions owned by the old path are not finished" if flying else "none in flight",
        )
    )
    if group is None:
        checks.append(_reconcile_check(ledger, since, can_list))
        if builds is not None:
            checks.append(_builds_check(builds, since))
    last = latest_legacy(ledger, tenants)
    return {
        "ready": all(c.ok for c in checks),
        "since": iso(since),
        "days": days,
        "group": group.name if group is not None else None,
        "checks": [c.as_json() for c in checks],
        "last_legacy_conversion": None
        if last is None
        else {
            "conversion_id": last.conversion_id,
            "tenant_id": last.tenant_id,
            "claimed_at": iso(last.claimed_at),
            "state": last.state.value,
        },
    }


def groups_drained(
    ledger: LedgerEvidence, store: VersionStore, plan: RolloutPlan, *, now: float, days: float
) -> list[dict[str, Any]]:
    """For each rollout group, whether its own evidence says it has fully drained."""
    out = []
    for g in plan.groups:
        doc = evidence(ledger, store, now=now, days=days, group=g)
        failed = [c["name"] for c in doc["checks"] if not c["ok"]]
        out.append({"name": g.name, "drained": not failed, "failed": failed})
    return out
