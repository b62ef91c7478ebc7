"""The operations behind ``cutover flag``: show, plan, advance, rollback and history.

Each reads the store, works out the change, checks the guard rails (``flags.guards``) and only
then writes. Results are JSON-ready dicts: ``--json`` prints them as they are, the tables are
drawn from them. No routing here, and no knowledge of which store is behind the port.
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.core.errors import (
    ConflictError,
    FlagDeploymentError,
    FlagInvalidError,
    GateRefusedError,
    InputError,
    NotFoundError,
)
from controller.core.gates import GateReport, GateVerdict, refusal
from controller.core.ports import VersionStore
from flags.guards import ChangeKind, check, diff
from flags.holds import RELEASE_MARK, Hold, holds
from flags.rollout import RolloutPlan
from flags.versions import Deployment, FlagContent, InForce, Note, Version

Progress = Callable[[Deployment], None]
audit = logging.getLogger("cutover.audit")


def who() -> str:
    """The operator as ``user@host``: recorded with every version and deployment."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def iso(ts: float) -> str:
    """Epoch seconds as ISO-8601 UTC, to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Operator:
    """Who acts, with which clock, and how a deployment is followed."""

    by: str = field(default_factory=who)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    poll_seconds: float = 5.0


def deployment_json(d: Deployment | None) -> dict[str, Any] | None:
    """A deployment as the commands print it."""
    if d is None:
        return None
    return {
        "number": d.number,
        "version": d.version,
        "state": d.state,
        "percentage": d.percentage,
        "started_at": d.started_at,
        "completed_at": d.completed_at,
        "rollback": d.rollback,
        "other_configuration": d.foreign,
        "description": d.description,
    }


def coverage(plan: RolloutPlan | None, migrated: frozenset[int]) -> list[dict[str, Any]]:
    """For each rollout group, how many of its tenants the flag routes to the new path."""
    if plan is None:
        return []
    out = []
    for g in plan.groups:
        n = len(g.tenant_ids & migrated)
        state = "in" if n == len(g.tenant_ids) else ("partly" if n else "out")
        out.append({"name": g.name, "tenants": len(g.tenant_ids), "migrated": n, "state": state})
    return out


def show(store: VersionStore, plan: RolloutPlan | None) -> dict[str, Any]:
    """The version in force, its switch and tenant count, the groups in, and any deployment running."""
    current = store.in_force()
    versions = store.versions()
    migrated = current.content.migrated if current else frozenset()
    return {
        "store": store.name,
        "version": current.version if current else None,
        "recorded": current is None or current.version is not None,
        "enabled": current.content.enabled if current else None,
        "tenant_count": len(migrated),
        "listed_tenants": len(current.content.tenant_ids) if current else 0,
        "latest_version": versions[-1].number if versions else None,
        "in_progress": deployment_json(store.in_progress()),
        "groups": coverage(plan, migrated),
        "outside_plan": len(migrated - plan.tenant_ids) if plan else None,
        "held": [h.as_json() for h in holds(store).values()],
    }


def target(
    current: FlagContent | None,
    plan: RolloutPlan | None,
    *,
    to_group: str | None,
    add: Iterable[int] = (),
    remove: Iterable[int] = (),
) -> FlagContent:
    """The flag content asked for: the plan's groups through ``to_group`` (tenants the plan does
    not name stay as they are), plus ``add``, minus ``remove``."""
    listed = set(current.tenant_ids) if current else set()
    if to_group is not None:
        if plan is None:
            raise InputError("--to-group needs a rollout plan (CUTOVER_ROLLOUT_FILE)")
        listed = set(plan.through(to_group)) | (listed - plan.tenant_ids)
    listed |= set(add)
    listed -= set(remove)
    return FlagContent(current.enabled if current else True, frozenset(listed))


def _group_diff(
    plan: RolloutPlan | None, added: frozenset[int], removed: frozenset[int]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    named: frozenset[int] = frozenset()
    if plan is not None:
        named = plan.tenant_ids
        for g in plan.groups:
            a, r = added & g.tenant_ids, removed & g.tenant_ids
            if a or r:
                rows.append({"group": g.name, "added": sorted(a), "removed": sorted(r)})
    a, r = added - named, removed - named
    if a or r:
        rows.append({"group": None, "added": sorted(a), "removed": sorted(r)})
    return rows


def load_shift(
    activity: Mapping[int, int] | None,
    before: frozenset[int],
    after: frozenset[int],
    window_days: float,
) -> dict[str, Any] | None:
    """What the change moves between paths, from each tenant's conversions in the recent window."""
    if activity is None:
        return None
    total = sum(activity.values())

    def per_day(ids: Iterable[int]) -> float:
        return round(sum(activity.get(t, 0) for t in ids) / window_days, 2)

    def share(ids: frozenset[int]) -> float | None:
        return round(sum(activity.get(t, 0) for t in ids) / total, 4) if total else None

    moving_in = after - before
    busiest = sorted(moving_in | (before - after), key=lambda t: -activity.get(t, 0))[:5]
    return {
        "window_days": window_days,
        "conversions_in_window": total,
        "to_new_per_day": per_day(moving_in),
        "to_legacy_per_day": per_day(before - after),
        "new_share_before": share(before),
        "new_share_after": share(after),
        "busiest_moving": [{"tenant_id": t, "conversions": activity.get(t, 0)} for t in busiest],
    }


def plan_change(
    store: VersionStore,
    plan: RolloutPlan | None,
    *,
    to_group: str | None,
    add: Iterable[int] = (),
    remove: Iterable[int] = (),
    activity: Mapping[int, int] | None = None,
    window_days: float = 7.0,
    max_add: int,
    include_held: bool = False,
    gate: GateReport | None = None,
) -> dict[str, Any]:
    """The diff a change would make, per group, the load it would shift and, given the gate, the
    verdicts of the groups already moved and whether they hold the change back. Writes nothing."""
    current = store.in_force()
    before = current.content if current else None
    after, kept_out, _ = _without_held(
        store, before, target(before, plan, to_group=to_group, add=add, remove=remove), include_held
    )
    d = diff(before, after)
    problems = check(before, after, kind=ChangeKind.ADVANCE, max_add=max_add)
    return {
        "store": store.name,
        "from_version": current.version if current else None,
        "added": len(d.added),
        "removed": len(d.removed),
        "tenant_count_before": len(before.migrated) if before else 0,
        "tenant_count_after": len(after.migrated),
        "groups": _group_diff(plan, d.added, d.removed),
        "coverage_after": coverage(plan, after.migrated),
        "load": load_shift(activity, before.migrated if before else frozenset(), after.migrated, window_days),
        "advance_would_refuse": problems,
        "held": [h.as_json() for h in kept_out],
        "gate": gate_summary(gate),
    }


def _without_held(
    store: VersionStore,
    before: FlagContent | None,
    after: FlagContent,
    include_held: bool,
    versions: list[Version] | None = None,
) -> tuple[FlagContent, list[Hold], list[Hold]]:
    """``after`` less the held tenants it would bring back (unless ``include_held``); the holds kept
    out, and those released. A held tenant listed already (a revert brought it back) stays."""
    listed = before.tenant_ids if before else frozenset()
    back = [h for t, h in sorted(holds(store, versions).items()) if t in after.tenant_ids - listed]
    if include_held:
        return after, [], back
    return FlagContent(after.enabled, after.tenant_ids - {h.tenant_id for h in back}), back, []


def gate_summary(gate: GateReport | None) -> dict[str, Any] | None:
    """The gate as ``plan`` and ``advance`` print it: verdict per group and what holds an advance back."""
    if gate is None:
        return None
    return {
        "verdict": gate.verdict.value,
        "groups": [
            {"name": g.name, "verdict": g.verdict.value, "reasons": list(g.reasons)} for g in gate.groups
        ],
        "would_refuse": refusal(gate),
    }


def _consult(gate: GateReport | None, force: str) -> str:
    """Refuse unless every group already moved passes; ``force`` (the reason) moves anyway and
    returns what was overridden, for the history and the audit log."""
    if gate is None or gate.verdict is GateVerdict.PASS:
        return ""
    why = refusal(gate)
    if not force.strip():
        raise GateRefusedError(
            f"refused: {why}; see `cutover gate`, or move anyway with --force --reason TEXT"
        )
    return ", ".join(f"{g.name} {g.verdict.value}" for g in gate.blocking()) or gate.verdict.value


def follow(
    store: VersionStore, deployment: Deployment, op: Operator, on_progress: Progress | None
) -> Deployment:
    """Poll a deployment until it ends, reporting each state; returns the final one."""
    d = deployment
    if on_progress is not None:
        on_progress(d)
    while not d.final:
        op.sleep(op.poll_seconds)
        d = store.refresh(d)
        if on_progress is not None:
            on_progress(d)
    return d


def _refuse_while_running(store: VersionStore, what: str) -> None:
    running = store.in_progress()
    if running is None:
        return
    whose = "another configuration's deployment" if running.foreign else f"deployment {running.number}"
    hint = (
        "wait for it to finish"
        if running.foreign
        else "wait for it to finish, or stop it with `cutover flag rollback`"
    )
    raise ConflictError(
        f"cannot {what}: {whose} (version {running.version}) is {running.state} at "
        f"{running.percentage:g}% in this environment, and AppConfig runs one deployment at a time; {hint}"
    )


def _deploy(
    store: VersionStore, number: int, note: Note, op: Operator, wait: bool, on_progress: Progress | None
) -> Deployment:
    d = store.deploy(number, note)
    if wait:
        d = follow(store, d, op, on_progress)
        if d.state != "COMPLETE":
            raise FlagDeploymentError(
                f"deployment {d.number} of flag version {number} ended {d.state}: "
                "the version before it is still in force"
            )
    return d


def _warnings(store: VersionStore, content: FlagContent) -> list[str]:
    out = []
    strategy = store.strategy_warning()
    if strategy:
        out.append(strategy)
    if not content.enabled:
        out.append("the flag is switched off (enabled: false): no tenant is routed to the new path")
    return out


def advance(
    store: VersionStore,
    plan: RolloutPlan | None,
    *,
    to_group: str | None,
    add: Iterable[int] = (),
    max_add: int,
    op: Operator,
    text: str = "",
    wait: bool = True,
    on_progress: Progress | None = None,
    include_held: bool = False,
    gate: GateReport | None = None,
    force: str = "",
) -> dict[str, Any]:
    """Write the next flag version (the plan through ``to_group``, plus ``add``) and deploy it.

    Refuses, before writing anything, while a deployment runs, when tenants would leave the new
    path, when more than ``max_add`` tenants would join it, and, given the ``gate``, while a group
    already moved is failing or inconclusive, unless ``force`` gives the reason to move anyway (kept
    in the version's and the deployment's note and logged as ``flag.advance_forced``). Nothing to
    change writes nothing. Held tenants stay out unless ``include_held`` (which releases them).
    """
    _refuse_while_running(store, "advance")
    current = store.in_force()
    before = current.content if current else None
    versions = store.versions()
    wanted = target(before, plan, to_group=to_group, add=add)
    after, kept_out, released = _without_held(store, before, wanted, include_held, versions)
    problems = check(before, after, kind=ChangeKind.ADVANCE, max_add=max_add)
    if problems:
        raise InputError("refused: " + "; ".join(problems))
    d = diff(before, after)
    result: dict[str, Any] = {
        "store": store.name,
        "from_version": current.version if current else None,
        "added": len(d.added),
        "removed": 0,
        "tenant_count": len(after.migrated),
        "groups": coverage(plan, after.migrated),
        "held": [h.as_json() for h in kept_out],
        "released": [h.tenant_id for h in released],
        "gate": gate_summary(gate),
        "forced": None,
    }
    if before is not None and after == before:
        return result | {
            "changed": False,
            "version": current.version if current else None,
            "deployment": None,
            "warnings": [],
        }
    overridden = _consult(gate, force)
    warnings = _warnings(store, after)
    label = f"to {to_group}" if to_group else "tenants added"
    if released:
        label += f" {RELEASE_MARK} " + ", ".join(str(h.tenant_id) for h in released[:10])
    forced = f"[forced past the gate ({overridden}): {' '.join(force.split())}]" if overridden else ""
    note = Note(
        action="advance",
        by=op.by,
        at=iso(op.clock()),
        base=current.version if current else None,
        added=len(d.added),
        removed=0,
        text=" ".join(x for x in (label, text, forced) if x),
    )
    number = store.create_version(after, note, versions[-1].number if versions else None)
    if overridden and gate is not None:
        audit.warning(
            "flag.advance_forced",
            extra={"by": op.by, "version": number, "reason": force, "gate": refusal(gate)},
        )
        result["forced"] = {"reason": force, "overridden": refusal(gate)}
    deployment = _deploy(store, number, note, op, wait, on_progress)
    return result | {
        "changed": True,
        "version": number,
        "deployment": deployment_json(deployment),
        "warnings": warnings,
    }


def _previous(store: VersionStore, current: int) -> int:
    older = [v.number for v in store.versions() if v.number < current]
    if not older:
        raise ConflictError(f"no flag version before {current} is stored; there is nothing to roll back to")
    return older[-1]


def rollback(
    store: VersionStore,
    *,
    to_version: int | None = None,
    tenants: Iterable[int] = (),
    op: Operator,
    text: str = "",
    wait: bool = True,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Go back: stop a deployment under way, or deploy the previous (or ``to_version``) version,
    or with ``tenants`` write a new version without them, marked as a rollback."""
    remove = frozenset(tenants)
    running = store.in_progress()
    if running is not None:
        if running.foreign or to_version is not None or remove:
            _refuse_while_running(store, "roll back to a chosen version")
        stopped = store.stop(running)
        if wait:
            stopped = follow(store, stopped, op, on_progress)
        return {
            "store": store.name,
            "action": "stopped",
            "version": None,
            "deployment": deployment_json(stopped),
            "warnings": [],
        }
    replaced_invalid = False
    try:
        current = store.in_force()
    except FlagInvalidError:
        if to_version is None or remove:
            raise
        current = None  # a broken version in force: going back to a named one is the way out
        replaced_invalid = True
    if remove:
        return _remove_tenants(store, current, remove, op, text, wait, on_progress)
    if to_version is not None:
        number = to_version
    elif current is None:
        raise ConflictError("no flag version is in force; there is nothing to roll back")
    elif current.version is None:
        raise InputError(
            "the flag in force matches no recorded version (edited by hand?); name one with --to-version"
        )
    else:
        number = _previous(store, current.version)
    if current is not None and current.version is not None:
        if number == current.version:
            raise ConflictError(f"flag version {number} is already in force")
        if number > current.version:
            raise InputError(
                f"rollback goes back to an older version; {number} is newer than {current.version} "
                "(use `cutover flag advance`)"
            )
    content = store.content(number)
    # Under an invalid document the service kept routing by the last good version: what moves is
    # measured from that one, not from nothing.
    good = _last_good(store) if replaced_invalid else None
    d = diff(current.content if current else (good[1] if good else None), content)
    note = Note(
        action="rollback",
        by=op.by,
        at=iso(op.clock()),
        base=current.version if current else None,
        added=len(d.added),
        removed=len(d.removed),
        rollback=True,
        text=text or f"back to version {number}",
    )
    warnings = _warnings(store, content)
    deployment = _deploy(store, number, note, op, wait, on_progress)
    return {
        "store": store.name,
        "action": "deployed",
        "from_version": current.version if current else None,
        "version": number,
        "added": len(d.added),
        "removed": len(d.removed),
        "tenant_count": len(content.migrated),
        "deployment": deployment_json(deployment),
        "warnings": warnings,
        "replaced_invalid": replaced_invalid,
        "compared_with": good[0] if good else None,
    }


def _last_good(store: VersionStore, looked_at: int = 20) -> tuple[int, FlagContent] | None:
    """The newest completed deployment whose version is valid, and its content."""
    for deployment in store.deployments(looked_at):
        if deployment.state != "COMPLETE":
            continue
        try:
            return deployment.version, store.content(deployment.version)
        except FlagInvalidError:
            continue
    return None


def _remove_tenants(
    store: VersionStore,
    current: InForce | None,
    remove: frozenset[int],
    op: Operator,
    text: str,
    wait: bool,
    on_progress: Progress | None,
) -> dict[str, Any]:
    if current is None:
        raise ConflictError("no flag version is in force; there is no tenant to take out")
    absent = remove - current.content.tenant_ids
    if absent:
        raise InputError(
            f"tenant {min(absent)} is not listed in the flag in force (version {current.version}); "
            "nothing to roll back for it"
        )
    after = FlagContent(current.content.enabled, current.content.tenant_ids - remove)
    problems = check(current.content, after, kind=ChangeKind.ROLLBACK, max_add=0)
    if problems:
        raise InputError("refused: " + "; ".join(problems))
    d = diff(current.content, after)
    note = Note(
        action="rollback",
        by=op.by,
        at=iso(op.clock()),
        base=current.version,
        added=0,
        removed=len(d.removed),
        rollback=True,
        text=text or "tenants " + ", ".join(map(str, sorted(remove)[:10])) + " taken out",
    )
    warnings = _warnings(store, after)
    versions = store.versions()
    number = store.create_version(after, note, versions[-1].number if versions else None)
    deployment = _deploy(store, number, note, op, wait, on_progress)
    return {
        "store": store.name,
        "action": "tenants_removed",
        "from_version": current.version,
        "version": number,
        "added": 0,
        "removed": len(d.removed),
        "tenant_count": len(after.migrated),
        "deployment": deployment_json(deployment),
        "warnings": warnings,
    }


def release(
    store: VersionStore,
    tenants: Iterable[int],
    *,
    op: Operator,
    text: str = "",
    wait: bool = True,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Let held tenants back: a new version that lists them again, marked ``[release]``."""
    wanted = frozenset(tenants)
    held = holds(store)
    free = wanted - held.keys()
    if free:
        raise InputError(f"tenant {min(free)} is not held back; `cutover flag show` lists the held tenants")
    return advance(
        store,
        None,
        to_group=None,
        add=wanted,
        max_add=max(len(wanted), 1),
        op=op,
        text=text,
        wait=wait,
        on_progress=on_progress,
        include_held=True,
    )


def history(store: VersionStore, limit: int = 20) -> dict[str, Any]:
    """The most recent versions with who, when and what changed, and the deployments."""
    try:
        current = store.in_force()
    except FlagInvalidError:
        current = None
    cache: dict[int, FlagContent | None] = {}

    def content(number: int) -> FlagContent | None:
        if number not in cache:
            try:
                cache[number] = store.content(number)
            except (FlagInvalidError, NotFoundError):
                cache[number] = None
        return cache[number]

    rows = []
    for v in store.versions()[-limit:] if limit > 0 else []:
        note = v.note
        added: int | None
        removed: int | None
        if note is not None:
            added, removed = note.added, note.removed
        else:
            # Written elsewhere (the console, a script): compare with the version before it.
            now = content(v.number)
            change = diff(content(v.number - 1) if v.number > 1 else None, now) if now else None
            added = len(change.added) if change else None
            removed = len(change.removed) if change else None
        rows.append(
            {
                "version": v.number,
                "at": note.at if note else None,
                "by": note.by if note else None,
                "action": note.action if note else None,
                "added": added,
                "removed": removed,
                "rollback": note.rollback if note else "[rollback]" in v.description,
                "note": note.text if note else v.description,
                "in_force": current is not None and current.version == v.number,
            }
        )
    return {
        "store": store.name,
        "in_force": current.version if current else None,
        "versions": rows,
        "deployments": [deployment_json(d) for d in store.deployments(limit)],
    }
