"""Periodic reconciliation: list what both paths ran in the last hours and report any conversion
that ran twice (on both paths, or twice on one) or that the ledger has out on a path that does not
have it. Exclusive ownership means both numbers stay zero; an alarm watches them.

It only reads and reports. It never changes ownership or cancels work: a finding is for people.
A run that failed does not count (a clone-and-resubmit, or an operator's requeue after a failure,
is allowed to run the conversion again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller.core.domain import JobRef, JobStatus, Path
from controller.core.errors import CutoverError
from controller.core.ports import Backend, Inventory, Ledger, Run
from controller.plumbing.tally import ReconcileTally

log = logging.getLogger("cutover.reconcile")

# Kept in the ledger's value store (JSON: at, since, conversions, duplicates, orphans).
FIRST_RUN = "reconcile:first_run"
LAST_RUN = "reconcile:last_run"
LAST_FINDING = "reconcile:last_finding"  # the last run that found a duplicate or an orphan


@dataclass(frozen=True, slots=True)
class Findings:
    """One reconciliation run: the window it looked at and what it found."""

    at: float
    since: float
    conversions_seen: int
    duplicates: tuple[str, ...] = ()
    orphans: tuple[str, ...] = ()
    by_path: Mapping[Path, Mapping[str, int]] = field(default_factory=dict)


class Reconciler:
    """Compares the backends' inventories with each other and with the ledger, now and then."""

    def __init__(
        self,
        ledger: Ledger,
        backends: Mapping[Path, Backend],
        *,
        window_seconds: float,
        interval_seconds: float,
        grace_seconds: float,
        holder: str,
        clock: Callable[[], float],
        tally: ReconcileTally | None = None,
        on_findings: Callable[[Findings], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.backends = backends
        self.window = window_seconds
        self.interval = interval_seconds
        self.grace = grace_seconds
        self.holder = holder
        self._clock = clock
        self.tally = tally or ReconcileTally()
        self._on_findings = on_findings
        self._last: float | None = None
        self.latest: Findings | None = None

    @property
    def enabled(self) -> bool:
        """True when at least one backend can list what it ran."""
        return any(isinstance(b, Inventory) for b in self.backends.values())

    def counts(self) -> dict[str, int]:
        """The latest run's totals: ``{"duplicates": n, "orphans": m}``."""
        latest = self.latest
        return {
            "duplicates": len(latest.duplicates) if latest else 0,
            "orphans": len(latest.orphans) if latest else 0,
        }

    def tick(self, now: float) -> None:
        """Run when the interval has passed and this process holds the ``reconcile`` lease."""
        if not self.enabled or (self._last is not None and now - self._last < self.interval):
            return
        self._last = now
        if not self.ledger.try_lease("reconcile", self.holder, now, self.interval * 2):
            return
        self.run(now)

    def run(self, now: float) -> Findings:
        """One reconciliation over the window ending ``now``."""
        since = now - self.window
        runs: dict[str, list[tuple[Path, Run]]] = {}
        listed: dict[Path, set[tuple[str, str]]] = {}
        for path, backend in self.backends.items():
            if not isinstance(backend, Inventory):
                continue
            inventory = backend.inventory(since)
            listed[path] = {(r.ref.job_id, r.ref.conversion_id) for r in inventory}
            for r in inventory:
                runs.setdefault(r.ref.conversion_id, []).append((path, r))

        candidates = {cid: rs for cid, rs in runs.items() if _live(rs) >= 2}
        self._settle(candidates)
        duplicates = {cid: rs for cid, rs in candidates.items() if _live(rs) >= 2}

        orphans: dict[str, Path] = {}
        for path, refs in listed.items():
            for record in self.ledger.in_flight(path, limit=1_000_000):
                at = record.dispatched_at or 0.0
                if at < since + self.grace or at > now - self.grace:
                    continue  # too close to the window's edges for the listings to be sure
                if (record.job_ref or "", record.conversion_id) not in refs:
                    orphans[record.conversion_id] = path

        by_path: dict[Path, dict[str, int]] = {p: {"duplicates": 0, "orphans": 0} for p in self.backends}
        for cid, rs in duplicates.items():
            for path in self._extra_paths(cid, rs):
                by_path[path]["duplicates"] += 1
                self.tally.add(path, "duplicates", {cid})
        for cid, path in orphans.items():
            by_path[path]["orphans"] += 1
            self.tally.add(path, "orphans", {cid})
        findings = Findings(
            at=now,
            since=since,
            conversions_seen=len(runs),
            duplicates=tuple(sorted(duplicates)),
            orphans=tuple(sorted(orphans)),
            by_path=by_path,
        )
        self.latest = findings
        self._remember(findings)
        level = logging.WARNING if duplicates or orphans else logging.INFO
        log.log(
            level,
            "reconcile.done",
            extra={
                "conversions": len(runs),
                "duplicates": len(duplicates),
                "orphans": len(orphans),
                "duplicate_ids": list(findings.duplicates[:20]),
                "orphan_ids": list(findings.orphans[:20]),
            },
        )
        if self._on_findings is not None:
            self._on_findings(findings)
        return findings

    def _remember(self, findings: Findings) -> None:
        """Keep in the ledger when reconciliation first and last ran, and when it last found
        anything: ``cutover decommission`` reads them as evidence that a period was clean."""
        doc = json.dumps(
            {
                "at": findings.at,
                "since": findings.since,
                "conversions": findings.conversions_seen,
                "duplicates": len(findings.duplicates),
                "orphans": len(findings.orphans),
            }
        )
        try:
            if self.ledger.get_value(FIRST_RUN) is None:
                self.ledger.put_value(FIRST_RUN, doc, findings.at)
            self.ledger.put_value(LAST_RUN, doc, findings.at)
            if findings.duplicates or findings.orphans:
                self.ledger.put_value(LAST_FINDING, doc, findings.at)
        except CutoverError as exc:
            log.warning("reconcile.unrecorded", extra={"error": str(exc)})

    def _settle(self, candidates: dict[str, list[tuple[Path, Run]]]) -> None:
        """Ask the backends for the exact outcome of candidate runs the listing could not tell."""
        unsure: dict[Path, list[JobRef]] = {}
        for rs in candidates.values():
            for path, r in rs:
                if r.status is JobStatus.UNKNOWN:
                    unsure.setdefault(path, []).append(r.ref)
        exact: dict[tuple[Path, JobRef], JobStatus] = {}
        for path, refs in unsure.items():
            backend = self.backends[path]
            if not isinstance(backend, Inventory):
                continue
            try:
                states = backend.outcomes(refs)
            except CutoverError as exc:
                log.warning("reconcile.poll_failed", extra={"path": path.value, "error": str(exc)})
                continue
            exact.update({(path, ref): s.status for ref, s in states.items()})
        for cid, rs in candidates.items():
            candidates[cid] = [(p, Run(r.ref, exact.get((p, r.ref), r.status), r.created_at)) for p, r in rs]

    def _extra_paths(self, conversion_id: str, runs: list[tuple[Path, Run]]) -> list[Path]:
        """The paths a duplicate counts against: the one that does not own it when it ran on both,
        the one it ran on twice otherwise."""
        live = {p for p, r in runs if r.status is not JobStatus.FAILED}
        if len(live) == 1:
            return list(live)
        try:
            record = self.ledger.get(conversion_id)
        except CutoverError:
            record = None
        owner = record.path if record is not None else None
        return [p for p in sorted(live) if p is not owner] or sorted(live)


def _live(runs: list[tuple[Path, Run]]) -> int:
    return sum(1 for _, r in runs if r.status is not JobStatus.FAILED)
