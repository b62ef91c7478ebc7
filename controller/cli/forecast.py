"""``cutover forecast``: what moving tenants would do to the peak, before anyone moves them.

Thin: works out the flag as it is (the version store in force) and as it would be (the rollout
plan through a group, or tenants added), picks the profile (the ledger's history or a file),
runs ``controller.engine.forecast`` on in-memory ledgers, and prints a side-by-side table, JSON,
or plots. Changes nothing anywhere.
"""

from __future__ import annotations

import time
from pathlib import Path as FsPath
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from controller.cli.common import emit_json, settings
from controller.core.errors import ConfigError, InputError
from controller.engine.forecast import Forecast, Scenario, forecast, next_group, sim_config
from controller.engine.history import Window, history_profile
from controller.engine.pricing import JobShape, load_prices
from controller.engine.profile import Profile
from controller.engine.profile_file import load_profile
from controller.ledger.memory import MemoryLedger
from controller.settings import Settings
from flags import ops
from flags.holds import holds
from flags.rollout import RolloutPlan, load_plan, parse_tenants
from flags.versions import FlagContent

out = Console()
err = Console(stderr=True)

HISTORY_PROFILES = ("last-peak", "last-7d")


def _plan(cfg: Settings, required: bool) -> RolloutPlan | None:
    if cfg.rollout_file is None or (not required and not cfg.rollout_file.exists()):
        if required:
            raise InputError(
                "no rollout plan configured: set CUTOVER_ROLLOUT_FILE to a rollout.yaml or .json"
            )
        return None
    return load_plan(cfg.rollout_file)


def profile_for(cfg: Settings, name: str, now: float) -> tuple[Profile, JobShape | None]:
    """The profile ``--profile`` names: the ledger's history, or a file (with its job shape)."""
    if name in HISTORY_PROFILES:
        path = cfg.sqlite_path
        if path is not None and not path.exists():
            raise InputError(
                f"--profile {name}: there is no ledger at {path} to learn from; give --profile FILE"
            )
        from controller.bootstrap import make_ledger

        ledger = make_ledger(cfg)
        try:
            window: Window = "last-peak" if name == "last-peak" else "last-7d"
            local = cfg.backend == "local"
            return history_profile(
                ledger, window, now, same_machine=local, cycle_seconds=cfg.cycle_seconds, budget=cfg.budget
            ), None
        finally:
            ledger.close()
    file = FsPath(name)
    if not file.exists():
        raise InputError(f"--profile {name}: neither last-peak, last-7d nor an existing file")
    return load_profile(file)


def run_forecast(
    cfg: Settings,
    before: frozenset[int] | None,
    after: frozenset[int] | None,
    *,
    profile: str = "last-peak",
    budget: int | None = None,
    prices: FsPath | None = None,
    seed: int = 0,
) -> Forecast:
    """The forecast of moving from ``before`` to ``after`` (flag tenants; None: no flag)."""
    chosen, shape = profile_for(cfg, profile, time.time())
    config = sim_config(cfg, budget=budget, seed=seed)
    shape = shape or JobShape(vcpus=config.vcpus_per_job)
    return forecast(
        chosen,
        [Scenario("before", before), Scenario("after", after)],
        config,
        MemoryLedger,
        prices=load_prices(prices),
        shape=shape,
    )


def flag_now(cfg: Settings) -> tuple[FlagContent | None, Any]:
    """The flag content in force (None before any version) and the version store it came from."""
    from controller.cli.flag import make_store

    store = make_store(cfg, "file" if cfg.flag_source == "file" else "appconfig")
    current = store.in_force()
    return (current.content if current else None), store


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The forecast in a few lines, as ``cutover flag plan`` prints it beside the tenants it moves."""
    b, a = doc["before"], doc["after"]
    p = doc["profile"]
    lines = [
        f"forecast ({p['name']}: {p['conversions']} conversions of {p['tenants']} tenants, "
        f"budget {p['budget']}): "
        f"makespan {_duration(b['makespan_seconds'])} → {_duration(a['makespan_seconds'])}; "
        f"peak at work {_peak(b)} → {_peak(a)}; "
        f"cost {_money(b['cost'])} → {_money(a['cost'])}",
    ]
    lines.extend(f"warning: {w}" for w in doc["warnings"])
    return lines


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def _peak(side: dict[str, Any]) -> str:
    peak = side["peak_in_flight"]
    return f"{peak['total']} (old {peak['legacy']}, new {peak['new']})"


def _money(cost: dict[str, Any]) -> str:
    return f"{cost['total']:.2f} {cost['currency']}"


def print_table(doc: dict[str, Any]) -> None:
    """The side-by-side table of ``before`` and ``after``."""
    p = doc["profile"]
    table = Table(
        "",
        "before",
        "after",
        title=f"forecast: {p['name']} — {p['conversions']} conversions, {p['tenants']} tenants, "
        f"budget {p['budget']}",
    )
    b, a = doc["before"], doc["after"]

    def row(label: str, fn: Any) -> None:
        table.add_row(label, fn(b), fn(a))

    row(
        "tenants in the flag",
        lambda s: "no flag" if s["migrated_tenants"] is None else str(s["migrated_tenants"]),
    )
    row("makespan", lambda s: _duration(s["makespan_seconds"]))
    for path in ("legacy", "new"):
        name = "old" if path == "legacy" else "new"
        row(f"{name} path: conversions", lambda s, path=path: str(s["conversions"][path]))
        row(f"{name} path: busy", lambda s, path=path: _duration(s["busy_seconds"][path]))
        row(
            f"{name} path: peak / mean at work",
            lambda s, path=path: f"{s['peak_in_flight'][path]} / {s['mean_in_flight'][path]:.1f}",
        )
        row(f"{name} path: cost", lambda s, path=path: f"{s['cost'][path]:.2f} {s['cost']['currency']}")
    row(
        "both: peak / mean at work",
        lambda s: (
            f"{s['peak_in_flight']['total']} / {s['mean_in_flight']['total']:.1f} (budget {s['budget']})"
        ),
    )
    row(
        "queue wait p50 / p95",
        lambda s: " / ".join(_duration(s["queue_wait_seconds"][q] or 0) for q in ("p50", "p95")),
    )
    row("cost", lambda s: _money(s["cost"]))
    out.print(table)
    prices = doc["prices"]
    out.print(f"prices: {prices['file']} ({prices['region']}, as of {prices['as_of']})", highlight=False)
    for w in doc["warnings"]:
        out.print(f"[yellow]warning:[/] {w}", highlight=False)


def forecast_cmd(
    to_group: Annotated[
        str | None, typer.Option("--to-group", help="Move the plan's groups through this one.")
    ] = None,
    add_tenants: Annotated[
        str | None, typer.Option("--add-tenants", help="Tenants to move, e.g. 1001,1005-1010.")
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", help="last-peak, last-7d (the ledger's history) or a profile FILE.")
    ] = "last-peak",
    budget: Annotated[int | None, typer.Option("--budget", min=1, help="Default: CUTOVER_BUDGET.")] = None,
    plot: Annotated[
        list[FsPath] | None,
        typer.Option("--plot", help="Write a chart to FILE.png or FILE.svg (repeatable)."),
    ] = None,
    prices: Annotated[
        FsPath | None, typer.Option("--prices", help="A price table FILE in place of the shipped one.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="The simulation's seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Forecast a move: the peak with the flag as it is and as it would be, side by side."""
    from controller.cli.plots import check_plot_path, plot_forecast

    if to_group is not None and add_tenants:
        raise InputError("give --to-group or --add-tenants, not both")
    for path in plot or []:
        check_plot_path(path)
    cfg = settings()
    plan = _plan(cfg, required=to_group is not None or not add_tenants)
    store = None
    try:
        content, store = flag_now(cfg)
    except ConfigError:
        content = None
    before = content.migrated if content is not None else None
    if to_group is None and not add_tenants:
        assert plan is not None
        held = frozenset(holds(store)) if store is not None else frozenset()
        step = next_group(plan, before or frozenset(), held)
        if step is None:
            raise InputError("every rollout group is in the flag already; name tenants with --add-tenants")
        to_group = step[0]
    add = parse_tenants(add_tenants, "--add-tenants") if add_tenants else frozenset()
    if store is not None:  # held tenants stay out, as the advance would leave them
        after = ops.planned(store, plan, to_group=to_group, add=add)[0].migrated
    else:
        after = ops.target(content, plan, to_group=to_group, add=add).migrated
    result = run_forecast(cfg, before, after, profile=profile, budget=budget, prices=prices, seed=seed)
    doc = result.document
    doc["change"] = {
        "to_group": to_group,
        "tenants_added": sorted(after - (before or frozenset())),
        "conversions_moved": sum(
            1 for c in result.runs["after"].conversions if c.tenant_id in after - (before or frozenset())
        ),
    }
    for path in plot or []:
        plot_forecast(result.runs, doc["profile"]["budget"], path, f"forecast ({doc['profile']['name']})")
    if as_json:
        emit_json(doc)
        return
    print_table(doc)
    for path in plot or []:
        out.print(f"plot written to {path}", highlight=False)
