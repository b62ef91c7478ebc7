"""The conversion routes: ``POST /conversions`` (intake), ``GET /conversions`` (a page),
``GET /conversions/{id}`` (one record) and ``POST /conversions/{id}/requeue``.

Validation lives in ``controller.intake``; these handlers read the body under its limits, write
through the ledger and tell the read model what they changed. The two reads are per request by
nature (one record, one page) and go to the ledger directly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from controller.api.context import ApiContext, error_responses
from controller.api.readmodel import Part
from controller.api.schemas import Accepted, ConversionOut, ConversionPage, PathName, StateName
from controller.core.domain import ConversionRequest, ConversionState
from controller.core.domain import Path as ExecPath
from controller.core.errors import InputError, NotFoundError
from controller.core.ports import AcceptResult, Ledger
from controller.intake import validation as intake
from controller.intake.validation import IntakeError, IntakeLimits
from flags.document import MAX_TENANT_ID

log = logging.getLogger("cutover.api")

ConversionIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=intake.CONVERSION_ID_SCHEMA_PATTERN,
        description="1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit.",
    ),
]
TenantQuery = Annotated[int | None, Query(ge=1, le=MAX_TENANT_ID)]
CursorQuery = Annotated[str | None, Query(max_length=256, description="next_cursor of the page before")]
LimitQuery = Annotated[int, Query(ge=1, le=1000)]


def router(ctx: ApiContext) -> APIRouter:
    """The conversion routes of one app; the two writes behind ``ctx.authorized``."""
    api = APIRouter(tags=["conversions"])
    guarded = [Depends(ctx.authorized)]
    body = {"required": True, "content": {"application/json": {"schema": intake.request_schema(ctx.limits)}}}

    @api.post(
        "/conversions",
        status_code=202,
        response_model=Accepted,
        responses=error_responses(400, 401, 409, 413, 415, 422, 503),
        dependencies=guarded,
        openapi_extra={"requestBody": body},
    )
    async def submit(request: Request) -> JSONResponse:
        """Record a batch of conversions durably; a known id is a duplicate, never a second one."""
        result = await receive(ctx, request)
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates}, status_code=202)

    @api.get("/conversions", response_model=ConversionPage, responses=error_responses(422, 503))
    def list_conversions(
        state: StateName | None = None,
        path: PathName | None = None,
        tenant: TenantQuery = None,
        cursor: CursorQuery = None,
        limit: LimitQuery = 100,
    ) -> ConversionPage:
        """Conversions in receipt order, filtered, one page at a time."""
        return page(ctx.service.ledger, state, path, tenant, cursor, limit)

    @api.get(
        "/conversions/{conversion_id}", response_model=ConversionOut, responses=error_responses(404, 422, 503)
    )
    def get_conversion(conversion_id: ConversionIdPath) -> ConversionOut:
        """One conversion: which path, which flag version, why, which job, what outcome."""
        record = ctx.service.ledger.get(conversion_id)
        if record is None:
            raise NotFoundError(f"conversion {conversion_id!r} is not in the ledger")
        return ConversionOut.of(record)

    @api.post(
        "/conversions/{conversion_id}/requeue",
        response_model=ConversionOut,
        responses=error_responses(401, 404, 409, 422, 503),
        dependencies=guarded,
    )
    def requeue(conversion_id: ConversionIdPath, request: Request) -> ConversionOut:
        """Free a terminally failed conversion so the next cycle routes it afresh (409 otherwise)."""
        return requeue_one(ctx, conversion_id, request.client.host if request.client else None)

    return api


async def receive(ctx: ApiContext, request: Request) -> AcceptResult:
    """Check, read and parse the body under the limits, then record the batch (counted either way)."""
    try:
        intake.check_content_type(request.headers.get("content-type"))
        intake.check_declared_length(request.headers.get("content-length"), ctx.limits)
        raw = await read_body(request, ctx.limits)
        requests = await run_in_threadpool(intake.parse_intake, raw, ctx.limits)
    except IntakeError:
        ctx.metrics.intake.record(rejected=True)
        raise
    result = await run_in_threadpool(accept_and_log, ctx.service.ledger, requests, ctx.now())
    if result.accepted:
        ctx.views.wrote(Part.COUNTS)
    ctx.metrics.intake.record(accepted=len(result.accepted), duplicates=len(result.duplicates))
    await run_in_threadpool(ctx.views.changed)
    return result


async def read_body(request: Request, limits: IntakeLimits) -> bytes:
    """The body, counted while it arrives: refused as soon as it passes the limit."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.max_body_bytes:
            raise intake.body_too_large(limits)
        chunks.append(chunk)
    return b"".join(chunks)


def accept_and_log(ledger: Ledger, requests: Sequence[ConversionRequest], now: float) -> AcceptResult:
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


def page(
    ledger: Ledger,
    state: StateName | None,
    path: PathName | None,
    tenant: int | None,
    cursor: str | None,
    limit: int,
) -> ConversionPage:
    """One page of conversions; a cursor this service did not give out is the caller's error."""
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


def requeue_one(ctx: ApiContext, conversion_id: str, client: str | None) -> ConversionOut:
    """Free one failed conversion, log who asked, and let the read model see it."""
    record = ctx.service.ledger.requeue(conversion_id, ctx.now())
    ctx.views.wrote(Part.COUNTS, Part.FAILURES)
    ctx.views.changed()
    log.info(
        "conversion.requeued",
        extra={"conversion_id": conversion_id, "tenant_id": record.tenant_id, "client": client},
    )
    return ConversionOut.of(record)
