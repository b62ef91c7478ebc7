"""The HTTP face of a running controller (FastAPI): health, status, intake, explanations, metrics
and the dashboard.

``create_app`` only assembles: one router per concern (``controller.api.routes``), the response
headers, the error handlers and the guard of mutating endpoints. Handlers stay thin: validation
lives in ``controller.intake``, shaping in ``controller.api.status``, ``controller.api.tenants`` and
``controller.api.dashboard``, and what ``/status``, ``/tenants``, ``/metrics`` and the dashboard
show is read once per cycle by ``controller.api.readmodel``. They write only through the ledger;
they never call a backend or the flag source. Every error answer is one JSON shape
(``schemas.ErrorBody``) and never echoes credentials.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.api.context import ApiContext, error_responses
from controller.api.metrics import ServiceMetrics
from controller.api.readmodel import ReadModel
from controller.api.routes import conversions, dashboard, health, shadow, tenants
from controller.api.routes import status as status_routes
from controller.api.schemas import GatesOut
from controller.api.tenants import PlanFile
from controller.core.errors import (
    ConflictError,
    CutoverError,
    FlagError,
    InputError,
    LedgerError,
    NotFoundError,
)
from controller.engine.gates import gates_document
from controller.engine.loop import CycleLoop
from controller.intake.validation import IntakeError, IntakeLimits, IntakeProblem
from controller.plumbing.logs import LogBudget
from controller.service import Service

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
_ROUTERS = (
    health,
    status_routes,
    conversions,
    tenants,
    shadow,
    dashboard,
)  # the order the OpenAPI document lists


_BEARER = HTTPBearer(auto_error=False, description="CUTOVER_API_TOKEN, sent as a bearer token.")


def create_app(
    service: Service,
    loop: CycleLoop | None,
    *,
    metrics: ServiceMetrics | None = None,
    plan: PlanFile | None = None,
    views: ReadModel | None = None,
) -> FastAPI:
    """The app for one controller process.

    ``views`` is the read model the cycle loop refreshes (``CycleLoop(after_cycle=views.refresh)``);
    without one the app makes its own, which reads the ledger on the first request after each cycle.
    """
    settings = service.settings
    views = views or ReadModel(service, plan or PlanFile(settings.rollout_file))
    metrics = metrics or ServiceMetrics()
    metrics.observe(service, loop, counts=views.counts)
    ctx = ApiContext(
        service=service,
        loop=loop,
        views=views,
        metrics=metrics,
        limits=IntakeLimits(settings.max_request_items, settings.max_body_bytes),
        authorized=_authorizer(settings.api_token),
    )
    app = FastAPI(
        title="cutover",
        version="0.1.0",
        description="Routes each conversion to exactly one execution path under a feature flag.",
    )
    _install_error_handlers(app)
    app.middleware("http")(_headers)
    for concern in _ROUTERS:
        app.include_router(concern.router(ctx))

    @app.get("/gates", response_model=GatesOut, responses=error_responses(503), tags=["rollout"])
    def gates() -> dict[str, Any]:
        """The rollout gates: for each group on the new path, the evidence, checks and verdict."""
        return gates_document(service.gates)

    return app


async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
    response: Response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# -- what every route shares ------------------------------------------------------------------------


def _authorizer(token: SecretStr | None, budget: LogBudget | None = None) -> Callable[..., None]:
    """The dependency guarding mutating endpoints: open without a token, bearer-checked with one.
    A refusal says which of missing header, not a bearer token or wrong token it was (never the
    token itself), and is logged with the client's address and the route, rate limited."""
    if token is None:

        def open_access() -> None:
            return None

        return open_access

    expected = token.get_secret_value().encode("utf-8")
    budget = budget or LogBudget(burst=10, window_seconds=60.0)

    def bearer_token(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        reason = _refusal(request.headers.get("authorization"), expected)
        if reason is None:
            return
        held_back = budget.take()
        if held_back is not None:
            log.warning(
                "auth.rejected",
                extra={
                    "client": request.client.host if request.client else None,
                    "route": f"{request.method} {request.url.path}",
                    "reason": reason,
                    "held_back": held_back,  # rejections not logged since the line before
                },
            )
        raise StarletteHTTPException(
            401, _REFUSALS[reason], headers={"WWW-Authenticate": 'Bearer realm="cutover"'}
        )

    return bearer_token


_REFUSALS = {
    "missing_header": "no Authorization header: send 'Authorization: Bearer <token>' with the service's "
    "CUTOVER_API_TOKEN",
    "not_bearer": "the Authorization header is not a bearer token: send 'Authorization: Bearer <token>'",
    "wrong_token": "the bearer token is not the one this service expects (its CUTOVER_API_TOKEN)",
}


def _refusal(header: str | None, expected: bytes) -> str | None:
    """Why ``header`` does not authorize a request (a key of ``_REFUSALS``), or None when it does."""
    if header is None or not header.strip():
        return "missing_header"
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "not_bearer"
    # Header values arrive decoded as latin-1; compare the raw octets in constant time.
    if not hmac.compare_digest(given.encode("latin-1", "replace"), expected):
        return "wrong_token"
    return None


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
