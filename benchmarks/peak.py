"""A month-start peak through the simulator: how close does the budget split come to the best
possible makespan, and what do the alternatives do?

One run compares, on the same conversions (same arrivals, same durations, same provisioning
draws): cutover's admission (the project's own cycle and ``split_budget``); the reference
migration's static setup (a legacy build with a fixed thread count next to a fixed ``maxvCpus``,
which breaks the one-budget promise: by how much is reported); a static 50/50 split of the budget;
and the lower bound ``max(total work / budget, longest conversion)``, also with the new path's
provisioning added (every Fargate job provisions in its slot). Figures per policy: makespan and
its ratio to each bound, budget utilisation while work waits, the peak at work against the budget,
and the CPU the simulation took.

    python benchmarks/peak.py                      # 10,000 conversions, 200 tenants, budget 20
    python benchmarks/peak.py --budget 100
    python benchmarks/peak.py --smoke              # seconds
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import Any

from harness import Timer, arguments, emit, goal, machine  # also puts the repository on sys.path

from controller.core.admission import Load, Split, build_items
from controller.core.domain import Path
from controller.engine.profile import Behaviour, Durations, Profile, Work, spread
from controller.engine.simulation import SimConfig, SimResult, simulate, summary
from controller.ledger.memory import MemoryLedger


def _args(parser: Any) -> None:
    parser.add_argument("--conversions", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--within", type=float, default=300.0, help="seconds over which they arrive")
    parser.add_argument("--budget", type=int, default=20, help="the reference's 40 maxvCpus / 2 per job")
    parser.add_argument("--median", type=float, default=60.0, help="median duration, seconds")
    parser.add_argument("--p99", type=float, default=1200.0, help="p99 duration, seconds")
    parser.add_argument("--cycle", type=float, default=5.0, help="CUTOVER_CYCLE_SECONDS")
    parser.add_argument("--max-threads", type=int, default=16, help="CUTOVER_LEGACY_MAX_THREADS")
    parser.add_argument("--build-timeout-hours", type=float, default=8.0)
    parser.add_argument("--reference-threads", type=int, default=0, help="default: the budget")
    parser.add_argument("--reference-jobs", type=int, default=0, help="maxvCpus / vCPUs per job (the budget)")
    parser.add_argument("--seed", type=int, default=1)


def reference_split(threads: int, jobs: int) -> Any:
    """The reference setup: a legacy build always gets ``threads``, the new path always ``jobs``."""

    def split(budget: int, load: Load, max_build_threads: int) -> Split:
        return Split(threads if load.legacy_waiting else 0, jobs)

    return split


def half_split(budget: int, load: Load, max_build_threads: int) -> Split:
    """A static 50/50 split: the old path's half goes to builds as it frees, the new path keeps its
    half; a build takes its part of the backlog as cutover's do, so only the split differs."""
    legacy_half = budget // 2
    threads = min(max(0, legacy_half - load.legacy_in_use), load.legacy_waiting, max_build_threads)
    if threads == 0:
        return Split(0, budget - legacy_half)
    items = build_items(threads, load.legacy_waiting, load.legacy_in_use)
    return Split(threads, budget - legacy_half, items)


def bounds(profile: Profile, works: list[Work], migrated: frozenset[int], budget: int) -> dict[str, float]:
    """The lower bounds of the makespan for these conversions on these paths."""
    work = longest = provisioning = 0.0
    for w in works:
        path = Path.NEW if w.tenant_id in migrated else Path.LEGACY
        d = profile.duration(w, path, 1)
        work += d
        p = profile.provisioning_for(Path.NEW, w.provisioning_draw(1)) if path is Path.NEW else 0.0
        provisioning += p
        longest = max(longest, w.arrives_at + d + p)
    return {
        "total_work_seconds": round(work, 1),
        "new_path_provisioning_seconds": round(provisioning, 1),
        "bound_seconds": round(max(work / budget, longest), 1),
        "bound_with_provisioning_seconds": round(max((work + provisioning) / budget, longest), 1),
        "list_schedule_seconds": round(list_schedule(profile, works, migrated, budget), 1),
    }


def list_schedule(profile: Profile, works: list[Work], migrated: frozenset[int], budget: int) -> float:
    """The makespan of an ideal scheduler that knows no durations either: every conversion, in the
    order it arrived, takes the first of ``budget`` slots to free up (provisioning, then its work),
    with no cycle, no build and no path in the way. What is left between it and the bound is the
    last conversions' own length, which nothing that cannot see durations in advance avoids."""
    slots = [0.0] * budget
    end = 0.0
    for w in sorted(works, key=lambda w: w.arrives_at):
        path = Path.NEW if w.tenant_id in migrated else Path.LEGACY
        p = profile.provisioning_for(Path.NEW, w.provisioning_draw(1)) if path is Path.NEW else 0.0
        start = max(heapq.heappop(slots), w.arrives_at)
        finish = start + p + profile.duration(w, path, 1)
        heapq.heappush(slots, finish)
        end = max(end, finish)
    return end - min((w.arrives_at for w in works), default=0.0)


def utilisation_while_waiting(run: SimResult, budget: int) -> float:
    """Work at once over the budget, averaged over the time some arrived conversion had not started."""
    starts = sorted(c.first_work_at for c in run.conversions if c.first_work_at is not None)
    arrivals = sorted(c.arrived_at for c in run.conversions)
    busy = weight = 0.0
    i = j = 0
    for (t0, legacy, new), (t1, _, _) in zip(run.changes, run.changes[1:], strict=False):
        while i < len(arrivals) and arrivals[i] <= t0:
            i += 1
        while j < len(starts) and starts[j] <= t0:
            j += 1
        if i > j:  # someone has arrived and not started
            busy += (legacy + new) * (t1 - t0)
            weight += t1 - t0
    return busy / (budget * weight) if weight else 1.0


def policy(run: SimResult, budget: int, bound: dict[str, float]) -> dict[str, Any]:
    s = summary(run)
    return {
        "makespan_seconds": s["makespan_seconds"],
        "ratio_to_bound": round(run.makespan / bound["bound_seconds"], 4),
        "ratio_to_bound_with_provisioning": round(run.makespan / bound["bound_with_provisioning_seconds"], 4),
        "ratio_to_list_schedule": round(run.makespan / bound["list_schedule_seconds"], 4),
        "utilisation_while_work_waits": round(utilisation_while_waiting(run, budget), 4),
        "peak_in_flight": s["peak_in_flight"],
        "peak_slots": s["peak_slots"],
        "budget": budget,
        "over_budget_by": max(0, run.peak() - budget),
        "over_budget_percent": round(100.0 * max(0, run.peak() - budget) / budget, 1),
        "mean_in_flight": s["mean_in_flight"],
        "queue_wait_seconds": s["queue_wait_seconds"],
        "builds": s["builds"],
        "failed": s["failed"],
        "simulation": s["simulation"],
    }


def main() -> None:
    args = arguments(__doc__, _args)
    if args.smoke:
        args.conversions, args.tenants, args.budget = 600, 40, 20
    tenants = list(range(1001, 1001 + args.tenants))
    migrated = frozenset(tenants[::2])
    same = Behaviour(Durations(args.median, args.p99))
    profile = Profile(
        "month-start peak",
        "benchmarks/peak.py",
        {Path.LEGACY: same, Path.NEW: same},
        tuple(spread(args.conversions, tenants, args.within, args.seed, 1.0)),
    )
    base = SimConfig(
        budget=args.budget,
        cycle_seconds=args.cycle,
        legacy_max_threads=args.max_threads,
        build_timeout_seconds=args.build_timeout_hours * 3600,
        seed=args.seed,
    )
    works = profile.workload(args.seed)
    bound = bounds(profile, works, migrated, args.budget)
    ref_threads = args.reference_threads or args.budget
    ref_jobs = args.reference_jobs or args.budget
    runs: dict[str, tuple[SimConfig, int]] = {
        "cutover": (base, args.budget),
        "reference_static": (
            replace(
                base,
                budget=ref_threads + ref_jobs,
                split=reference_split(ref_threads, ref_jobs),
                legacy_max_threads=ref_threads,
            ),
            args.budget,
        ),
        "static_half": (replace(base, split=half_split), args.budget),
    }
    out: dict[str, Any] = {}
    with Timer() as total:
        for name, (config, budget) in runs.items():
            out[name] = policy(simulate(profile, migrated, config, MemoryLedger()), budget, bound)
    cutover = out["cutover"]
    per_thousand = cutover["simulation"]["cpu_seconds"] / (args.conversions / 1000)
    emit(
        {
            "benchmark": "peak",
            "smoke": args.smoke,
            "inputs": {
                "conversions": args.conversions,
                "tenants": args.tenants,
                "migrated_tenants": len(migrated),
                "arrive_within_seconds": args.within,
                "budget": args.budget,
                "durations": {"median_seconds": args.median, "p99_seconds": args.p99, "log_normal": True},
                "provisioning_seconds": {"new": [30, 120], "legacy": 60},
                "cycle_seconds": args.cycle,
                "legacy_max_threads": args.max_threads,
                "build_timeout_hours": args.build_timeout_hours,
                "reference": {"legacy_threads": ref_threads, "new_path_jobs": ref_jobs},
                "seed": args.seed,
            },
            "bound": bound,
            "policies": out,
            "goals": {
                "ratio_to_bound_with_provisioning": goal(
                    cutover["ratio_to_bound_with_provisioning"], 1.05, "<="
                ),
                "cpu_seconds_per_1000_conversions": goal(per_thousand, 1.0, "<"),
            },
            "checks": {
                "cutover_within_budget": cutover["over_budget_by"] == 0,
                "static_half_within_budget": out["static_half"]["over_budget_by"] == 0,
                "cutover_every_conversion_succeeded": cutover["failed"] == 0,
            },
            "seconds": round(total.wall, 2),
            "cpu_seconds": round(total.cpu, 2),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
