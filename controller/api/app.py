"""The HTTP face of a running controller (FastAPI): health, status, intake, explanations, metrics
and the dashboard.

Handlers stay thin: validation lives in ``controller.intake``, shaping in ``controller.api.status``,
``controller.api.tenants`` and ``controller.api.dashboard``. They read what the cycle keeps and write only
through the ledger; they never call a backend or the flag source. Every error answer is one JSON
shape (``schemas.ErrorBody``) and never echoes credentials.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.api import dashboard
from controller.api.metrics import ServiceMetrics
from controller.api.schemas import (
    Accepted,
    ConversionOut,
    ConversionPage,
    ErrorBody,
    GatesOut,
    Health,
    PathName,
    Ready,
    RouteOut,
    StateName,
    StatusOut,
    TenantsOut,
)
from controller.api.status import flag_status, readiness, status_document
from controller.api.tenants import (
    PlanFile,
    TenantBoard,
    overview_document,
    route_document,
    tenant_in_flight,
)
from controller.core.domain import ConversionRequest, ConversionState
from controller.core.domain import Path as ExecPath
from controller.core.errors import (
    ConflictError,
    CutoverError,
    FlagError,
    InputError,
    LedgerError,
    NotFoundError,
)
from controller.core.ports import AcceptResult, Ledger
from controller.engine.gates import gates_document
from controller.engine.loop import CycleLoop
from controller.intake import validation as intake
from controller.intake.validation import IntakeError, IntakeLimits, IntakeProblem
from controller.service import Service
from flags.document import MAX_TENANT_ID

log = logging.getLogger("cutover.api")

_INTAKE_STATUS = {
    IntakeProblem.UNSUPPORTED_MEDIA_TYPE: 415,
    IntakeProblem.BODY_TOO_LARGE: 413,
    IntakeProblem.TOO_MANY_ITEMS: 422,
    IntakeProblem.MALFORMED_JSON: 400,
    IntakeProblem.INVALID_BODY: 422,
    IntakeProblem.INVALID_ITEM: 422,
}
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


_BEARER = HTTPBearer(auto_error=False, description="CUTOVER_API_TOKEN, sent as a bearer token.")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


ConversionIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=intake.CONVERSION_ID_SCHEMA_PATTERN,
        description="1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit.",
    ),
]
TenantIdPath = Annotated[int, Path(ge=1, le=MAX_TENANT_ID, description="A tenant id, a whole number ≥ 1.")]


def create_app(
    service: Service,
    loop: CycleLoop | None,
    *,
    metrics: ServiceMetrics | None = None,
    plan: PlanFile | None = None,
) -> FastAPI:
    """The app for one controller process."""
    settings = service.settings
    clock = service.clock
    ledger = service.ledger
    limits = IntakeLimits(settings.max_request_items, settings.max_body_bytes)
    metrics = metrics or ServiceMetrics()
    metrics.observe(service, loop)
    board = TenantBoard(ledger, plan or PlanFile(settings.rollout_file), clock)
    authorized = _authorizer(settings.api_token)

    app = FastAPI(
        title="cutover",
        version="0.1.0",
        description="Routes each conversion to exactly one execution path under a feature flag.",
    )
    _install_error_handlers(app)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- health -------------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["health"])
    async def healthz() -> JSONResponse:
        """200 while the process and its cycle loop are alive (answered on the event loop: it reads
        only memory, so it needs no worker thread)."""
        ok = loop is None or loop.healthy(clock())
        body = {"status": "ok" if ok else "cycle loop stalled", "cycles": service.controller.cycles}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready}}, tags=["health"])
    def readyz() -> JSONResponse:
        """200 when the ledger answers and routing has a basis; 503 with the reason otherwise."""
        ready, reason = readiness(service, clock())
        return JSONResponse({"ready": ready, "reason": reason}, status_code=200 if ready else 503)

    @app.get("/status", response_model=StatusOut, responses=_errors(503), tags=["health"])
    def status() -> dict[str, Any]:
        """The flag in force, the budget, work in flight per path and conversions per state."""
        return status_document(service, loop, clock(), intake=metrics.intake.snapshot())

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        tags=["health"],
    )
    def metrics_endpoint() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- conversions ----------------------------------------------------------------------------

    @app.post(
        "/conversions",
        status_code=202,
        response_model=Accepted,
        responses=_errors(400, 401, 413, 415, 422, 503),
        dependencies=[Depends(authorized)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": intake.request_schema(limits)}},
            }
        },
        tags=["conversions"],
    )
    async def submit(request: Request) -> JSONResponse:
        """Record a batch of conversions durably; a known id is a duplicate, never a second one."""
        try:
            intake.check_content_type(request.headers.get("content-type"))
            intake.check_declared_length(request.headers.get("content-length"), limits)
            raw = await _read_body(request, limits)
            requests = await run_in_threadpool(intake.parse_intake, raw, limits)
        except IntakeError:
            metrics.intake.record(rejected=True)
            raise
        result = await run_in_threadpool(_accept_and_log, ledger, requests, clock())
        metrics.intake.record(accepted=len(result.accepted), duplicates=len(result.duplicates))
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates}, status_code=202)

    @app.get("/conversions", response_model=ConversionPage, responses=_errors(422, 503), tags=["conversions"])
    def list_conversions(
        state: StateName | None = None,
        path: PathName | None = None,
        tenant: Annotated[int | None, Query(ge=1, le=MAX_TENANT_ID)] = None,
        cursor: Annotated[
            str | None, Query(max_length=256, description="next_cursor of the page before")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> ConversionPage:
        """Conversions in receipt order, filtered, one page at a time."""
        try:
            records, following = ledger.query(
                state=ConversionState(state) if state else None,
                path=ExecPath(path) if path else None,
                tenant_id=tenant,
                after=cursor,
                limit=limit,
            )
        except (ValueError, OverflowError) as exc:
            raise InputError(f"cursor {cursor!r:.80} is not one this service gave out") from exc
        return ConversionPage(conversions=[ConversionOut.of(r) for r in records], next_cursor=following)

    @app.get(
        "/conversions/{conversion_id}",
        response_model=ConversionOut,
        responses=_errors(404, 422, 503),
        tags=["conversions"],
    )
    def get_conversion(conversion_id: ConversionIdPath) -> ConversionOut:
        """One conversion: which path, which flag version, why, which job, what outcome."""
        record = ledger.get(conversion_id)
        if record is None:
            raise NotFoundError(f"conversion {conversion_id!r} is not in the ledger")
        return ConversionOut.of(record)

    @app.post(
        "/conversions/{conversion_id}/requeue",
        response_model=ConversionOut,
        responses=_errors(401, 404, 409, 422, 503),
        dependencies=[Depends(authorized)],
        tags=["conversions"],
    )
    def requeue(conversion_id: ConversionIdPath, request: Request) -> ConversionOut:
        """Free a terminally failed conversion so the next cycle routes it afresh (409 otherwise)."""
        record = ledger.requeue(conversion_id, clock())
        log.info(
            "conversion.requeued",
            extra={
                "conversion_id": conversion_id,
                "tenant_id": record.tenant_id,
                "client": request.client.host if request.client else None,
            },
        )
        return ConversionOut.of(record)

    # -- tenants ----------------------------------------------------------------------------------

    @app.get("/tenants", response_model=TenantsOut, responses=_errors(503), tags=["tenants"])
    def tenants() -> dict[str, Any]:
        """Per rollout group: tenants, how many the flag lists, and each one's cutover state."""
        return overview_document(board.overview(flag_status(service, clock()).snapshot))

    @app.get(
        "/tenants/{tenant_id}/route",
        response_model=RouteOut,
        responses=_errors(404, 422, 503),
        tags=["tenants"],
    )
    def route(tenant_id: TenantIdPath) -> dict[str, Any]:
        """Where the tenant's next conversion would go now, under which flag version, and why."""
        status = flag_status(service, clock())
        return route_document(
            tenant_id,
            status,
            service.controller.config.routing,
            tenant_in_flight(ledger, tenant_id),
            board.group_of(tenant_id),
        )

    @app.get("/gates", response_model=GatesOut, responses=_errors(503), tags=["rollout"])
    def gates() -> dict[str, Any]:
        """The rollout gates: for each group on the new path, the evidence, checks and verdict."""
        return gates_document(service.gates)

    # -- the dashboard ------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, tags=["dashboard"])
    def home() -> HTMLResponse:
        """The dashboard."""
        nonce = secrets.token_urlsafe(16)
        page = dashboard.render(dashboard.gather(service, loop, board, metrics, clock()), nonce)
        csp = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        return HTMLResponse(page, headers={"Content-Security-Policy": csp})

    return app


# -- pieces the handlers share ------------------------------------------------------------------


def _authorizer(token: SecretStr | None) -> Callable[..., None]:
    """The dependency guarding mutating endpoints: open without a token, bearer-checked with one."""
    if token is None:

        def open_access() -> None:
            return None

        return open_access

    expected = token.get_secret_value().encode("utf-8")

    def bearer_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        # Header values arrive decoded as latin-1; compare the raw octets in constant time.
        given = credentials.credentials.encode("latin-1") if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise StarletteHTTPException(
                401,
                "a valid bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="cutover"'},
            )

    return bearer_token


async def _read_body(request: Request, limits: IntakeLimits) -> bytes:
    """The body, counted while it arrives: refused as soon as it passes the limit."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.max_body_bytes:
            raise intake.body_too_large(limits)
        chunks.append(chunk)
    return b"".join(chunks)


def _accept_and_log(ledger: Ledger, requests: Sequence[ConversionRequest], now: float) -> AcceptResult:
    """Record the batch, then log a line per new conversion: both on a worker thread, as a batch of
    a thousand lines would otherwise hold up the event loop, and every request with it."""
    result = intake.accept(ledger, requests, now)
    _log_intake(requests, result.accepted, result.duplicates)
    return result


def _log_intake(requests: Sequence[ConversionRequest], accepted: list[str], duplicates: list[str]) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    fresh = set(accepted)
    for r in requests:
        if r.conversion_id in fresh:
            fresh.discard(r.conversion_id)
            log.info(
                "conversion.received", extra={"conversion_id": r.conversion_id, "tenant_id": r.tenant_id}
            )
    log.info("intake.accepted", extra={"accepted": len(accepted), "duplicates": len(duplicates)})


def _error(status: int, code: str, message: str, **where: Any) -> JSONResponse:
    detail = {"code": code, "message": message, **{k: v for k, v in where.items() if v is not None}}
    return JSONResponse({"error": detail}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    """Map the project's errors, FastAPI's validation errors and Starlette's HTTP errors to one JSON shape."""

    @app.exception_handler(CutoverError)
    async def _cutover(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, IntakeError):
            return _error(
                _INTAKE_STATUS[exc.problem], exc.problem.value, str(exc), item=exc.item, field=exc.field
            )
        if isinstance(exc, InputError):
            return _error(422, "invalid_input", str(exc))
        if isinstance(exc, NotFoundError):
            return _error(404, "not_found", str(exc))
        if isinstance(exc, ConflictError):
            return _error(409, "conflict", str(exc))
        if isinstance(exc, LedgerError | FlagError):
            log.warning("api.unavailable", extra={"path": request.url.path, "error": str(exc)})
            response = _error(503, "unavailable", str(exc))
            response.headers["Retry-After"] = "5"
            return response
        log.error("api.failed", extra={"path": request.url.path, "error": str(exc)})
        return _error(500, "internal", "internal error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        first = errors[0] if errors else {}
        loc = [str(part) for part in first.get("loc", ())]
        field = loc[-1] if loc else None
        where = f"{loc[0]} parameter {field!r}" if len(loc) >= 2 else "request"
        return _error(422, "invalid_parameter", f"{where}: {first.get('msg', 'invalid')}", field=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: Exception) -> JSONResponse:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        detail = exc.detail if isinstance(exc, StarletteHTTPException) else "error"
        response = _error(status, _HTTP_CODES.get(status, "error"), str(detail))
        if isinstance(exc, StarletteHTTPException) and exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api.failed", extra={"path": request.url.path}, exc_info=exc)
        return _error(500, "internal", "internal error")
