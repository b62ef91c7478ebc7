"""The HTTP face of a running controller (FastAPI): health, readiness and status.

Handlers read what the cycle keeps and write only through the ledger; they never call a backend.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from controller.errors import CutoverError
from controller.loop import CycleLoop
from controller.routing import basis
from controller.service import Service
from controller.status import status_document


def create_app(service: Service, loop: CycleLoop | None) -> FastAPI:
    """The app for one controller process."""
    app = FastAPI(title="cutover", version="0.1.0")
    clock = service.clock

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        ok = loop is None or loop.healthy(clock())
        body = {"status": "ok" if ok else "cycle loop stalled", "cycles": service.controller.cycles}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        try:
            service.ledger.ping()
        except CutoverError as exc:
            return JSONResponse({"ready": False, "reason": f"ledger: {exc}"}, status_code=503)
        status = service.flags.last
        if status is not None:
            routing = basis(status, service.controller.config.routing)
            if routing.hold:
                return JSONResponse({"ready": False, "reason": routing.reason}, status_code=503)
        return JSONResponse({"ready": True, "reason": ""})

    @app.get("/status")
    def status() -> dict[str, Any]:
        return status_document(service, loop, clock())

    return app
