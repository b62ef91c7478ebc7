"""``cutover shadow``: the parity report of shadow runs, read from the ledger and the rollout plan
(the same report ``GET /shadow`` serves). Reads only."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from controller.cli.common import console, emit_json, settings
from controller.core.errors import ConfigError, NotFoundError

out = console()


def shadow_cmd(
    group: Annotated[str | None, typer.Option("--group", help="Only this rollout group.")] = None,
    tenant: Annotated[int | None, typer.Option("--tenant", help="Only this tenant.", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Shadow runs compared per group and tenant: samples, mismatches, the 95% bound, examples, noise."""
    from controller.bootstrap import make_ledger
    from controller.core.parity import UNGROUPED
    from controller.core.ports import ShadowStore
    from controller.engine.shadows import parity_report
    from flags.rollout import load_plan

    cfg = settings()
    plan = load_plan(cfg.rollout_file) if cfg.rollout_file is not None and cfg.rollout_file.exists() else None
    if (
        group is not None
        and group != UNGROUPED
        and (plan is None or group not in [g.name for g in plan.groups])
    ):
        raise NotFoundError(f"no rollout group {group!r} in the plan (CUTOVER_ROLLOUT_FILE)")
    ledger = make_ledger(cfg)
    try:
        if not isinstance(ledger, ShadowStore):
            raise ConfigError(f"CUTOVER_LEDGER: {cfg.ledger} keeps no shadow records")
        report = parity_report(ledger, plan, group=group, tenant=tenant)
    finally:
        ledger.close()
    if as_json:
        emit_json(report)
        return
    print_report(report)


def print_report(report: dict[str, Any]) -> None:
    """The report as tables: groups, then each mismatch, then the noise learned."""
    if not report["groups"]:
        out.print("no shadow runs compared yet")
        return
    table = Table("group", "samples", "mismatches", "rate ≤ (95%)", "parity", "why", title="shadow parity")
    for g in report["groups"]:
        table.add_row(
            g["name"],
            str(g["samples"]),
            str(g["mismatches"]),
            f"{g['mismatch_rate_upper95']:.2%}",
            g["parity"],
            g["parity_reason"],
        )
    out.print(table)
    examples = [(t["tenant_id"], e) for g in report["groups"] for t in g["tenants"] for e in t["examples"]]
    if examples:
        rows = Table("tenant", "conversion", "sheet", "cell", "legacy", "new", title="mismatches")
        for tenant_id, e in examples:
            rows.add_row(str(tenant_id), e["conversion_id"], e["sheet"], e["cell"], e["legacy"], e["new"])
        out.print(rows)
    if report["noise"]:
        noise = Table("sheet", "column", "A/A runs differing", "cells", title="noise learned from A/A runs")
        for n in report["noise"]:
            noise.add_row(n["sheet"], n["column"], f"{n['runs']} of {n['aa_samples']}", str(n["cells"]))
        out.print(noise)
