"""``cutover decommission``: may the old path be switched off? Evidence, not opinion.

Thin: opens the ledger, the flag's version store and, on AWS, the old path's CodeBuild adapter,
asks ``controller.engine.decommission`` for the evidence, prints it check by check (or as JSON)
and exits 0 when ready, 1 when not. Changes nothing.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from controller.cli.common import emit_json, settings
from controller.core.domain import Path
from controller.core.errors import InputError
from controller.core.ports import Backend, BuildHistory, Inventory
from controller.engine.decommission import evidence, groups_drained
from controller.settings import Settings
from flags.rollout import RolloutPlan, load_plan

out = Console()


def _plan(cfg: Settings, group: str | None) -> RolloutPlan | None:
    path = cfg.rollout_file
    if path is None or (group is None and not path.exists()):
        if group is not None:
            raise InputError("--group needs a rollout plan: set CUTOVER_ROLLOUT_FILE")
        return None
    return load_plan(path)


def _backends(cfg: Settings) -> dict[Path, Backend]:
    """On AWS, the adapters (CodeBuild lists the legacy project's builds); locally, none is needed."""
    if cfg.backend != "aws":
        return {}
    from controller.bootstrap import make_backends

    return make_backends(cfg, time.time)


def decommission_cmd(
    days: Annotated[float, typer.Option("--days", min=0, help="The quiet period asked for, in days.")] = 14,
    group: Annotated[str | None, typer.Option("--group", help="The evidence for one rollout group.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Whether the old path may be switched off, with the evidence; exit 0 when ready, 1 when not."""
    from controller.bootstrap import make_ledger
    from controller.cli.flag import make_store

    cfg = settings()
    plan = _plan(cfg, group)
    chosen = plan.group(group) if plan is not None and group is not None else None
    path = cfg.sqlite_path
    if path is not None and not path.exists():
        raise InputError(f"CUTOVER_LEDGER: no ledger at {path}; there is no history to judge from")
    store = make_store(cfg, "file" if cfg.flag_source == "file" else "appconfig")
    backends = _backends(cfg)
    ledger = make_ledger(cfg)
    try:
        legacy = backends.get(Path.LEGACY)
        doc = evidence(
            ledger,
            store,
            now=time.time(),
            days=days,
            plan=plan,
            group=chosen,
            builds=legacy if isinstance(legacy, BuildHistory) else None,
            can_list=any(isinstance(b, Inventory) for b in backends.values()),
        )
        if plan is not None and chosen is None:
            doc["groups"] = groups_drained(ledger, store, plan, now=time.time(), days=days)
    finally:
        ledger.close()
        for backend in backends.values():
            backend.close()
    if as_json:
        emit_json(doc)
    else:
        _print(doc)
    if not doc["ready"]:
        raise typer.Exit(1)


def _print(doc: dict[str, Any]) -> None:
    scope = f"group {doc['group']}" if doc["group"] else "the old path"
    table = Table("", "check", "evidence", title=f"decommission {scope}: the last {doc['days']:g} days")
    for c in doc["checks"]:
        table.add_row("[green]✓[/]" if c["ok"] else "[red]✗[/]", c["name"], c["detail"])
    out.print(table)
    last = doc["last_legacy_conversion"]
    if last is None:
        out.print("the old path has no conversion in the ledger", highlight=False)
    else:
        out.print(
            f"last old-path conversion: {last['conversion_id']} (tenant {last['tenant_id']}, claimed "
            f"{last['claimed_at']}, {last['state']})",
            highlight=False,
        )
    for g in doc.get("groups", []):
        mark = "drained" if g["drained"] else "not drained: " + ", ".join(g["failed"])
        out.print(f"  {g['name']}: {mark}", highlight=False)
    if doc["ready"]:
        out.print(f"[green bold]ready[/]: {scope} may be switched off")
    else:
        failed = ", ".join(c["name"] for c in doc["checks"] if not c["ok"])
        out.print(f"[red bold]not ready[/]: {failed}")
