"""Routing throughput: conversions routed and claimed per second, ours against the naive way.

Inputs, built here in a temporary directory: 200,000 conversions over 20,000 tenants and a flag
listing 10,000 of them, served by a loopback HTTP server that answers as the AppConfig Agent does.

Ours: the requests are taken in with ``SQLiteLedger.accept`` in batches of 1,000 (timed apart, as
"intake"), then ``Controller.run_cycle`` runs until every one is claimed. Each cycle reads the flag
once from the agent (``flags.agent.AgentFlagSource``, through last-known-good), reads the intake as
two columns (ids, tenants), decides the cycle's tenants together by set operations and claims up to
20,000 conversions in one transaction, with the counters moved once for the batch; no backends are
attached, so a cycle is the flag read, the intake read, the decisions and the claim. The rate is
conversions over cycle time.

Naive, as a system without cutover does it: every conversion asks the agent for the flag (on a
kept-alive connection), decodes it, looks its tenant up by scanning the id list, and commits its
decision as its own row in its own transaction (SQLite on disk, WAL, synchronous=FULL, like the
ledger). It runs on the first 5,000 conversions only; its rate is per conversion, and the time it
would take for all of them is extrapolated from that rate.

The conversions are made batch by batch as they are taken in, from a seeded generator (so every
round and the naive side see the same ones), and not kept alive through the timed part.

Both sides run in this one process, alternating, for ``--rounds`` rounds on fresh files; the
figures are medians over the rounds. Rates are wall-clock; the ``cpu`` figures divide by the
process's CPU time instead, which shows the code's own cost on a machine shared with other work
(and leaves out the naive side's wait for each commit to reach the disk). ``--profile FILE``
runs the first round's cycles under cProfile on CPU time, writes its statistics to FILE
(``pstats``) and adds the functions with the most time of their own to the output; the profiler
slows Python code more than SQLite's, so take shares from it, not rates. Prints one JSON object.
"""

from __future__ import annotations

import cProfile
import gc
import itertools
import json
import os
import pstats
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

from harness import (
    APP,
    ENV,
    FLAG_KEY,
    PROFILE,
    Agent,
    Timer,
    arguments,
    emit,
    get_flag,
    goal,
    machine,
    median,
)

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.engine.cycle import Controller, CycleConfig
from controller.ledger.sqlite import SQLiteLedger
from flags.agent import AgentFlagSource
from flags.lkg import LastKnownGood

GOAL_RATE = 100_000
GOAL_RATIO = 100


def _options(parser: Any) -> None:
    parser.add_argument("--conversions", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=20_000)
    parser.add_argument("--migrated", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=5_000, help="conversions the naive side runs")
    parser.add_argument("--intake-batch", type=int, default=1_000)
    parser.add_argument("--claims-per-cycle", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=FsPath, help="cProfile the first round's cycles into this file")


def conversions(args: Any) -> Iterator[ConversionRequest]:
    """The same conversions on every call, made as they are taken in and then let go.

    Not kept in a list: 200,000 requests alive through the timed part would make each of the
    garbage collector's full passes walk them, a cost of the benchmark and not of the controller.
    """
    rng = random.Random(9)
    for i in range(args.conversions):
        yield ConversionRequest(f"conv-{i:07d}", rng.randint(1, args.tenants), {"report": "monthly-export"})


def ours(
    workdir: FsPath,
    agent: Agent,
    sample: list[ConversionRequest],
    args: Any,
    profiler: cProfile.Profile | None = None,
) -> dict[str, Any]:
    ledger = SQLiteLedger(workdir / "ledger.db")
    source = AgentFlagSource(f"http://127.0.0.1:{agent.port}", APP, ENV, PROFILE, FLAG_KEY, time.time)
    try:
        intake_seconds = 0.0
        stream = conversions(args)
        while batch := list(itertools.islice(stream, args.intake_batch)):
            t0 = time.perf_counter()
            ledger.accept(batch, time.time())
            intake_seconds += time.perf_counter() - t0
        del batch
        gc.collect()
        controller = Controller(
            ledger=ledger,
            flags=LastKnownGood(source, ledger, time.time),
            backends={},
            config=CycleConfig(max_claims=args.claims_per_cycle),
        )
        claimed, cycles = 0, []
        if profiler is not None:
            profiler.enable()
        with Timer() as route:
            while claimed < args.conversions:
                t0 = time.perf_counter()
                report = controller.run_cycle()
                cycles.append(time.perf_counter() - t0)
                if report.held or report.errors or not report.claimed:
                    raise RuntimeError(f"cycle stopped routing: {report}")
                claimed += sum(report.claimed.values())
        if profiler is not None:
            profiler.disable()
        counts = ledger.counts()
        paths = {r.conversion_id: ledger.get(r.conversion_id) for r in sample}
        return {
            "intake_per_s": args.conversions / intake_seconds,
            "route_claim_per_s": claimed / route.wall,
            "route_claim_cpu_per_s": claimed / route.cpu,
            "route_claim_seconds": route.wall,
            "cycles": len(cycles),
            "cycle_ms": 1000 * median(cycles),
            "claimed": counts.state(ConversionState.CLAIMED),
            "new": counts.path_state(Path.NEW, ConversionState.CLAIMED),
            "paths": {cid: (r.path.value if r and r.path else None) for cid, r in paths.items()},
        }
    finally:
        source.close()
        ledger.close()


def naive(workdir: FsPath, agent: Agent, requests: list[ConversionRequest]) -> dict[str, Any]:
    db = sqlite3.connect(workdir / "naive.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(
        "CREATE TABLE routes (conversion_id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL, "
        "path TEXT NOT NULL, flag_version TEXT, decided_at REAL NOT NULL)"
    )
    conn = agent.connect()
    paths: dict[str, str] = {}
    try:
        with Timer() as run:
            for req in requests:
                body, version = get_flag(conn)
                flag = json.loads(body)
                listed = flag.get("enabled") is True and req.tenant_id in flag.get("tenant_ids", [])
                path = "new" if listed else "legacy"
                db.execute(
                    "INSERT INTO routes VALUES (?, ?, ?, ?, ?)",
                    (req.conversion_id, req.tenant_id, path, version, time.time()),
                )
                paths[req.conversion_id] = path
    finally:
        conn.close()
        db.close()
    return {"per_s": len(requests) / run.wall, "cpu_per_s": len(requests) / run.cpu, "paths": paths}


def main() -> None:
    args = arguments(__doc__, _options)
    if args.smoke:
        args.conversions, args.tenants, args.migrated, args.naive = 4_000, 400, 200, 200
        args.claims_per_cycle, args.rounds = 1_000, 1
    migrated = sorted(random.Random(8).sample(range(1, args.tenants + 1), args.migrated))
    listed = set(migrated)
    expected_new = sum(1 for r in conversions(args) if r.tenant_id in listed)
    sample = list(itertools.islice(conversions(args), args.naive))
    rounds_ours: list[dict[str, Any]] = []
    rounds_naive: list[dict[str, Any]] = []
    load_at_start = round(os.getloadavg()[0], 2)
    # On CPU time: on a shared machine, wall-clock shares would follow the other work's load.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    with Agent(migrated, version="7") as agent:
        for n in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="bench-route-") as tmp:
                rounds_ours.append(ours(FsPath(tmp), agent, sample, args, profiler if n == 0 else None))
                gc.collect()
                rounds_naive.append(naive(FsPath(tmp), agent, sample))

    rate = median(r["route_claim_per_s"] for r in rounds_ours)
    naive_rate = median(r["per_s"] for r in rounds_naive)
    ratio = rate / naive_rate
    cpu_ratio = median(r["route_claim_cpu_per_s"] for r in rounds_ours) / median(
        r["cpu_per_s"] for r in rounds_naive
    )
    emit(
        {
            "benchmark": "route_claim",
            "smoke": args.smoke,
            "machine": machine() | {"load_average_1m_at_start": load_at_start},
            "inputs": {
                "conversions": args.conversions,
                "tenants": args.tenants,
                "migrated_tenants": args.migrated,
                "intake_batch": args.intake_batch,
                "claims_per_cycle": args.claims_per_cycle,
                "rounds": args.rounds,
            },
            "ours": {
                "route_claim_per_s": round(rate),
                "route_claim_cpu_per_s": round(median(r["route_claim_cpu_per_s"] for r in rounds_ours)),
                "route_claim_seconds": round(median(r["route_claim_seconds"] for r in rounds_ours), 3),
                "cycles": rounds_ours[0]["cycles"],
                "cycle_ms": round(median(r["cycle_ms"] for r in rounds_ours), 1),
                "intake_per_s": round(median(r["intake_per_s"] for r in rounds_ours)),
            },
            "naive": {
                "per_s": round(naive_rate, 1),
                "cpu_per_s": round(median(r["cpu_per_s"] for r in rounds_naive), 1),
                "measured_conversions": len(sample),
                "extrapolated_seconds_for_all": round(args.conversions / naive_rate, 1),
                "note": f"measured on the first {len(sample)} conversions, extrapolated per conversion",
            },
            "ratio": round(ratio, 1),
            "ratio_cpu": round(cpu_ratio, 1),
            "goals": {
                "route_claim_per_s": goal(rate, GOAL_RATE),
                "ratio_to_naive": goal(ratio, GOAL_RATIO),
            },
            "checks": {
                "all_claimed": all(r["claimed"] == args.conversions for r in rounds_ours),
                "new_path_matches_flag": all(r["new"] == expected_new for r in rounds_ours),
                "naive_agrees": all(
                    o["paths"] == n["paths"] for o, n in zip(rounds_ours, rounds_naive, strict=True)
                ),
            },
        }
        | ({"profile": profile(profiler, args.profile)} if profiler is not None else {})
    )


def profile(profiler: cProfile.Profile, target: FsPath) -> dict[str, Any]:
    """Write the statistics and name the functions with the most time of their own."""
    profiler.dump_stats(target)
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    return {
        "file": str(target),
        "tool": "cProfile, on process CPU time",
        "seconds": round(total, 3),
        "own_time": [
            {"function": pstats.func_std_string(func), "calls": row[1], "share": round(row[2] / total, 3)}
            for func, row in rows
        ],
    }


if __name__ == "__main__":
    main()
