"""``GET /status`` and ``GET /metrics``: the status document and the Prometheus exposition, both
rendered from the read model and the process's memory (no ledger query of their own)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from controller.api.context import ApiContext, error_responses
from controller.api.schemas import StatusOut


def router(ctx: ApiContext) -> APIRouter:
    """The status routes of one app."""
    api = APIRouter(tags=["health"])

    # A plain ``def``: a part read after a cycle may query the ledger, off the event loop.
    @api.get("/status", response_model=StatusOut, responses=error_responses(503))
    def status() -> dict[str, Any]:
        """The flag in force, the budget, work in flight per path and conversions per state."""
        return ctx.views.status(ctx.loop, ctx.now(), intake=ctx.metrics.intake.snapshot())

    @api.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics_endpoint() -> Response:
        """Prometheus text format."""
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return api
