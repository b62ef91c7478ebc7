"""``cutover gate``: is it safe to move the next rollout group? And the gate that ``cutover flag plan``
and ``advance`` consult.

Thin: reads the plan, the flag in force and the ledger's finished conversions, asks
``controller.engine.gates`` for the verdict and prints it. Exit status 0 on pass, 1 on fail, 2 on
inconclusive, so that a pipeline can use it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from controller.cli.common import console, emit_json, settings
from controller.core.errors import CutoverError
from controller.core.gates import GateReport, GateVerdict
from controller.core.ports import ShadowStore
from controller.core.schedule import parse_duration
from controller.settings import Settings
from flags.rollout import RolloutPlan, load_plan

out = console()
EXIT = {GateVerdict.PASS: 0, GateVerdict.FAIL: 1, GateVerdict.INCONCLUSIVE: 2}
_MARK = {"pass": "[green]✓[/]", "fail": "[red]✗[/]", "inconclusive": "[yellow]?[/]"}
_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}


def plan_of(cfg: Settings) -> RolloutPlan | None:
    """The rollout plan the settings name, or None without one."""
    return load_plan(cfg.rollout_file) if cfg.rollout_file is not None else None


def judge_now(
    cfg: Settings,
    plan: RolloutPlan | None,
    migrated: frozenset[int],
    *,
    window_seconds: float | None = None,
    group: str | None = None,
) -> GateReport:
    """The gate over ``migrated`` from the configured ledger. A ledger that does not exist yet, or
    cannot be opened, gives no evidence: the groups already moved are then inconclusive."""
    from controller.engine.gates import evaluate, evaluate_rows, with_problem

    now = time.time()
    path = cfg.sqlite_path
    problem = ""
    if path is not None and not path.exists():
        problem = f"no ledger at {path} yet: no evidence"  # opening one would create it
    else:
        from controller.bootstrap import make_ledger

        try:
            ledger = make_ledger(cfg)
        except CutoverError as exc:
            problem = f"ledger: {exc}"
        else:
            try:
                parity = None
                if plan is not None and isinstance(ledger, ShadowStore):
                    from controller.engine.shadows import gate_parity

                    parity = gate_parity(ledger, plan)
                return evaluate(
                    ledger, plan, migrated, now, window_seconds=window_seconds, group=group, parity=parity
                )
            finally:
                ledger.close()
    report = evaluate_rows([], plan, migrated, now, window_seconds=window_seconds, group=group)
    return with_problem(report, problem) if migrated else report


def _migrated(cfg: Settings) -> frozenset[int]:
    """The tenants the controllers route to the new path: the flag read as ``cutover route`` reads it."""
    from controller.bootstrap import make_flag_source, make_ledger
    from flags.lkg import LastKnownGood

    ledger = make_ledger(cfg)
    try:
        snapshot = LastKnownGood(make_flag_source(cfg, time.time), ledger, time.time).read().snapshot
    finally:
        ledger.close()
    if snapshot is None or not snapshot.enabled:
        return frozenset()
    return snapshot.tenant_ids


def gate_cmd(
    group: Annotated[str | None, typer.Option("--group", help="Judge only this rollout group.")] = None,
    window: Annotated[
        str | None,
        typer.Option(
            "--window",
            help="Judge the conversions finished in this last stretch (24h, 3d, ...) instead of since "
            "each group was last moved (at most 7 days).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Is it safe to move the next group? Exit 0 on pass, 1 on fail, 2 on inconclusive."""
    cfg = settings()
    seconds = parse_duration(window, "--window") if window is not None else None
    plan = plan_of(cfg)
    report = judge_now(cfg, plan, _migrated(cfg), window_seconds=seconds, group=group)
    if as_json:
        emit_json(report.to_json())
    else:
        print_report(report.to_json())
    raise typer.Exit(EXIT[report.verdict])


def print_report(doc: dict[str, Any]) -> None:
    """The gate as a table per group and its reasons, as an on-call engineer reads it."""
    verdict = doc["verdict"]
    out.print(f"gate: [{_STYLE[verdict]}]{verdict.upper()}[/]")
    if not doc["groups"]:
        for reason in doc["reasons"]:
            out.print(f"  {reason}", markup=False, highlight=False)
        return
    table = Table(
        "group", "migrated", "verdict", "new: finished", "failed", "p50", "old: finished", "failed", "p50"
    )
    for g in doc["groups"]:
        new, old = g["new"], g["legacy"]
        table.add_row(
            g["name"],
            f"{g['migrated']}/{g['tenants']}",
            f"[{_STYLE[g['verdict']]}]{g['verdict']}[/]",
            str(new["finished"]),
            str(new["failed"]),
            _seconds(new["duration_p50_seconds"]),
            str(old["finished"]),
            str(old["failed"]),
            _seconds(old["duration_p50_seconds"]),
        )
    out.print(table)
    for g in doc["groups"]:
        out.print(f"[bold]{g['name']}[/] ({g['legacy']['basis']} as the old path):")
        for check in g["checks"]:
            out.print(f"  {_MARK[check['verdict']]} ", end="")
            out.print(check["reason"], markup=False, highlight=False, soft_wrap=True)
    for reason in doc["reasons"]:
        if not any(reason.startswith(f"{g['name']}: ") for g in doc["groups"]):
            out.print(reason, markup=False, highlight=False)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}s"


__all__ = ["EXIT", "gate_cmd", "judge_now", "plan_of", "print_report"]
