"""The ``cutover`` command line. Errors go to stderr as one line with a non-zero status."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from controller.cli.common import State as _State
from controller.cli.common import emit_json, settings
from controller.cli.decommission import decommission_cmd
from controller.cli.flag import flag_app
from controller.cli.forecast import forecast_cmd
from controller.core.errors import CutoverError, InputError
from controller.settings import Settings

if TYPE_CHECKING:
    from controller.core.ports import Backend
    from controller.engine.cycle import Controller
    from controller.engine.loop import CycleLoop

app = typer.Typer(
    name="cutover",
    help="Move a batch workload tenant by tenant from an old execution path to a new one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(flag_app, name="flag")
app.command("forecast")(forecast_cmd)
app.command("decommission")(decommission_cmd)
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    FsPath | None, typer.Option("--config", help="An env file of CUTOVER_* settings to add.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@app.callback()
def _root(config: ConfigOption = None) -> None:
    """cutover: feature-flag-driven migration controller."""
    _State.config = config


@app.command("config")
def config_cmd(as_json: JsonOption = False) -> None:
    """Print the configuration in force (secrets masked)."""
    values = settings().masked()
    if as_json:
        emit_json(values)
        return
    table = Table("variable", "value", title="configuration in force")
    for name, value in values.items():
        table.add_row(name, "" if value is None else str(value))
    out.print(table)


@app.command("run")
def run_cmd(
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the API listens on.", min=1, max=65535)] = 8080,
) -> None:
    """Run the controller: the cycle loop and the HTTP API."""
    serve(settings(), host, port)


def serve(
    cfg: Settings, host: str, port: int, *, wrap_backend: Callable[[Backend], Backend] | None = None
) -> None:
    """What ``cutover run`` does with ``cfg``: the cycle loop, the intakes and the HTTP API until a
    signal. ``wrap_backend`` decorates each backend inside the metrics' timing (the chaos benchmark
    injects submit faults that way)."""
    from controller.api.app import create_app
    from controller.api.metrics import ServiceMetrics
    from controller.bootstrap import build
    from controller.engine.loop import CycleLoop, IntakeThreads
    from controller.plumbing.logs import configure_logging
    from controller.plumbing.runtime import settle_after_start_up, share_the_interpreter_lock

    configure_logging(cfg)
    metrics = ServiceMetrics()
    instrument = metrics.instrument
    if wrap_backend is not None:
        inner = wrap_backend

        def instrument(backend: Backend) -> Backend:
            return metrics.instrument(inner(backend))

    service = build(cfg, on_finished=metrics.finished, wrap_backend=instrument)
    loop = CycleLoop(service.controller, cfg.cycle_seconds)
    try:
        app = create_app(service, loop, metrics=metrics)
    except BaseException:
        service.close()
        raise
    settle_after_start_up()
    share_the_interpreter_lock()
    loop.start()
    intakes = IntakeThreads(service.intakes)
    intakes.start()
    logging.getLogger("cutover.service").info(
        "service.started", extra={"host": host, "port": port, "settings": cfg.masked()}
    )
    try:
        _serve_app(app, host, port)
    finally:
        intakes.stop()
        loop.stop()
        _step_down(service.controller, loop)
        service.close()
        logging.getLogger("cutover.service").info("service.stopped")


def _step_down(controller: Controller, loop: CycleLoop) -> None:
    """Hand the dispatch lease over on an orderly stop (a deployment replacing this replica), so the
    others do not wait for it to expire; never while a cycle may still be running."""
    log = logging.getLogger("cutover.service")
    if loop.alive:
        log.warning("lease.kept", extra={"reason": "the cycle did not stop in time; the lease will expire"})
        return
    try:
        if controller.step_down():
            log.info("lease.released", extra={"lease": "dispatch"})
    except CutoverError as exc:
        log.warning("lease.kept", extra={"reason": str(exc)})


def _serve_app(asgi_app: Any, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT. uvicorn drains requests on those, then re-raises the signal to
    the handler found before it started: make that an orderly exit, so the caller's ``finally``
    stops the loop and closes the ledger."""
    import uvicorn

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_in_order)
    uvicorn.run(asgi_app, host=host, port=port, log_level="warning", log_config=None, access_log=False)


def _exit_in_order(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command("demo")
def demo_cmd(
    workdir: Annotated[FsPath, typer.Option(help="Where the demo keeps its ledger and outputs.")] = FsPath(
        "./cutover-demo"
    ),
    serve: Annotated[bool, typer.Option("--serve", help="Keep the API up after the run.")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve.", min=1, max=65535)] = 8080,
    as_json: JsonOption = False,
) -> None:
    """Play a whole rollout on this machine and check that nothing ran twice or not at all."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from controller.bootstrap import build
    from controller.cli.demo import STAGES, TENANTS, demo_settings, prepare, run_stages

    workdir = workdir.resolve()
    prepare(workdir)
    logging.basicConfig(
        filename=workdir / "cutover.log", level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    cfg = demo_settings(settings(), workdir)
    service = build(cfg)
    total = len(STAGES) * TENANTS
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=as_json or not err.is_terminal,
        ) as progress:
            task = progress.add_task("converting", total=total)

            def on_stage(stage: Any) -> None:
                if not as_json:
                    f, m = stage.forecast, stage.measured
                    guess = (
                        f"  forecast {f['makespan_seconds']:.1f}s, slots {f['peak_slots']}, "
                        f"at work {f['peak_in_flight']}; measured {m['makespan_seconds']:.1f}s, "
                        f"slots {m['peak_slots']}, at work {m['peak_in_flight']}"
                        if f and m
                        else ""
                    )
                    out.print(
                        f"[bold]{stage.name:>9}[/]  flag {stage.flag_version or '—':<18} "
                        f"migrated {stage.migrated_tenants:>3}  legacy {stage.legacy:>3}  "
                        f"new {stage.new:>3}  failed {stage.failed}  ({stage.seconds:.1f}s){guess}"
                    )

            result = run_stages(service, workdir, on_stage=on_stage, tick=lambda n: progress.advance(task, n))
    finally:
        if not serve:
            service.close()
    if as_json:
        emit_json(result.to_json())
    else:
        _print_verdict(result)
    if serve:
        _serve(service, port)
    if not result.ok:
        raise typer.Exit(1)


def _print_verdict(result: Any) -> None:
    table = Table("stage", "flag version", "migrated", "legacy", "new", "failed", title="cutover demo")
    for s in result.stages:
        table.add_row(
            s.name, s.flag_version or "—", str(s.migrated_tenants), str(s.legacy), str(s.new), str(s.failed)
        )
    out.print(table)
    verdict = "[green]PASS[/]" if result.ok else "[red]FAIL[/]"
    out.print(
        f"{verdict}  conversions {result.conversions}  succeeded {result.succeeded}  "
        f"failed {result.failed}  duplicates {result.duplicates}  lost {result.lost}  "
        f"wrong path {result.wrong_path}  max in flight {result.max_in_flight}/{result.budget}  "
        f"({result.seconds:.1f}s)"
    )


def _serve(service: Any, port: int) -> None:
    from controller.api.app import create_app
    from controller.engine.loop import CycleLoop

    loop = CycleLoop(service.controller, service.settings.cycle_seconds)
    loop.start()
    out.print(f"serving the demo's API on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    try:
        _serve_app(create_app(service, loop), "127.0.0.1", port)
    finally:
        loop.stop()
        service.close()


@app.command("status")
def status_cmd(
    url: Annotated[str, typer.Option(help="Base URL of a running controller.")] = "http://127.0.0.1:8080",
    as_json: JsonOption = False,
) -> None:
    """Show a running controller's status."""
    import httpx

    from controller.api.status import status_lines
    from controller.core.errors import LedgerError

    try:
        answer = httpx.get(url.rstrip("/") + "/status", timeout=5)
        doc = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise InputError(f"cannot read the status of {url}: {exc}") from exc
    if answer.status_code != 200:
        problem = doc.get("error", {}).get("message", answer.reason_phrase) if isinstance(doc, dict) else ""
        raise LedgerError(f"{url} answered {answer.status_code}: {problem}")
    if as_json:
        emit_json(doc)
        return
    for line in status_lines(doc):
        out.print(line, markup=False, highlight=False)


@app.command("route")
def route_cmd(tenant_id: Annotated[int, typer.Argument(min=1)], as_json: JsonOption = False) -> None:
    """Where a tenant's new conversions would go now, under which flag version, and why."""
    from controller.bootstrap import cycle_config, make_flag_source, make_ledger
    from controller.core.routing import decide
    from flags.lkg import LastKnownGood

    cfg = settings()
    ledger = make_ledger(cfg)
    try:
        status = LastKnownGood(make_flag_source(cfg, time.time), ledger, time.time).read()
        decision = decide(tenant_id, status.snapshot, cycle_config(cfg).routing)
    finally:
        ledger.close()
    doc = {
        "tenant_id": tenant_id,
        "path": decision.path.value if decision.path else None,
        "flag_version": decision.flag_version,
        "reason": decision.reason,
        "flag_state": status.state.value,
    }
    if as_json:
        emit_json(doc)
    else:
        out.print(
            f"tenant {tenant_id} → {doc['path'] or 'held'}  ({decision.reason}; flag {status.state.value})"
        )


@app.command("requeue")
def requeue_cmd(conversion_id: str, as_json: JsonOption = False) -> None:
    """Free a terminally failed conversion so the next cycle routes it afresh."""
    from controller.bootstrap import make_ledger

    cfg = settings()
    ledger = make_ledger(cfg)
    try:
        record = ledger.requeue(conversion_id, time.time())
    finally:
        ledger.close()
    if as_json:
        emit_json({"conversion_id": record.conversion_id, "state": record.state.value})
    else:
        out.print(f"{conversion_id} requeued: the next cycle routes it afresh")


def main() -> None:
    """Entry point: run the app, turning every cutover error into one line on stderr."""
    try:
        app()  # usage errors are printed and exit 2 by the command-line library itself
    except CutoverError as exc:
        err.print(f"cutover: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
