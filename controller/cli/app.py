"""The ``cutover`` command line. Errors go to stderr as one line with a non-zero status."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from controller.cli import where
from controller.cli.common import State as _State
from controller.cli.common import console, emit_json, settings
from controller.cli.decommission import decommission_cmd
from controller.cli.flag import flag_app
from controller.cli.forecast import forecast_cmd
from controller.cli.gate import gate_cmd
from controller.cli.shadow import shadow_cmd
from controller.core.errors import ConfigError, CutoverError, InputError, NotFoundError
from controller.settings import Settings

if TYPE_CHECKING:
    from controller.core.ports import Backend, FlagStore
    from controller.engine.cycle import Controller
    from controller.engine.loop import CycleLoop
    from flags.snapshot import FlagSnapshot

app = typer.Typer(
    name="cutover",
    help="Move a batch workload tenant by tenant from an old execution path to a new one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(flag_app, name="flag")
app.command("gate")(gate_cmd)
app.command("shadow")(shadow_cmd)
app.command("forecast")(forecast_cmd)
app.command("decommission")(decommission_cmd)
out = console()
err = console(stderr=True)

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
    values = settings().masked(absolute_paths=True)
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
    _State.warned = True  # logged as events below, with the rest of the log
    serve(settings(), host, port)


def serve(
    cfg: Settings, host: str, port: int, *, wrap_backend: Callable[[Backend], Backend] | None = None
) -> None:
    """What ``cutover run`` does with ``cfg``: the cycle loop, the intakes and the HTTP API until a
    signal. ``wrap_backend`` decorates each backend inside the metrics' timing (the chaos benchmark
    injects submit faults that way)."""
    from controller.api.app import create_app
    from controller.api.metrics import ServiceMetrics
    from controller.api.readmodel import ReadModel
    from controller.api.tenants import PlanFile
    from controller.bootstrap import build
    from controller.engine.loop import CycleLoop, IntakeThreads
    from controller.plumbing.logs import configure_logging
    from controller.plumbing.runtime import settle_after_start_up, share_the_interpreter_lock

    configure_logging(cfg)
    # Listen first: the address is the replica's identity (see ``replica_identity``), so it must
    # be this process's before the first cycle may take a lease under it.
    listener = _listen(host, port)
    metrics = ServiceMetrics()
    instrument = metrics.instrument
    if wrap_backend is not None:
        inner = wrap_backend

        def instrument(backend: Backend) -> Backend:
            return metrics.instrument(inner(backend))

    try:
        service = build(
            cfg,
            on_finished=metrics.finished,
            wrap_backend=instrument,
            holder=replica_identity(listener),
        )
    except BaseException:
        listener.close()
        raise
    # What /status, /tenants, /metrics and the dashboard show is read once per cycle, by the loop.
    views = ReadModel(service, PlanFile(cfg.rollout_file))
    loop = CycleLoop(service.controller, cfg.cycle_seconds, after_cycle=views.refresh)
    try:
        app = create_app(service, loop, metrics=metrics, views=views)
    except BaseException:
        service.close()
        listener.close()
        raise
    settle_after_start_up()
    share_the_interpreter_lock()
    loop.start()
    intakes = IntakeThreads(service.intakes)
    intakes.start()
    log = logging.getLogger("cutover.service")
    for warning in cfg.warnings:
        log.warning("settings.warning", extra={"warning": warning})
    log.info("service.started", extra={"host": host, "port": port, "settings": cfg.masked()})
    try:
        _serve_app(app, host, port, listener)
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


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` and listening; a clear error when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # connections whose socket says IPPROTO_TCP. Without it, a response written in two parts (the
    # headers middleware does) waits for the client's delayed ACK: ~40 ms on every request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"--host/--port: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    sock.set_inheritable(True)
    return sock


def replica_identity(listener: socket.socket) -> str:
    """Who this replica is to the ledger's leases: its host and the address it listens on.

    Stable across a restart, so a replica killed with SIGKILL and started again takes its own
    dispatch lease back at once instead of waiting it out; never shared by two live replicas, since
    no two processes can listen on one address."""
    address = listener.getsockname()
    return f"{socket.gethostname()}:{address[0]}:{address[1]}"


def _serve_app(asgi_app: Any, host: str, port: int, listener: socket.socket | None = None) -> None:
    """Serve until SIGTERM or SIGINT. uvicorn drains requests on those, then re-raises the signal to
    the handler found before it started: make that an orderly exit, so the caller's ``finally``
    stops the loop and closes the ledger."""
    import uvicorn

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_in_order)
    if listener is None:
        uvicorn.run(asgi_app, host=host, port=port, log_level="warning", log_config=None, access_log=False)
        return
    config = uvicorn.Config(
        asgi_app, host=host, port=port, log_level="warning", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


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
    from controller.cli.demo import TENANTS, WAVES, demo_settings, prepare, run_stages

    workdir = workdir.resolve()
    prepare(workdir)
    _log_to(workdir / "cutover.log")
    cfg = demo_settings(settings(), workdir)
    service = build(cfg)
    total = WAVES * TENANTS
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
                        f"new {stage.new:>3}  failed {stage.failed:>2}  gate {_gate_word(stage.gates)}  "
                        f"parity {_parity(stage.parity)}  "
                        f"({stage.seconds:.1f}s){guess}"
                    )
                    if stage.action == "rollback":
                        out.print(f"           {stage.why}", markup=False, highlight=False)

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


def _log_to(path: FsPath) -> None:
    """The demo's log: JSON lines with every event's fields (ids, reasons), as ``cutover run`` logs."""
    from controller.plumbing.logs import JsonFormatter

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _parity(parity: dict[str, Any] | None) -> str:
    """A stage's shadow parity as the table shows it: ``pass 20/20``, ``fail 2/30``, or ``—``."""
    if parity is None:
        return "—"
    matched = parity["samples"] - parity["mismatches"]
    return f"{parity['verdict']} {matched}/{parity['samples']}"


def _print_verdict(result: Any) -> None:
    table = Table(
        "stage",
        "flag version",
        "migrated",
        "legacy",
        "new",
        "failed",
        "gate",
        "shadow parity",
        title="cutover demo",
    )
    for s in result.stages:
        table.add_row(
            s.name,
            s.flag_version or "—",
            str(s.migrated_tenants),
            str(s.legacy),
            str(s.new),
            str(s.failed),
            _gate_word(s.gates),
            _parity(s.parity),
        )
    out.print(table)
    verdict = "[green]PASS[/]" if result.ok else "[red]FAIL[/]"
    out.print(
        f"{verdict}  conversions {result.conversions}  succeeded {result.succeeded}  "
        f"{result.failed_on_purpose} failed on purpose, {result.unexpected_failures} unexpected  "
        f"duplicates {result.duplicates}  lost {result.lost}  "
        f"wrong path {result.wrong_path}  max in flight {result.max_in_flight}/{result.budget} "
        f"(with {result.shadow_runs} shadow runs)  "
        f"({result.seconds:.1f}s)"
    )


def _gate_word(gates: Any) -> str:
    """The gate after a stage in one word per group moved, e.g. ``group-1 pass, group-3 fail``."""
    if not gates or not gates["groups"]:
        return "—"
    return ", ".join(f"{g['name']} {g['verdict']}" for g in gates["groups"])


def _serve(service: Any, port: int) -> None:
    from controller.api.app import create_app
    from controller.api.readmodel import ReadModel
    from controller.api.tenants import PlanFile
    from controller.engine.loop import CycleLoop

    views = ReadModel(service, PlanFile(service.settings.rollout_file))
    loop = CycleLoop(service.controller, service.settings.cycle_seconds, after_cycle=views.refresh)
    loop.start()
    out.print(f"serving the demo's API on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    try:
        _serve_app(create_app(service, loop, views=views), "127.0.0.1", port)
    finally:
        loop.stop()
        service.close()


@app.command("status")
def status_cmd(
    url: Annotated[
        str, typer.Option(envvar="CUTOVER_URL", help="Base URL of a running controller.")
    ] = "http://127.0.0.1:8080",
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


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="CUTOVER_URL",
        help="Ask the running service at this base URL (e.g. http://10.0.0.5:8080) instead of "
        "opening the ledger and flag on this machine.",
    ),
]


class _NoFlagStore:
    """No ledger to keep a last good flag in: the flag source alone answers, nothing is written."""

    def save_flag(self, snapshot: FlagSnapshot) -> None:
        return None

    def load_flag(self) -> FlagSnapshot | None:
        return None


@app.command("route")
def route_cmd(
    tenant_id: Annotated[str, typer.Argument(help="A tenant id: a whole number, at least 1.")],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Where a tenant's new conversions would go now, under which flag version, and why."""
    tenant = _tenant_id(tenant_id)
    doc = where.ask(url, "GET", f"/tenants/{tenant}/route") if url else _route_here(tenant)
    if as_json:
        emit_json(doc)
    else:
        out.print(
            f"tenant {tenant} → {doc['path'] or 'held'}  ({doc['reason']}; flag {doc['flag_state']})",
            markup=False,
            highlight=False,
        )


def _tenant_id(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise InputError(f"TENANT_ID: {text[:40]!r} is not a tenant id (a whole number, at least 1)")
    return int(text)


def _route_here(tenant_id: int) -> dict[str, Any]:
    """The route decided on this machine, from the flag source and the ledger's last good flag."""
    from controller.bootstrap import cycle_config, make_flag_source
    from controller.core.routing import decide
    from flags.lkg import LastKnownGood

    cfg = settings()
    missing = where.missing_flag_file(cfg)
    path = cfg.sqlite_path
    if path is not None and not path.is_file():
        if missing:
            raise ConfigError(
                f"no flag file at {where.resolved(cfg.flag_file)} and no ledger at {where.resolved(path)}: "
                "set CUTOVER_FLAG_FILE and CUTOVER_LEDGER to the service's, or ask the running service "
                "with --url URL (or CUTOVER_URL)"
            )
        store: FlagStore = _NoFlagStore()
        ledger = None
    else:
        if missing:
            err.print(f"cutover: warning: {missing}", markup=False, highlight=False, soft_wrap=True)
        ledger = where.open_ledger(cfg)
        store = ledger
    try:
        status = LastKnownGood(make_flag_source(cfg, time.time), store, time.time).read()
        decision = decide(tenant_id, status.snapshot, cycle_config(cfg).routing)
    finally:
        if ledger is not None:
            ledger.close()
    return {
        "tenant_id": tenant_id,
        "path": decision.path.value if decision.path else None,
        "flag_version": decision.flag_version,
        "reason": decision.reason,
        "flag_state": status.state.value,
    }


@app.command("requeue")
def requeue_cmd(conversion_id: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Free a terminally failed conversion so the next cycle routes it afresh."""
    if url:
        doc = where.ask(url, "POST", f"/conversions/{quote(conversion_id, safe='')}/requeue")
        state = doc["state"]
    else:
        ledger = where.open_ledger(settings())
        try:
            state = ledger.requeue(conversion_id, time.time()).state.value
        finally:
            ledger.close()
    if as_json:
        emit_json({"conversion_id": conversion_id, "state": state})
    else:
        out.print(f"{conversion_id} requeued: the next cycle routes it afresh", markup=False, highlight=False)


@app.command("conversions")
def conversions_cmd(
    conversion_id: Annotated[str | None, typer.Argument(help="One conversion, with all its fields.")] = None,
    state: Annotated[
        str | None,
        typer.Option(help="Only this state: received, claimed, dispatched, succeeded, failed."),
    ] = None,
    path: Annotated[str | None, typer.Option(help="Only conversions on this path: legacy or new.")] = None,
    tenant: Annotated[int | None, typer.Option(min=1, help="Only this tenant's conversions.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List conversions (newest receipts last), or show one: path, flag version, state, reason."""
    if conversion_id is not None:
        doc = (
            where.ask(url, "GET", f"/conversions/{quote(conversion_id, safe='')}")
            if url
            else _conversions_here(conversion_id=conversion_id)[0]
        )
        if as_json:
            emit_json(doc)
            return
        for name, value in doc.items():
            out.print(f"{name:>14}  {'' if value is None else value}", markup=False, highlight=False)
        return
    query = {k: v for k, v in {"state": state, "path": path, "tenant": tenant, "limit": limit}.items() if v}
    if url:
        docs = where.ask(url, "GET", "/conversions", params=query)["conversions"]
    else:
        docs = _conversions_here(state=state, path=path, tenant=tenant, limit=limit)
    if as_json:
        emit_json({"conversions": docs})
        return
    table = Table("conversion", "tenant", "path", "state", "flag", "attempts", "reason / output")
    for d in docs:
        table.add_row(
            d["conversion_id"],
            str(d["tenant_id"]),
            d["path"] or "—",
            d["state"],
            d["flag_version"] or "—",
            str(d["attempts"]),
            d.get("output") or d["reason"],
        )
    out.print(table)
    if not docs:
        out.print("no conversions match", markup=False)


def _conversions_here(
    *,
    conversion_id: str | None = None,
    state: str | None = None,
    path: str | None = None,
    tenant: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    from controller.api.schemas import ConversionOut
    from controller.core.domain import ConversionState
    from controller.core.domain import Path as ExecPath

    try:
        wanted_state = ConversionState(state) if state else None
        wanted_path = ExecPath(path) if path else None
    except ValueError as exc:
        raise InputError(f"--state / --path: {exc}") from exc
    ledger = where.open_ledger(settings())
    try:
        if conversion_id is not None:
            record = ledger.get(conversion_id)
            if record is None:
                raise NotFoundError(f"conversion {conversion_id!r} is not in the ledger")
            records = [record]
        else:
            records, _ = ledger.query(state=wanted_state, path=wanted_path, tenant_id=tenant, limit=limit)
    finally:
        ledger.close()
    return [ConversionOut.of(r).model_dump(mode="json") for r in records]


def main() -> None:
    """Entry point: run the app, turning every cutover error into one line on stderr."""
    usage_error, no_args = _usage_errors()
    try:
        # Not standalone: the library would print a usage error as a framed box of several lines.
        code = app(standalone_mode=False)
    except no_args as exc:
        ctx = getattr(exc, "ctx", None)
        sys.stderr.write((ctx.get_help() if ctx else "") + "\n")
        sys.exit(2)
    except usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        _fail(f"{message} (see `{ctx.command_path if ctx else 'cutover'} --help`)")
    except typer.Abort:
        sys.exit(130)
    except CutoverError as exc:
        _fail(str(exc))
    sys.exit(code if isinstance(code, int) else 0)


def _usage_errors() -> tuple[type[Exception], type[Exception]]:
    """The command-line library's usage error and no-arguments error: recent typer carries its own
    copy of click, older typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions  # type: ignore[no-redef]
    return exceptions.UsageError, exceptions.NoArgsIsHelpError


def _fail(message: str) -> None:
    err.print(f"cutover: error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
