"""``GET /healthz`` and ``GET /readyz``: liveness of the process and its cycle loop, readiness to route.

``/healthz`` runs on the event loop and reads memory only, so it answers while every worker
thread is busy; ``/readyz`` asks the ledger, as readiness means it answers now.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller.api.context import ApiContext
from controller.api.schemas import Health, Ready


def router(ctx: ApiContext) -> APIRouter:
    """The health routes of one app."""
    api = APIRouter(tags=["health"])

    @api.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> JSONResponse:
        """200 while the process and its cycle loop are alive (answered on the event loop: it reads
        only memory, so it needs no worker thread)."""
        ok = ctx.loop is None or ctx.loop.healthy(ctx.now())
        body = {"status": "ok" if ok else "cycle loop stalled", "cycles": ctx.service.controller.cycles}
        return JSONResponse(body, status_code=200 if ok else 503)

    @api.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
    def readyz() -> JSONResponse:
        """200 when the ledger answers and routing has a basis; 503 with the reason otherwise."""
        ready, reason = ctx.views.readiness(ctx.now(), probe=True)
        return JSONResponse({"ready": ready, "reason": reason}, status_code=200 if ready else 503)

    return api
