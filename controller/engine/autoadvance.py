"""Auto-advance, when the rollout plan opts in (``auto:``): on the housekeeping thread, one replica
at a time (under a lease, as dispatch is) reads the rollout, asks ``controller.core.autoadvance``
what to do and does it through the same operations, guard rails and history as ``cutover flag``,
as ``cutover-auto``. Every replica keeps the latest decision for ``/status`` and the dashboard.

It never waits on a deployment (the next tick sees it under way) and never routes anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.core.autoadvance import AUTO_BY, Action, AutoPolicy, Decision, Situation, decide
from controller.core.errors import CutoverError
from controller.core.gates import GateReport, GateVerdict, refusal
from controller.core.ports import LeaseStore, ValueStore, VersionStore
from controller.engine.gates import GateWatch, PlanWatch
from flags import ops
from flags.rollout import RolloutPlan

log = logging.getLogger("cutover.auto")

AUTO_LEASE = "auto-advance"  # the lease whose holder acts for every replica
STATE_KEY = "auto-advance"  # paused or not, and the version a stuck rollout was announced for


@dataclass
class _Kept:
    """What every replica shares through the ledger (JSON under ``STATE_KEY``): whether auto-advance
    is paused and at which flag version, the version a stuck rollout was announced for, and the
    acting replica's latest decision and action, which the others show."""

    paused: str = ""
    paused_version: int | None = None
    stuck_version: int | None = None
    decision: dict[str, Any] | None = None
    last_action: dict[str, Any] | None = None

    @classmethod
    def load(cls, text: str | None) -> _Kept:
        if not text:
            return cls()
        try:
            doc = json.loads(text)
            return cls(
                str(doc.get("paused") or ""),
                doc.get("paused_version"),
                doc.get("stuck_version"),
                doc.get("decision"),
                doc.get("last_action"),
            )
        except (ValueError, AttributeError):
            return cls()  # written by someone else: start afresh rather than stop for good

    def dump(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass
class AutoAdvancer:
    """Decides on every tick and, holding the lease, acts."""

    leases: LeaseStore
    values: ValueStore  # the shared state below, under STATE_KEY
    store: Callable[[], VersionStore]  # made on first use: only a plan that opts in needs one
    gates: GateWatch
    plan: PlanWatch
    notify: Callable[[str, str], None]
    clock: Callable[[], float]
    holder: str
    max_add: int
    flag_read: Callable[[], bool] = lambda: True  # False until the controller has read a flag
    lease_seconds: float = 60.0
    last: Decision | None = None
    acting: bool = False
    last_action: dict[str, Any] | None = None
    _store: VersionStore | None = field(default=None, repr=False)

    def tick(self, now: float) -> None:
        """One look at the rollout (``last`` keeps the decision); act on it when this replica holds
        the lease."""
        plan = self.plan.current()
        policy = plan.auto if plan is not None else None
        if plan is None or policy is None or not policy.enabled:
            self.last = None
            return
        if not self.flag_read():
            self.last = Decision(Action.WAIT, why="the controller's first flag read")
            return
        kept = _Kept.load(self.values.get_value(STATE_KEY))
        before = kept.dump()
        self.last_action = kept.last_action
        self.acting = self.leases.try_lease(AUTO_LEASE, self.holder, now, self.lease_seconds)
        if not self.acting:  # another replica reads the rollout and acts: show what it decided
            self.last = _decision(kept.decision) or Decision(Action.WAIT, why="the acting replica to decide")
            return
        if self._store is None:
            self._store = self.store()
        store = self._store
        report = self.gates.report()
        situation, version = self._situation(store, plan, report, kept, now)
        if kept.paused and version != kept.paused_version:  # someone changed the flag: resume
            kept.paused, kept.paused_version = "", None
            situation = dataclasses.replace(situation, paused="")
        decision = decide(policy, situation)
        self.last = decision
        self._act(decision, store, plan, policy, report, kept, version, now)
        kept.decision = {
            "action": decision.action.value,
            "group": decision.group,
            "at": decision.at,
            "why": decision.why,
        }
        kept.last_action = self.last_action
        if kept.dump() != before:
            self.values.put_value(STATE_KEY, kept.dump(), now)

    def state(self) -> dict[str, Any]:
        """What ``/status`` shows: whether it is on, this replica's part, the next action, when and why."""
        d = self.last
        if d is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "acting": self.acting,
            "next_action": d.action.value,
            "group": d.group,
            "at": d.at,
            "waiting_for": d.why if d.action is Action.WAIT else None,
            "why": d.why,
            "last_action": self.last_action,
        }

    # -- reading the rollout --------------------------------------------------------------------

    def _situation(
        self, store: VersionStore, plan: RolloutPlan, report: GateReport, kept: _Kept, now: float
    ) -> tuple[Situation, int | None]:
        current = store.in_force()
        migrated = current.content.migrated if current else frozenset()
        pending = [g.name for g in plan.groups if not g.tenant_ids <= migrated]
        moved = [g.name for g in plan.groups if g.tenant_ids & migrated]
        version = current.version if current else None
        situation = Situation(
            now=now,
            next_group=pending[0] if pending else None,
            last_group=moved[-1] if moved else None,
            changed_at=_changed_at(store),
            deploying=store.in_progress() is not None,
            verdict=report.verdict,
            failing=tuple(g.name for g in report.groups if g.verdict is GateVerdict.FAIL),
            why=refusal(report) if report.verdict is not GateVerdict.PASS else "",
            paused=kept.paused,
            stuck_notified=version is not None and kept.stuck_version == version,
        )
        return situation, version

    # -- acting -----------------------------------------------------------------------------------

    def _act(
        self,
        decision: Decision,
        store: VersionStore,
        plan: RolloutPlan,
        policy: AutoPolicy,
        report: GateReport,
        kept: _Kept,
        version: int | None,
        now: float,
    ) -> None:
        op = ops.Operator(by=AUTO_BY, clock=self.clock)
        action = decision.action
        try:
            if action is Action.ADVANCE and decision.group is not None:
                done = ops.advance(
                    store,
                    plan,
                    to_group=decision.group,
                    max_add=self.max_add,
                    op=op,
                    text=f"after {policy.bake_seconds / 3600:g}h of bake, gate passing",
                    wait=False,
                    gate=report,
                )
                self._did(now, "advance", decision.group, done.get("version"), decision.why)
            elif action is Action.ROLLBACK and decision.group is not None:
                current = store.in_force()
                listed = current.content.tenant_ids if current else frozenset()
                done = ops.rollback(
                    store,
                    tenants=plan.group(decision.group).tenant_ids & listed,
                    op=op,
                    text=f"{decision.group} failed its gate",
                    wait=False,
                )
                self._pause(kept, decision.why, done.get("version"))
                self._did(now, "rollback", decision.group, done.get("version"), decision.why)
            elif action is Action.PAUSE:
                self._pause(kept, decision.why, version)
                self._did(now, "pause", decision.group, version, decision.why)
            elif action is Action.NOTIFY_STUCK:
                kept.stuck_version = version
                self._did(now, "stuck", decision.group, version, decision.why)
        except CutoverError as exc:
            # A guard rail said no (a deployment started meanwhile, too many tenants at once):
            # stop and say so rather than try again every tick.
            self._pause(kept, f"{action.value} refused: {exc}", version)
            self._did(now, "pause", decision.group, version, f"{action.value} refused: {exc}")

    def _pause(self, kept: _Kept, why: str, version: int | None) -> None:
        kept.paused, kept.paused_version = why, version

    def _did(self, now: float, what: str, group: str | None, version: int | None, why: str) -> None:
        self.last_action = {"action": what, "group": group, "version": version, "at": now, "why": why}
        log.warning("auto.acted", extra={"action": what, "group": group, "version": version, "why": why})
        self.notify(*auto_message(what, group, version, why))


def auto_message(what: str, group: str | None, version: int | None, why: str) -> tuple[str, str]:
    """Subject and body of one automatic action, for the people watching the rollout."""
    words = {
        "advance": f"moved {group} to the new path (flag version {version})",
        "rollback": f"rolled {group} back to the old path (flag version {version}) and paused",
        "pause": f"paused the rollout at {group or 'the current group'}",
        "stuck": f"the rollout is stuck: {group} cannot move while the gate stays inconclusive",
    }[what]
    subject = f"cutover-auto: {words}"[:100]
    body = "\n".join(
        [
            f"Auto-advance {words}.",
            f"Why: {why}",
            "See `cutover gate` and `cutover flag history`; auto-advance resumes after a pause "
            "once the flag in force changes.",
        ]
    )
    return subject, body


def _decision(doc: dict[str, Any] | None) -> Decision | None:
    """A decision as the acting replica kept it, or None when there is none (or it is unreadable)."""
    if not doc:
        return None
    try:
        return Decision(Action(doc["action"]), doc.get("group"), doc.get("at"), str(doc.get("why") or ""))
    except (KeyError, ValueError):
        return None


def _changed_at(store: VersionStore) -> float | None:
    """When the latest deployment started (epoch seconds), or None before any."""
    latest = store.deployments(1)
    when = latest[0].started_at if latest else None
    if not when:
        return None
    try:
        return dt.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
