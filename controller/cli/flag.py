"""``cutover flag …``: show, plan, advance, roll back and list the migration flag's versions.

Thin: parses options, builds the store the settings name, calls ``flags.ops`` and prints the
result as a table or, with ``--json``, as JSON. Errors are raised as ``CutoverError``s and printed
as one line by ``controller.cli.app``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from controller.cli.common import console, emit_json, settings
from controller.cli.gate import judge_now
from controller.core.errors import ConfigError, InputError
from controller.core.gates import GateReport
from controller.core.ports import VersionStore
from controller.settings import Settings
from flags import ops
from flags.rollout import RolloutPlan, load_plan, parse_tenants
from flags.versions import Deployment

flag_app = typer.Typer(
    help="Read and operate the migration flag: show, plan, advance, rollback, release, history.",
    no_args_is_help=True,
)
out = console()
err = console(stderr=True)

StoreKind = Literal["file", "appconfig"]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Where flag versions live: file (CUTOVER_FLAG_FILE) or appconfig. "
        "Default: file for CUTOVER_FLAG_SOURCE=file, appconfig otherwise.",
    ),
]
NoteOption = Annotated[str, typer.Option("--note", help="Why: kept with the version and deployment.")]
NoWaitOption = Annotated[
    bool, typer.Option("--no-wait", help="Return once the deployment has started; do not follow it.")
]


def _settings() -> Settings:
    return settings()


def _emit(doc: Any) -> None:
    emit_json(doc)


def _kind(cfg: Settings, store: str | None) -> StoreKind:
    if store is None:
        return "file" if cfg.flag_source == "file" else "appconfig"
    if store not in ("file", "appconfig"):
        raise InputError(f"--store: {store!r} is not one of file, appconfig")
    return "file" if store == "file" else "appconfig"


def make_store(cfg: Settings, kind: StoreKind) -> VersionStore:
    """The version store ``kind`` as the settings describe it."""
    from controller.bootstrap import make_version_store

    return make_version_store(cfg, kind)


def _plan(cfg: Settings, required: bool) -> RolloutPlan | None:
    path = cfg.rollout_file
    if path is None:
        if required:
            raise InputError(
                "no rollout plan configured: set CUTOVER_ROLLOUT_FILE to a rollout.yaml or .json"
            )
        return None
    if not required and not path.exists():
        return None
    return load_plan(path)


def _tenants(text: str | None, option: str) -> frozenset[int]:
    return parse_tenants(text, option) if text else frozenset()


def _starts_new_file(cfg: Settings, kind: StoreKind) -> bool:
    return kind == "file" and not cfg.flag_file.exists()


def _warn_new_file(cfg: Settings, started: bool) -> None:
    """A write to a flag file that did not exist started a new history there: say where, since a
    command run from the wrong folder would otherwise move no tenant the service can see."""
    if started and cfg.flag_file.exists():
        where = cfg.flag_file.expanduser().resolve()
        err.print(
            f"cutover: warning: there was no flag file at {where} (CUTOVER_FLAG_FILE): this started one",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _warn(result: Mapping[str, Any]) -> None:
    for w in result.get("warnings") or []:
        err.print(f"cutover: warning: {w}", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _progress(enabled: bool) -> Iterator[ops.Progress | None]:
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task("starting", total=100)

        def show(d: Deployment) -> None:
            state = "baking (watching alarms)" if d.state == "BAKING" else d.state.lower()
            bar.update(
                task, completed=d.percentage, description=f"deployment {d.number} → v{d.version}: {state}"
            )

        yield show


def _activity(cfg: Settings, since: float) -> dict[int, int] | None:
    """Conversions per tenant received since ``since``, from the ledger (None without one)."""
    path = cfg.sqlite_path
    if path is not None and not path.exists():
        return None  # no ledger yet; opening one would create it, and plan changes nothing
    from controller.bootstrap import make_ledger

    try:
        ledger = make_ledger(cfg)
    except ConfigError:
        return None
    try:
        return ledger.tenant_activity(since)
    finally:
        ledger.close()


def _gate(cfg: Settings, plan: RolloutPlan | None, vstore: VersionStore) -> GateReport:
    """The gate over the groups the flag in force has moved (the plan is read even when not required)."""
    current = vstore.in_force()
    migrated = current.content.migrated if current else frozenset()
    return judge_now(cfg, plan if plan is not None else _plan(cfg, required=False), migrated)


def _print_gate(summary: Mapping[str, Any] | None) -> None:
    if summary is None:
        return
    colour = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
    for g in summary["groups"]:
        out.print(f"gate: {g['name']} [{colour[g['verdict']]}]{g['verdict']}[/]")
        for reason in g["reasons"]:
            out.print(f"  {reason}", markup=False, highlight=False)
    if summary["would_refuse"]:
        out.print("[yellow]advance would refuse:[/] ", end="")
        out.print(summary["would_refuse"], markup=False, highlight=False)


@flag_app.command("show")
def show_cmd(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """The version in force, its tenant count, and which rollout groups are in."""
    cfg = _settings()
    result = ops.show(make_store(cfg, _kind(cfg, store)), _plan(cfg, required=False))
    if as_json:
        _emit(result)
        return
    version = result["version"] if result["recorded"] else "unrecorded (edited by hand?)"
    if result["enabled"] is None:
        out.print(f"{result['store']}: no flag version in force yet (every tenant on the old path)")
    else:
        state = "on" if result["enabled"] else "[red]switched off[/]"
        out.print(
            f"{result['store']}: version [bold]{version}[/] in force ({state}), "
            f"{result['tenant_count']} tenants on the new path; latest version {result['latest_version']}"
        )
    if result["in_progress"]:
        d = result["in_progress"]
        out.print(
            f"deployment {d['number']} of version {d['version']} is {d['state']} ({d['percentage']:g}%)"
        )
    if result["groups"]:
        table = Table("group", "tenants", "migrated", "state")
        for g in result["groups"]:
            table.add_row(g["name"], str(g["tenants"]), str(g["migrated"]), g["state"])
        out.print(table)
    _print_held(result["held"], "held back (release with `cutover flag release TENANT_ID`)")


def _print_held(held: list[dict[str, Any]], title: str) -> None:
    if not held:
        return
    table = Table("tenant", "since version", "by", "at", "why", title=title)
    for h in held:
        table.add_row(str(h["tenant_id"]), str(h["version"]), h["by"], h["at"], h["why"])
    out.print(table)


@flag_app.command("plan")
def plan_cmd(
    to_group: Annotated[str | None, typer.Option("--to-group", help="Advance through this group.")] = None,
    add_tenants: Annotated[
        str | None, typer.Option("--add-tenants", help="Tenants to add, e.g. 1001,1005-1010.")
    ] = None,
    remove_tenants: Annotated[
        str | None, typer.Option("--remove-tenants", help="Tenants to take out.")
    ] = None,
    window_days: Annotated[
        float, typer.Option("--window-days", min=0.01, help="Ledger history used for the load shift.")
    ] = 7.0,
    max_add: Annotated[int | None, typer.Option("--max-add", min=1, help="Default: CUTOVER_MAX_ADD.")] = None,
    include_held: Annotated[
        bool, typer.Option("--include-held", help="Let held tenants back in too (releases them).")
    ] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show what a change would do (per group) and the load it would shift. Changes nothing."""
    if to_group is None and not add_tenants and not remove_tenants:
        raise InputError("say what to plan: --to-group, --add-tenants or --remove-tenants")
    cfg = _settings()
    plan = _plan(cfg, required=to_group is not None)
    vstore = make_store(cfg, _kind(cfg, store))
    add = _tenants(add_tenants, "--add-tenants")
    remove = _tenants(remove_tenants, "--remove-tenants")
    since = time.time() - window_days * 86400
    result = ops.plan_change(
        vstore,
        plan,
        to_group=to_group,
        add=add,
        remove=remove,
        activity=_activity(cfg, since),
        window_days=window_days,
        max_add=max_add or cfg.max_add,
        include_held=include_held,
        gate=_gate(cfg, plan, vstore),
    )
    if as_json:
        _emit(result)
        return
    start = "no flag version yet" if result["from_version"] is None else f"version {result['from_version']}"
    out.print(
        f"from {start}: +{result['added']} -{result['removed']} tenants "
        f"({result['tenant_count_before']} → {result['tenant_count_after']} on the new path)"
    )
    table = Table("group", "added", "removed")
    for row in result["groups"]:
        table.add_row(row["group"] or "(not in the plan)", str(len(row["added"])), str(len(row["removed"])))
    out.print(table)
    load = result["load"]
    if load is None:
        out.print("no ledger history: load shift unknown")
    else:
        out.print(
            f"load over the last {load['window_days']:g} days ({load['conversions_in_window']} conversions): "
            f"{load['to_new_per_day']}/day move to the new path, {load['to_legacy_per_day']}/day back; "
            f"new-path share {load['new_share_before']} → {load['new_share_after']}"
        )
    for problem in result["advance_would_refuse"]:
        out.print(f"[yellow]advance would refuse:[/] {problem}")
    _print_held(result["held"], "held back, left out (--include-held to release them)")
    _print_gate(result["gate"])


@flag_app.command("advance")
def advance_cmd(
    to_group: Annotated[str | None, typer.Option("--to-group", help="Advance through this group.")] = None,
    add_tenants: Annotated[
        str | None, typer.Option("--add-tenants", help="Tenants to add, e.g. 1001,1005-1010.")
    ] = None,
    remove_tenants: Annotated[
        str | None, typer.Option("--remove-tenants", hidden=True, help="Refused: use rollback --tenant.")
    ] = None,
    max_add: Annotated[int | None, typer.Option("--max-add", min=1, help="Default: CUTOVER_MAX_ADD.")] = None,
    note: NoteOption = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Move even while a group already moved fails or is inconclusive (needs --reason)."
        ),
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why --force: kept in the flag history and the audit log.")
    ] = None,
    no_wait: NoWaitOption = False,
    include_held: Annotated[
        bool, typer.Option("--include-held", help="Let held tenants back in too (releases them).")
    ] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the next flag version and deploy it (following the deployment to the end), once the
    groups already moved pass their gate (see `cutover gate`)."""
    if remove_tenants:
        raise InputError("advance never takes tenants out; use `cutover flag rollback --tenant T`")
    if to_group is None and not add_tenants:
        raise InputError("say where to advance: --to-group G or --add-tenants LIST")
    if force and not (reason or "").strip():
        raise InputError("--force needs --reason TEXT: why move past the gate (kept in the flag history)")
    if reason is not None and not force:
        raise InputError("--reason goes with --force")
    cfg = _settings()
    plan = _plan(cfg, required=to_group is not None)
    vstore = make_store(cfg, _kind(cfg, store))
    started = _starts_new_file(cfg, _kind(cfg, store))
    gate = _gate(cfg, plan, vstore)
    with _progress(not as_json and not no_wait) as on_progress:
        result = ops.advance(
            vstore,
            plan,
            to_group=to_group,
            add=_tenants(add_tenants, "--add-tenants"),
            max_add=max_add or cfg.max_add,
            op=ops.Operator(),
            text=note,
            wait=not no_wait,
            on_progress=on_progress,
            include_held=include_held,
            gate=gate,
            force=(reason or "") if force else "",
        )
    _warn(result)
    _warn_new_file(cfg, started)
    if result["forced"]:
        err.print(
            f"cutover: warning: moved past the gate ({result['forced']['overridden']}): {reason}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        _emit(result)
        return
    _print_held(result["held"], "held back, left out (--include-held to release them)")
    if not result["changed"]:
        out.print(f"nothing to change: version {result['version']} already lists these tenants")
        return
    d = result["deployment"]
    out.print(
        f"version [bold]{result['version']}[/]: +{result['added']} tenants, {result['tenant_count']} on the "
        f"new path; deployment {d['number']} {d['state']}"
    )


@flag_app.command("rollback")
def rollback_cmd(
    to_version: Annotated[
        int | None, typer.Option("--to-version", min=1, help="Deploy this version.")
    ] = None,
    tenant: Annotated[
        list[int] | None,
        typer.Option("--tenant", min=1, help="Take this tenant out (repeatable), in a new version."),
    ] = None,
    note: NoteOption = "",
    no_wait: NoWaitOption = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Back to the previous version: stop a deployment under way, or deploy the version before."""
    if to_version is not None and tenant:
        raise InputError("give --to-version or --tenant, not both")
    cfg = _settings()
    vstore = make_store(cfg, _kind(cfg, store))
    with _progress(not as_json and not no_wait) as on_progress:
        result = ops.rollback(
            vstore,
            to_version=to_version,
            tenants=frozenset(tenant or ()),
            op=ops.Operator(),
            text=note,
            wait=not no_wait,
            on_progress=on_progress,
        )
    _warn(result)
    if as_json:
        _emit(result)
        return
    d = result["deployment"]
    if result["action"] == "stopped":
        out.print(f"deployment {d['number']} stopped ({d['state']}): the version before it stays in force")
        return
    was = result["from_version"]
    if result.get("replaced_invalid"):
        base = result.get("compared_with")
        was = "an invalid document" + (
            f"; tenants compared with version {base}, the last good one" if base else ""
        )
    out.print(
        f"version [bold]{result['version']}[/] in force (was {was}): "
        f"-{result['removed']} +{result['added']} tenants, {result['tenant_count']} on the new path; "
        f"deployment {d['number']} {d['state']}"
    )


@flag_app.command("release")
def release_cmd(
    tenant_id: Annotated[list[int], typer.Argument(min=1, help="Held tenants to let back in.")],
    note: NoteOption = "",
    no_wait: NoWaitOption = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let tenants taken out by `rollback --tenant` back onto the new path, in a new version."""
    cfg = _settings()
    vstore = make_store(cfg, _kind(cfg, store))
    with _progress(not as_json and not no_wait) as on_progress:
        result = ops.release(
            vstore, tenant_id, op=ops.Operator(), text=note, wait=not no_wait, on_progress=on_progress
        )
    _warn(result)
    if as_json:
        _emit(result)
        return
    if not result["changed"]:
        out.print(f"nothing to change: version {result['version']} already lists these tenants")
        return
    d = result["deployment"]
    out.print(
        f"version [bold]{result['version']}[/]: released {', '.join(map(str, result['released']))}; "
        f"{result['tenant_count']} on the new path; deployment {d['number']} {d['state']}"
    )


@flag_app.command("history")
def history_cmd(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Versions to list.")] = 20,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Flag versions with who wrote them, when, and what they changed; then the deployments."""
    cfg = _settings()
    result = ops.history(make_store(cfg, _kind(cfg, store)), limit)
    if as_json:
        _emit(result)
        return
    table = Table("version", "at", "by", "action", "added", "removed", "note", title=result["store"])
    for v in result["versions"]:
        mark = " ◀ in force" if v["in_force"] else ""
        action = (v["action"] or "—") + (" [rollback]" if v["rollback"] and v["action"] != "rollback" else "")
        table.add_row(
            f"{v['version']}{mark}",
            v["at"] or "—",
            v["by"] or "—",
            action,
            "?" if v["added"] is None else str(v["added"]),
            "?" if v["removed"] is None else str(v["removed"]),
            v["note"],
        )
    out.print(table)
    deployments = Table("deployment", "version", "state", "started", "rollback", title="deployments")
    for d in result["deployments"]:
        deployments.add_row(
            str(d["number"]),
            str(d["version"]),
            d["state"],
            d["started_at"] or "—",
            "yes" if d["rollback"] else "",
        )
    out.print(deployments)


__all__ = ["flag_app", "make_store"]
