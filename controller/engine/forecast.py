"""The forecast of a flag change: the same peak simulated with the flag as it is and as it would
be, side by side, with what each path costs and the warnings an operator should see first.

Builds on ``controller.engine.simulation`` (the project's own cycle on simulated paths) and
``controller.engine.pricing``; the ledger a simulation runs on is made by the caller's factory,
since this layer names no ledger implementation. Decides nothing and changes no flag.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controller.core.domain import Path
from controller.core.errors import InputError
from controller.core.ports import Ledger, LedgerQueries
from controller.engine.history import Window, history_profile, learn, profile_of
from controller.engine.pricing import JobShape, PriceTable, codebuild_cost, fargate_cost, load_prices
from controller.engine.profile import Arrival, Profile
from controller.engine.simulation import SimConfig, SimResult, simulate, summary
from controller.settings import Settings
from flags.rollout import RolloutPlan

FARGATE_DEFAULT_QUOTA = 6.0  # vCPUs: the AWS default Fargate On-Demand quota (L-3032A538)
# Fargate's task launch rate, a token bucket per account and region: 100 at once, 20 a second after.
LAUNCH_BURST = 100
LAUNCH_PER_SECOND = 20.0
CODEBUILD_TIMEOUT = 8 * 3600.0  # the legacy project's build timeout (terraform: 480 minutes)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One side of the comparison: the tenants the flag lists (None: no flag at all)."""

    label: str
    migrated: frozenset[int] | None


@dataclass(frozen=True, slots=True)
class Forecast:
    """The forecast document and the runs behind it (for plots)."""

    document: dict[str, Any]
    runs: dict[str, SimResult]


def sim_config(settings: Settings, *, budget: int | None = None, seed: int = 0) -> SimConfig:
    """The simulation settings of the deployment ``settings`` describes. On AWS the new path is
    held to the Fargate vCPU quota (the configured one, else the AWS default); locally nothing is."""
    quota = None
    if settings.backend == "aws":
        quota = settings.fargate_vcpu_quota or FARGATE_DEFAULT_QUOTA
    return SimConfig(
        budget=budget or settings.budget,
        cycle_seconds=settings.cycle_seconds,
        legacy_max_threads=settings.legacy_max_threads,
        resubmits=settings.resubmits,
        max_claims=settings.max_claims_per_cycle,
        build_timeout_seconds=CODEBUILD_TIMEOUT,
        fargate_quota_vcpus=quota,
        vcpus_per_job=settings.batch_vcpus_per_job or 2.0,
        seed=seed,
    )


def forecast(
    profile: Profile,
    scenarios: Sequence[Scenario],
    config: SimConfig,
    new_ledger: Callable[[], Ledger],
    *,
    prices: tuple[PriceTable, str] | None = None,
    shape: JobShape | None = None,
) -> Forecast:
    """Simulate ``profile`` once per scenario (``before`` then ``after``) and compare them."""
    table, table_source = prices or load_prices()
    shape = shape or JobShape(vcpus=config.vcpus_per_job)
    runs: dict[str, SimResult] = {}
    doc: dict[str, Any] = {
        "profile": {
            **profile.describe(),
            "seed": config.seed,
            "budget": config.budget,
            "cycle_seconds": config.cycle_seconds,
            "legacy_max_threads": config.legacy_max_threads,
            "fargate_quota_vcpus": config.fargate_quota_vcpus,
            "job_shape": {
                "vcpus": shape.vcpus,
                "memory_gb": shape.memory_gb,
                "codebuild_compute_type": shape.compute_type,
            },
        },
        "prices": table.describe(table_source),
    }
    for s in scenarios:
        ledger = new_ledger()
        try:
            run = simulate(profile, s.migrated, config, ledger)
        finally:
            ledger.close()
        runs[s.label] = run
        doc[s.label] = {
            "migrated_tenants": None if s.migrated is None else len(s.migrated),
            **summary(run),
            "cost": costs(run, shape, table),
        }
    doc["warnings"] = warnings(runs, config, shape, scenarios)
    return Forecast(doc, runs)


def costs(run: SimResult, shape: JobShape, prices: PriceTable) -> dict[str, Any]:
    """What one run costs per path: Fargate tasks from their slot to their end, builds from their
    submission to their end."""
    tasks = [(a.ended_at or run.finished_at) - a.slot_at for a in run.attempts if a.path is Path.NEW]
    builds = [(b.ended_at or run.finished_at) - b.submitted_at for b in run.builds]
    new = fargate_cost(tasks, shape, prices)
    legacy = codebuild_cost(builds, shape, prices) if builds else 0.0
    return {
        "legacy": round(legacy, 4),
        "new": round(new, 4),
        "total": round(legacy + new, 4),
        "currency": prices.currency,
    }


def warnings(
    runs: dict[str, SimResult], config: SimConfig, shape: JobShape, scenarios: Sequence[Scenario]
) -> list[str]:
    """What an operator should see before moving: quota, launch rate, build timeout, a slower peak."""
    out: list[str] = []
    for s in scenarios:
        run = runs[s.label]
        out.extend(f"{s.label}: {w}" for w in _run_warnings(run, config, shape))
    before, after = runs.get("before"), runs.get("after")
    if before is not None and after is not None and after.makespan > before.makespan * 1.001:
        out.append(_slower(before, after, config))
    return out


def _run_warnings(run: SimResult, config: SimConfig, shape: JobShape) -> list[str]:
    out: list[str] = []
    slots = config.quota_slots
    if slots is not None and run.new_cap_wanted > slots:
        out.append(
            f"the Fargate On-Demand vCPU quota ({config.fargate_quota_vcpus:g} vCPUs) lets only {slots} "
            f"new-path jobs of {config.vcpus_per_job:g} vCPUs run at once, but the new path's share of the "
            f"budget reaches {run.new_cap_wanted} jobs "
            f"({run.new_cap_wanted * config.vcpus_per_job:g} vCPUs): "
            "ask for a higher quota (Service Quotas L-3032A538)"
        )
    burst = launch_burst(run.launches)
    if burst.throttled:
        out.append(
            f"the new path would start {burst.most_in_a_second} Fargate tasks within one second, beyond "
            f"Fargate's launch rate ({LAUNCH_BURST} at once, then {LAUNCH_PER_SECOND:g} a second): "
            f"{burst.throttled} launches would wait"
        )
    timed_out = [b for b in run.builds if b.timed_out]
    if timed_out:
        longest = max(timed_out, key=lambda b: b.size)
        out.append(
            f"{len(timed_out)} legacy build(s) would run past the CodeBuild timeout "
            f"({config.build_timeout_seconds / 3600:g} h): the largest holds {longest.size} conversions on "
            f"{longest.threads} threads; what is unfinished then fails and is resubmitted"
        )
    failed = sum(1 for c in run.conversions if not c.succeeded)
    if failed:
        out.append(f"{failed} conversions would end failed after their retries")
    if run.peak() > config.budget:
        out.append(f"work at once reached {run.peak()}, above the budget of {config.budget}")
    return out


def _slower(before: SimResult, after: SimResult, config: SimConfig) -> str:
    slot_seconds = sum(
        (a.ended_at or after.finished_at) - a.slot_at for a in after.attempts if a.path is Path.NEW
    )
    needed = math.ceil(slot_seconds / max(before.makespan, 1e-9))
    slots = config.quota_slots
    available = config.budget if slots is None else min(config.budget, slots)
    why = "the Fargate vCPU quota" if slots is not None and slots < config.budget else "the budget"
    return (
        f"the move makes the peak slower: {_hours(after.makespan)} instead of {_hours(before.makespan)}; "
        f"to beat the old makespan the new path would need about {needed} jobs at once, and it "
        f"{'can have at most' if needed > available else 'had at most'} "
        f"{available if needed > available else after.peak(Path.NEW)} ({why} allows {available})"
    )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


@dataclass(frozen=True, slots=True)
class Burst:
    """Fargate task launches against the launch-rate token bucket."""

    most_in_a_second: int
    throttled: int


def launch_burst(launches: Sequence[float]) -> Burst:
    """How many launches would find Fargate's launch-rate bucket empty, and the busiest second."""
    tokens = float(LAUNCH_BURST)
    last = None
    throttled = 0
    most = 0
    window_start = 0
    ordered = sorted(launches)
    for i, t in enumerate(ordered):
        if last is not None:
            tokens = min(float(LAUNCH_BURST), tokens + (t - last) * LAUNCH_PER_SECOND)
        last = t
        if tokens >= 1:
            tokens -= 1
        else:
            throttled += 1
        while ordered[window_start] <= t - 1.0:
            window_start += 1
        most = max(most, i - window_start + 1)
    return Burst(most, throttled)


def next_group(
    plan: RolloutPlan, migrated: frozenset[int], held: frozenset[int] = frozenset()
) -> tuple[str, frozenset[int]] | None:
    """The first rollout group not wholly in the flag (its ``held`` tenants aside: an advance
    leaves them out), and the flag's tenants once it is; None when every group is in."""
    for group in plan.groups:
        if not group.tenant_ids <= migrated | held:
            return group.name, migrated | (group.tenant_ids - held)
    return None


def forecast_next_group(
    ledger: LedgerQueries,
    migrated: frozenset[int] | None,
    plan: RolloutPlan | None,
    settings: Settings,
    new_ledger: Callable[[], Ledger],
    *,
    window: Window = "last-peak",
    now: float | None = None,
    held: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """The forecast for moving the next rollout group, as a dashboard panel shows it:
    ``{"group", "forecast", "held"}`` with the forecast document and the group's tenants the move
    leaves out because they are held back (as ``cutover flag advance`` and ``cutover forecast``
    leave them out), or ``{"group", "unavailable"}`` with why."""
    if plan is None:
        return {"group": None, "unavailable": "no rollout plan is configured (CUTOVER_ROLLOUT_FILE)"}
    step = next_group(plan, migrated or frozenset(), held)
    if step is None:
        return {"group": None, "unavailable": "every rollout group is in the flag"}
    name, after = step
    left_out = sorted(plan.group(name).tenant_ids & held - (migrated or frozenset()))
    try:
        when = time.time() if now is None else now
        profile = history_profile(
            ledger,
            window,
            when,
            same_machine=settings.backend == "local",
            cycle_seconds=settings.cycle_seconds,
            budget=settings.budget,
        )
    except InputError as exc:
        return {"group": name, "unavailable": str(exc)}
    result = forecast(
        profile,
        [Scenario("before", migrated), Scenario("after", after)],
        sim_config(settings),
        new_ledger,
    )
    return {"group": name, "forecast": result.document, "held": left_out}


def stage_forecast(
    history: LedgerQueries,
    tenants: Sequence[int],
    migrated: frozenset[int] | None,
    config: SimConfig,
    new_ledger: Callable[[], Ledger],
    *,
    same_machine: bool = False,
) -> SimResult:
    """What a wave of one conversion per tenant in ``tenants``, all arriving at once, will do under
    ``migrated``, forecast from the history so far (as the demo does before each stage)."""
    profile = profile_of(
        learn(history),
        [Arrival(0.0, t) for t in tenants],
        name="next stage",
        source="ledger history so far",
        same_machine=same_machine,
        cycle_seconds=config.cycle_seconds,
        budget=config.budget,
    )
    ledger = new_ledger()
    try:
        return simulate(profile, migrated, config, ledger)
    finally:
        ledger.close()
