"""The rollout gates as the service, the CLI and auto-advance read them: the rollout plan, the
tenants on the new path and the ledger's finished conversions in; a ``GateReport`` (and the
``GET /gates`` document) out. Reads only; the judging itself is ``controller.core.gates``'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.core.errors import CutoverError, InputError
from controller.core.gates import MAX_WINDOW_SECONDS, GatePolicy, GateReport, GateVerdict, GroupSpec, judge
from controller.core.ports import FinishedConversion, LedgerQueries
from flags.rollout import RolloutPlan, load_plan

OUTSIDE_PLAN = "(not in the plan)"  # tenants on the new path that no group names are gated too
# Each group's shadow parity, for the groups that had shadow runs: (verdict, reason).
ParityVerdicts = Mapping[str, tuple[GateVerdict, str]]


def evaluate(
    queries: LedgerQueries,
    plan: RolloutPlan | None,
    migrated: frozenset[int],
    now: float,
    *,
    window_seconds: float | None = None,
    group: str | None = None,
    parity: ParityVerdicts | None = None,
) -> GateReport:
    """The gate for every group with tenants on the new path (or just ``group``), from the ledger
    (and from the shadows' ``parity``, where given)."""
    rows = queries.finished_since(now - max(MAX_WINDOW_SECONDS, window_seconds or 0.0))
    return evaluate_rows(rows, plan, migrated, now, window_seconds=window_seconds, group=group, parity=parity)


def evaluate_rows(
    rows: Sequence[FinishedConversion],
    plan: RolloutPlan | None,
    migrated: frozenset[int],
    now: float,
    *,
    window_seconds: float | None = None,
    group: str | None = None,
    parity: ParityVerdicts | None = None,
) -> GateReport:
    """The gate from finished conversions already read. Tenants on the new path that the plan does
    not name (all of them without a plan) are judged as one more group, so nothing reaches the new
    path unjudged. ``InputError`` for an unknown group."""
    specs = [GroupSpec(g.name, g.tenant_ids) for g in plan.groups] if plan is not None else []
    outside = migrated - plan.tenant_ids if plan is not None else migrated
    if outside:
        specs.append(GroupSpec(OUTSIDE_PLAN, outside))
    if group is not None and group != OUTSIDE_PLAN:
        if plan is None:
            raise InputError("a group needs a rollout plan (CUTOVER_ROLLOUT_FILE)")
        group = plan.group(group).name
    policy = plan.gates if plan is not None else GatePolicy()
    return judge(
        specs, migrated, rows, policy, now=now, window_seconds=window_seconds, only=group, parity=parity
    )


def with_problem(report: GateReport, problem: str) -> GateReport:
    """``report`` with a reason not to trust it (a plan or ledger that could not be read): never a pass."""
    verdict = GateVerdict.INCONCLUSIVE if report.verdict is GateVerdict.PASS else report.verdict
    return GateReport(
        report.until, report.window_seconds, report.groups, verdict, (*report.reasons, problem), report.policy
    )


class PlanWatch:
    """The rollout plan file, re-read when it changes on disk; the last good plan stays in use
    while the file is missing or malformed, and ``problem`` says why."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.problem = "" if path else "no rollout plan configured (CUTOVER_ROLLOUT_FILE)"
        self._stamp: tuple[int, int] | None = None
        self._plan: RolloutPlan | None = None
        self._lock = threading.Lock()

    def current(self) -> RolloutPlan | None:
        """The plan in force (None without one)."""
        if self.path is None:
            return None
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._stamp:
                    self._plan = load_plan(self.path)
                    self._stamp = stamp
                self.problem = ""
            except OSError as exc:
                self.problem = f"rollout plan {self.path}: {exc.strerror or exc}"
            except CutoverError as exc:
                self.problem = str(exc)
            return self._plan


class GateWatch:
    """The latest gate of a running service, worked out again at most every ``ttl`` seconds, so the
    dashboard, ``/metrics`` and auto-advance share one reading of the ledger."""

    def __init__(
        self,
        queries: LedgerQueries,
        plan: PlanWatch,
        migrated: Callable[[], frozenset[int] | None],
        clock: Callable[[], float] = time.time,
        ttl: float = 30.0,
        parity: Callable[[RolloutPlan], ParityVerdicts] | None = None,
    ) -> None:
        self.queries = queries
        self._parity = parity
        self.plan = plan
        self._migrated = migrated
        self._clock = clock
        self.ttl = ttl
        self._latest: GateReport | None = None
        self._lock = threading.Lock()

    def report(self, *, fresh: bool = False) -> GateReport:
        """The gate now (at most ``ttl`` seconds old unless ``fresh``). Without a flag read yet,
        nothing is on the new path; a plan that cannot be read leaves the gate inconclusive."""
        now = self._clock()
        with self._lock:
            latest = self._latest
            if latest is not None and not fresh and now - latest.until < self.ttl:
                return latest
            plan = self.plan.current()
            parity = self._parity(plan) if self._parity is not None and plan is not None else None
            report = evaluate(self.queries, plan, self._migrated() or frozenset(), now, parity=parity)
            if self.plan.problem:
                report = with_problem(report, self.plan.problem)
            self._latest = report
            return report

    @property
    def latest(self) -> GateReport | None:
        """The last report worked out, without reading anything."""
        return self._latest


def gates_document(watch: GateWatch, *, fresh: bool = False) -> dict[str, Any]:
    """The ``GET /gates`` JSON."""
    return watch.report(fresh=fresh).to_json()
