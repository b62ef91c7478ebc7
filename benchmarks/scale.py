"""Memory and scale: a controller's peak RSS after 1,000,000 conversions, and cycle time as the ledger grows.

Inputs, built here in a temporary directory: a flag file listing 10,000 of 20,000 tenants, a
SQLite ledger on disk, and a backend per path in memory (``harness.MemoryBackend``: a conversion
runs for one cycle, then succeeds; the backend forgets it once reported, so it costs the same at
the millionth conversion as at the first).

The run: before each cycle, 1,000 new conversions are taken in with ``SQLiteLedger.accept``; then
``Controller.run_cycle`` reads the flag file once, claims them, polls what the backends hold,
records what finished and dispatches what it claimed. So each cycle does the same work while the
ledger behind it grows by 1,000 records, up to 1,000,000; then cycles run on until every
conversion has succeeded. Each cycle's wall-clock and CPU time (of the thread running it) is kept
with the ledger's size. At each checkpoint (10^4, 3·10^4, 10^5, 3·10^5, 10^6 records) the figure
is the median of the 9 cycles nearest to it, leaving out the first 3, which fill the pipeline.
The goal (at 10^6 within 1.5 times the time at 10^4) is judged on CPU time, which other load on a
shared machine disturbs far less than wall-clock time; both are printed. Peak RSS is this
process's own high water mark: the controller, its ledger connection and its backends all live
in it.

The query plans of every statement one cycle sends to SQLite are checked for full scans of the
conversions table.

Prints one JSON object with a table of the checkpoints, and writes the plot to each ``--plot``
(SVG drawn by hand; a ``.png`` path is drawn with matplotlib, part of the test extras).
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any

from harness import (
    FLAG_KEY,
    MemoryBackend,
    arguments,
    emit,
    goal,
    machine,
    median,
    peak_rss_mb,
)

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.engine.cycle import Controller, CycleConfig
from controller.ledger.sqlite import SQLiteLedger
from flags.document import values_document
from flags.file_source import FileFlagSource
from flags.lkg import LastKnownGood

GOAL_RSS_MB = 250.0
GOAL_GROWTH = 1.5
STANDARD_CHECKPOINTS = (10_000, 30_000, 100_000, 300_000, 1_000_000)
WARMUP, WINDOW = 3, 9


def _options(parser: Any) -> None:
    parser.add_argument("--conversions", type=int, default=1_000_000)
    parser.add_argument("--per-cycle", type=int, default=1_000, help="conversions taken in per cycle")
    parser.add_argument("--tenants", type=int, default=20_000)
    parser.add_argument("--migrated", type=int, default=10_000)
    parser.add_argument(
        "--plot",
        type=FsPath,
        action="append",
        default=[],
        help="where to write the plot (.svg or .png); repeat it for both",
    )


def checkpoints(total: int, per_cycle: int) -> list[int]:
    """The standard sizes this run reaches with a full window around them, and the total."""
    first = (WARMUP + WINDOW // 2 + 1) * per_cycle
    return sorted({c for c in STANDARD_CHECKPOINTS if first <= c <= total} | {total})


def window(samples: list[tuple[int, float, float]], at: int) -> tuple[float, float]:
    """Median wall and CPU seconds of the ``WINDOW`` cycles nearest ledger size ``at``, after warm-up."""
    picked = sorted(samples[WARMUP:], key=lambda s: abs(s[0] - at))[:WINDOW]
    return median(s[1] for s in picked), median(s[2] for s in picked)


def query_plans(ledger: SQLiteLedger, controller: Controller) -> dict[str, list[str]]:
    """Run one cycle with SQLite's trace on; return the statements whose plans scan or sort."""
    db = ledger._connection()  # the cycle runs on this thread, so on this connection
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    try:
        controller.run_cycle()
    finally:
        db.set_trace_callback(None)
    scans, sorts = set(), set()
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
            continue
        for row in db.execute("EXPLAIN QUERY PLAN " + sql):
            detail = str(row[-1])
            flat = " ".join(sql.split())
            shape = flat[flat.find(" FROM ") + 1 :] if " FROM " in flat else flat[:120]
            # A table-valued function over the statement's own argument (the ids of a batch, as
            # JSON) is walked, not scanned: only a scan of a real table counts.
            if detail.startswith("SCAN ") and "CONSTANT ROW" not in detail and "VIRTUAL TABLE" not in detail:
                scans.add(f"{shape} -> {detail}")
            if "TEMP B-TREE" in detail:
                sorts.add(f"{shape} -> {detail}")
    return {"full_scans": sorted(scans), "sorts": sorted(sorts)}


def run(workdir: FsPath, args: Any) -> dict[str, Any]:
    rng = random.Random(5)
    migrated = rng.sample(range(1, args.tenants + 1), args.migrated)
    flag_file = workdir / "flags.json"
    flag_file.write_text(json.dumps(values_document(FLAG_KEY, True, migrated)))
    ledger = SQLiteLedger(workdir / "ledger.db")
    backends = {Path.LEGACY: MemoryBackend(Path.LEGACY), Path.NEW: MemoryBackend(Path.NEW)}
    big = 10 * args.per_cycle  # the budget is not what this measures: let every cycle dispatch all
    controller = Controller(
        ledger=ledger,
        flags=LastKnownGood(FileFlagSource(flag_file, FLAG_KEY, time.time), ledger, time.time),
        backends=dict(backends),
        config=CycleConfig(budget=big, max_claims=big, max_batch_items=big, legacy_max_threads=big),
    )

    def cycle() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.thread_time()
        report = controller.run_cycle()
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        if report.errors or report.held:
            raise RuntimeError(f"cycle failed: {report}")
        for backend in backends.values():
            backend.tick()
        return wall, cpu

    samples: list[tuple[int, float, float]] = []  # (records in the ledger, wall s, cpu s)
    taken = 0
    plans: dict[str, list[str]] = {}
    try:
        while taken < args.conversions:
            n = min(args.per_cycle, args.conversions - taken)
            batch = [
                ConversionRequest(
                    f"conv-{taken + i:08d}", rng.randint(1, args.tenants), {"report": "monthly"}
                )
                for i in range(n)
            ]
            ledger.accept(batch, time.time())
            taken += n
            if taken == args.conversions // 2 and not plans:
                plans = query_plans(ledger, controller)  # mid-run, with every state present
                for backend in backends.values():
                    backend.tick()
                continue
            wall, cpu = cycle()
            samples.append((taken, wall, cpu))
        drain = 0
        while ledger.counts().state(ConversionState.SUCCEEDED) < args.conversions and drain < 10:
            cycle()
            drain += 1
        counts = ledger.counts()
        size_mb = sum(f.stat().st_size for f in workdir.glob("ledger.db*")) / 2**20
    finally:
        ledger.close()
    return {
        "samples": samples,
        "succeeded": counts.state(ConversionState.SUCCEEDED),
        "other_states": {
            s.value: counts.state(s) for s in ConversionState if s is not ConversionState.SUCCEEDED
        },
        "submitted": sum(b.submitted for b in backends.values()),
        "ledger_mb": round(size_mb, 1),
        "plans": plans,
    }


# -- the plot ------------------------------------------------------------------------------------


def plot_svg(path: FsPath, samples: list[tuple[int, float, float]], table: list[dict[str, Any]]) -> None:
    """Cycle time against ledger size on a log axis: every cycle, and the checkpoint medians."""
    import math

    w, h, left, right, top, bottom = 720, 400, 70, 20, 40, 50
    steady = samples[WARMUP:]
    x0, x1 = math.log10(steady[0][0]), math.log10(steady[-1][0])
    # Scaled to the medians, not to the worst cycle: on a shared machine a few cycles wait long
    # for the CPU, and they would flatten everything else (they are clipped at the top).
    ymax = max(3 * max(r["wall_ms"] for r in table), 1.3 * table[0]["cpu_ms"] * GOAL_GROWTH)

    def px(n: float) -> float:
        return left + (math.log10(n) - x0) / max(x1 - x0, 1e-9) * (w - left - right)

    def py(ms: float) -> float:
        return h - bottom - min(ms, ymax) / ymax * (h - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">cutover cycle time as the SQLite ledger grows</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
        f'<text x="{(w + left) / 2}" y="{h - 12}" text-anchor="middle">records in the ledger (log)</text>',
        f'<text x="16" y="{(h + top - bottom) / 2}" transform="rotate(-90 16 {(h + top - bottom) / 2})" '
        'text-anchor="middle">ms per cycle</text>',
    ]
    for e in range(math.ceil(x0), math.floor(x1) + 1):
        x = px(10**e)
        parts.append(f'<line x1="{x}" y1="{h - bottom}" x2="{x}" y2="{h - bottom + 5}" stroke="black"/>')
        parts.append(f'<text x="{x}" y="{h - bottom + 18}" text-anchor="middle">10^{e}</text>')
    magnitude = 10 ** math.floor(math.log10(ymax / 4))
    step = next(m * magnitude for m in (1, 2, 5, 10) if ymax / (m * magnitude) <= 6)
    for i in range(int(ymax // step) + 1):
        ms = i * step
        parts.append(f'<text x="{left - 6}" y="{py(ms) + 4:.1f}" text-anchor="end">{ms:g}</text>')
        parts.append(
            f'<line x1="{left}" y1="{py(ms):.1f}" x2="{w - right}" y2="{py(ms):.1f}" stroke="#eee"/>'
        )
    for name, column, colour in (("wall", 1, "#5a84b0"), ("cpu", 2, "#c0703a")):
        ms = [s[column] * 1000 for s in steady]
        running = [median(ms[max(0, i - 4) : i + 5]) for i in range(len(ms))]
        points = " ".join(f"{px(s[0]):.1f},{py(m):.1f}" for s, m in zip(steady, running, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        medians = [(row["records"], row[f"{name}_ms"]) for row in table]
        for n, ms in medians:
            parts.append(f'<circle cx="{px(n):.1f}" cy="{py(ms):.1f}" r="4" fill="{colour}" stroke="black"/>')
    limit = table[0]["cpu_ms"] * GOAL_GROWTH
    parts.append(
        f'<line x1="{left}" y1="{py(limit):.1f}" x2="{w - right}" y2="{py(limit):.1f}" '
        'stroke="red" stroke-dasharray="4 4"/>'
    )
    parts.append(
        f'<text x="{left + 6}" y="{py(limit) - 4:.1f}" fill="red">'
        f"goal: CPU per cycle at most {GOAL_GROWTH} x the first checkpoint's</text>"
    )
    parts.append(
        f'<text x="{w - right}" y="{top}" text-anchor="end">'
        '<tspan fill="#5a84b0">wall-clock</tspan> and <tspan fill="#c0703a">CPU</tspan> '
        "ms per cycle, running median of 9; dots: checkpoints</text>"
    )
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def plot_png(path: FsPath, samples: list[tuple[int, float, float]], table: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"--plot {path}: a PNG needs matplotlib; give an .svg path instead") from exc
    fig, ax = plt.subplots(figsize=(8, 4.5))
    steady = samples[WARMUP:]
    xs = [s[0] for s in steady]
    for name, column in (("wall-clock", 1), ("CPU", 2)):
        ms = [s[column] * 1000 for s in steady]
        ax.plot(xs, [median(ms[max(0, i - 4) : i + 5]) for i in range(len(ms))], label=f"{name} per cycle")
    ax.plot([r["records"] for r in table], [r["cpu_ms"] for r in table], "o", label="CPU at checkpoints")
    ax.axhline(table[0]["cpu_ms"] * GOAL_GROWTH, color="red", ls="--", label="goal (CPU)")
    ax.set_ylim(0, max(3 * max(r["wall_ms"] for r in table), 1.3 * table[0]["cpu_ms"] * GOAL_GROWTH))
    ax.set_xscale("log")
    ax.set_xlabel("records in the ledger")
    ax.set_ylabel("ms per cycle (running median of 9)")
    ax.set_title("cutover cycle time as the SQLite ledger grows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = arguments(__doc__, _options)
    if args.smoke:
        args.conversions, args.per_cycle, args.tenants, args.migrated = 20_000, 200, 2_000, 1_000
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        result = run(FsPath(tmp), args)
    rss = peak_rss_mb()
    samples = result["samples"]
    table = []
    for at in checkpoints(args.conversions, args.per_cycle):
        wall, cpu = window(samples, at)
        table.append({"records": at, "wall_ms": round(wall * 1000, 2), "cpu_ms": round(cpu * 1000, 2)})
    first, last = table[0], table[-1]
    growth_cpu = last["cpu_ms"] / first["cpu_ms"]
    growth_wall = last["wall_ms"] / first["wall_ms"]
    for plot in args.plot:
        (plot_png if plot.suffix.lower() == ".png" else plot_svg)(plot, samples, table)
    emit(
        {
            "benchmark": "scale",
            "smoke": args.smoke,
            "machine": machine(),
            "inputs": {
                "conversions": args.conversions,
                "per_cycle": args.per_cycle,
                "tenants": args.tenants,
                "migrated_tenants": args.migrated,
                "cycles": len(samples),
            },
            "peak_rss_mb": rss,
            "ledger_mb": result["ledger_mb"],
            "cycle_ms": table,
            "growth": {"cpu": round(growth_cpu, 2), "wall": round(growth_wall, 2)},
            "goals": {
                "peak_rss_mb": goal(rss, GOAL_RSS_MB, "<"),
                f"cpu_cycle_time_{last['records']}_over_{first['records']}": goal(
                    growth_cpu, GOAL_GROWTH, "<="
                ),
            },
            "checks": {
                "all_succeeded": result["succeeded"] == args.conversions,
                "nothing_left_over": not any(result["other_states"].values()),
                "submitted_once_each": result["submitted"] == args.conversions,
                "query_plans": result["plans"],
            },
            "plots": [str(plot) for plot in args.plot],
        }
    )


if __name__ == "__main__":
    main()
