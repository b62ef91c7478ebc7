"""A discrete-event simulation of both paths that runs the project's own cycle.

The controller here is the real ``Controller``: its routing (``decide``), its claims in a real
ledger, its poll and clone-and-resubmit (the state machine and retry policy), and its budget
split (``split_budget`` and ``clamp_threads``) decide everything. Only the paths and the clock
are simulated (``controller.engine.simpaths``): a virtual clock moves from event to event, with
no threads and no sleeping.

Cycles fall on the configured period. A cycle that could change nothing is skipped: when the last
cycle claimed, dispatched and resubmitted nothing, no conversion arrived or failed since, and the
admission the next dispatch would make (``Controller.admission``, split and all) is the one the
last cycle left, running it would only record outcomes a little earlier, which the simulation
reads from the paths themselves. ``skip_quiet_cycles=False`` runs every cycle instead; a test
checks that both give the same run.

The ledger is given by the caller (an empty one: a SQLite ledger on ``:memory:`` is what the
command line uses), since this layer knows no ledger implementation.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.core.admission import Load, Split
from controller.core.domain import ConversionRecord, ConversionRequest, ConversionState, Path
from controller.core.errors import CutoverError
from controller.core.ports import Ledger
from controller.core.transitions import RetryPolicy
from controller.engine.cycle import Controller, CycleConfig
from controller.engine.profile import Profile, Work
from controller.engine.simpaths import Attempt, BuildRecord, SimulatedBatch, SimulatedBuilds, World
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus


class SimulationError(CutoverError):
    """Raised when a simulation cannot finish: its controller holds work that nothing will move."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The controller's and the paths' settings a simulation runs with."""

    budget: int = 20
    cycle_seconds: float = 5.0
    legacy_max_threads: int = 16
    resubmits: int = 1
    max_claims: int = 20_000
    build_timeout_seconds: float = 8 * 3600.0
    fargate_quota_vcpus: float | None = None  # None: no quota caps the new path (the local runners)
    vcpus_per_job: float = 2.0
    seed: int = 0
    skip_quiet_cycles: bool = True
    split: Callable[[int, Load, int], Split] | None = None  # None: the project's split_budget

    @property
    def quota_slots(self) -> int | None:
        """New-path jobs the Fargate vCPU quota lets run at once (None: no quota)."""
        if self.fargate_quota_vcpus is None:
            return None
        return math.floor(self.fargate_quota_vcpus / self.vcpus_per_job + 1e-9)


class FixedFlag:
    """A flag reader that always answers the same: ``migrated`` listed in one version, or no flag."""

    def __init__(self, migrated: frozenset[int] | None, version: str = "simulated") -> None:
        if migrated is None:
            self._status = FlagStatus(None, FlagState.UNAVAILABLE, 0.0, "no flag in the simulation")
        else:
            snapshot = FlagSnapshot(version, True, migrated, "simulation", 0.0)
            self._status = FlagStatus(snapshot, FlagState.OK, 0.0)

    def read(self) -> FlagStatus:
        return self._status


@dataclass(frozen=True, slots=True)
class Conversion:
    """One simulated conversion's life, from the paths' point of view."""

    conversion_id: str
    tenant_id: int
    path: Path | None
    arrived_at: float
    first_work_at: float | None
    finished_at: float | None  # when the ledger recorded its outcome
    succeeded: bool


@dataclass
class SimResult:
    """What one simulated run did: per conversion, per attempt, per build, and over time."""

    config: SimConfig
    started_at: float
    finished_at: float
    conversions: list[Conversion]
    attempts: list[Attempt]
    builds: list[BuildRecord]
    launches: list[float]
    changes: list[tuple[float, int, int]]  # (time, legacy at work, new at work)
    new_slots_peak: int
    new_cap_wanted: int  # the most new-path slots the split gave while the path had work for them
    peak_slots: int  # the most budget held at once (build threads, jobs in a slot): what it caps
    cycles_run: int
    cycles_skipped: int
    cpu_seconds: float

    @property
    def makespan(self) -> float:
        return self.finished_at - self.started_at

    def peak(self, path: Path | None = None) -> int:
        """The most conversions at work at one instant on ``path`` (both paths together: None)."""
        if not self.changes:
            return 0
        if path is None:
            return max(legacy + new for _, legacy, new in self.changes)
        return max((legacy if path is Path.LEGACY else new) for _, legacy, new in self.changes)

    def at_work_seconds(self, path: Path | None = None) -> float:
        """The integral of conversions at work over time (conversion-seconds of work)."""
        total = 0.0
        for (t0, legacy, new), (t1, _, _) in zip(self.changes, self.changes[1:], strict=False):
            n = legacy + new if path is None else (legacy if path is Path.LEGACY else new)
            total += n * (t1 - t0)
        return total

    def busy_seconds(self, path: Path) -> float:
        """Time during which ``path`` had at least one conversion at work."""
        total = 0.0
        for (t0, legacy, new), (t1, _, _) in zip(self.changes, self.changes[1:], strict=False):
            if (legacy if path is Path.LEGACY else new) > 0:
                total += t1 - t0
        return total


def simulate(
    profile: Profile, migrated: frozenset[int] | None, config: SimConfig, ledger: Ledger
) -> SimResult:
    """Run ``profile``'s conversions through the project's controller with ``migrated`` in the flag
    (None: no flag at all) until every one has an outcome. ``ledger`` must be empty."""
    cpu_started = time.process_time()
    works = profile.workload(config.seed)
    world = World(profile, {w.conversion_id: w for w in works})
    legacy = SimulatedBuilds(world, timeout=config.build_timeout_seconds)
    new = SimulatedBatch(world, quota_slots=config.quota_slots)
    world.holders = [legacy.in_use, new.in_use]
    controller = Controller(
        ledger=ledger,
        flags=FixedFlag(migrated),
        backends={Path.LEGACY: legacy, Path.NEW: new},
        config=CycleConfig(
            budget=config.budget,
            max_claims=config.max_claims,
            legacy_max_threads=config.legacy_max_threads,
            lease_seconds=max(30.0, config.cycle_seconds * 6),
            retry=RetryPolicy(resubmits=config.resubmits),
            split=config.split,
        ),
        clock=lambda: world.now,
        holder="simulation",
    )
    driver = _Driver(world, controller, new, ledger, works, config)
    driver.run()
    return _result(world, new, ledger, works, config, driver, time.process_time() - cpu_started)


class _Driver:
    """Moves the clock from cycle to cycle and runs the ones that can change something."""

    def __init__(
        self,
        world: World,
        controller: Controller,
        new: SimulatedBatch,
        ledger: Ledger,
        works: Sequence[Work],
        config: SimConfig,
    ) -> None:
        self.world = world
        self.controller = controller
        self.new = new
        self.ledger = ledger
        self.pending = deque(sorted(works, key=lambda w: w.arrives_at))
        self.total = len(works)
        self.config = config
        self.cycles_run = 0
        self.cycles_skipped = 0

    def run(self) -> None:
        if not self.pending:
            return
        period = self.config.cycle_seconds
        origin = self.pending[0].arrives_at
        tick = 0
        must_run = True
        last_key: tuple[Any, ...] | None = None
        failures = self.world.failures
        cap = 0  # the new path's cap at the last cycle run
        while True:
            t = origin + tick * period
            self.world.run_until(t)
            arrived = self._accept_arrivals(t)
            key = self._key()
            skip = self.config.skip_quiet_cycles
            if not skip or must_run or arrived or self.world.failures != failures or key != last_key:
                report = self.controller.run_cycle()
                self.cycles_run += 1
                failures = self.world.failures
                # A cap that moved frees its slots for a build from the next cycle on, not this one.
                moved_cap = report.new_capacity != cap
                cap = report.new_capacity
                must_run = moved_cap or bool(
                    report.claimed or report.dispatched or report.resubmitted or report.released
                )
                last_key = self._key()
                if self._finished():
                    return
            else:
                self.cycles_skipped += 1
            tick = self._next_tick(tick, origin, period, must_run)

    def _next_tick(self, tick: int, origin: float, period: float, must_run: bool) -> int:
        if must_run:
            return tick + 1
        due = min(self.world.next_event(), self.pending[0].arrives_at if self.pending else math.inf)
        if due == math.inf:
            counts = self.ledger.counts()
            raise SimulationError(
                "the simulated controller holds work that nothing will move: "
                + ", ".join(f"{s.value} {n}" for s, n in counts.by_state.items() if n)
            )
        if not self.config.skip_quiet_cycles:
            return tick + 1
        return max(tick + 1, math.ceil((due - origin) / period - 1e-9))

    def _accept_arrivals(self, t: float) -> bool:
        batch: list[ConversionRequest] = []
        while self.pending and self.pending[0].arrives_at <= t:
            w = self.pending.popleft()
            batch.append(ConversionRequest(w.conversion_id, w.tenant_id, {}))
        if batch:
            self.ledger.accept(batch, t)
        return bool(batch)

    def _key(self) -> tuple[Any, ...]:
        """What the next dispatch would decide from, and what it would decide."""
        plan = self.controller.admission(self.new.queued)
        return (
            plan.split,
            plan.load.legacy_in_use,
            plan.new_running,
            bool(plan.legacy_todo),
            bool(plan.new_todo),
            self.world.at_work[Path.LEGACY] + self.world.at_work[Path.NEW] == 0,
        )

    def _finished(self) -> bool:
        counts = self.ledger.counts()
        return counts.state(ConversionState.SUCCEEDED) + counts.state(ConversionState.FAILED) >= self.total


def _records(ledger: Ledger) -> dict[str, ConversionRecord]:
    out: dict[str, ConversionRecord] = {}
    cursor: str | None = None
    while True:
        page, cursor = ledger.query(after=cursor, limit=5000)
        out.update((r.conversion_id, r) for r in page)
        if cursor is None:
            return out


def _result(
    world: World,
    new: SimulatedBatch,
    ledger: Ledger,
    works: Sequence[Work],
    config: SimConfig,
    driver: _Driver,
    cpu: float,
) -> SimResult:
    records = _records(ledger)
    first_work: dict[str, float] = {}
    for a in world.attempts:
        if a.work_at is not None and a.conversion_id not in first_work:
            first_work[a.conversion_id] = a.work_at
    conversions = []
    for w in works:
        r = records.get(w.conversion_id)
        conversions.append(
            Conversion(
                w.conversion_id,
                w.tenant_id,
                r.path if r else None,
                w.arrives_at,
                first_work.get(w.conversion_id),
                r.finished_at if r else None,
                r is not None and r.state is ConversionState.SUCCEEDED,
            )
        )
    started = min((w.arrives_at for w in works), default=0.0)
    finished = max((c.finished_at for c in conversions if c.finished_at is not None), default=started)
    changes = list(world.changes)
    if changes and changes[-1][0] < finished:
        changes.append((finished, changes[-1][1], changes[-1][2]))
    return SimResult(
        config=config,
        started_at=started,
        finished_at=finished,
        conversions=conversions,
        attempts=world.attempts,
        builds=world.builds,
        launches=world.launches,
        changes=changes,
        new_slots_peak=new.peak_held,
        new_cap_wanted=new.peak_cap,
        peak_slots=world.peak_slots,
        cycles_run=driver.cycles_run,
        cycles_skipped=driver.cycles_skipped,
        cpu_seconds=cpu,
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ``values`` by linear interpolation; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(result: SimResult) -> dict[str, Any]:
    """The figures of one run as the forecast's ``before`` / ``after`` show them (without cost)."""
    span = max(result.makespan, 1e-9)
    waits = [c.first_work_at - c.arrived_at for c in result.conversions if c.first_work_at is not None]
    by_path = {p: sum(1 for c in result.conversions if c.path is p) for p in Path}

    def per_path(fn: Any) -> dict[str, Any]:
        return {p.value: fn(p) for p in Path}

    return {
        "makespan_seconds": round(result.makespan, 3),
        "busy_seconds": per_path(lambda p: round(result.busy_seconds(p), 3)),
        "peak_in_flight": {**per_path(result.peak), "total": result.peak()},
        "mean_in_flight": {
            **per_path(lambda p: round(result.at_work_seconds(p) / span, 3)),
            "total": round(result.at_work_seconds() / span, 3),
        },
        "peak_slots": result.peak_slots,
        "budget": result.config.budget,
        "within_budget": result.peak_slots <= result.config.budget,
        "queue_wait_seconds": {
            "p50": _rounded(percentile(waits, 0.5)),
            "p95": _rounded(percentile(waits, 0.95)),
        },
        "conversions": {**{p.value: n for p, n in by_path.items()}},
        "failed": sum(1 for c in result.conversions if not c.succeeded),
        "builds": len(result.builds),
        "new_path_jobs": sum(1 for a in result.attempts if a.path is Path.NEW),
        "new_path_slots_peak": result.new_slots_peak,
        "simulation": {
            "cycles_run": result.cycles_run,
            "cycles_skipped": result.cycles_skipped,
            "cpu_seconds": round(result.cpu_seconds, 3),
        },
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def series(result: SimResult) -> Mapping[str, list[float]]:
    """Conversions at work per path over time (seconds from the start), for plots."""
    t = [c[0] - result.started_at for c in result.changes]
    return {
        "t": t,
        "legacy": [float(c[1]) for c in result.changes],
        "new": [float(c[2]) for c in result.changes],
    }
