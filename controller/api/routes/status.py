"""``GET /status`` and ``GET /metrics``: the status document and the Prometheus exposition, both
rendered from the read model and the process's memory (no ledger query of their own).

``/status`` is answered with bytes made beforehand (``PreparedStatus``): the cycle and the intake
keep the interpreter busy during a burst, and a request that validates and serialises a document
waits for the interpreter lock at every step, each wait up to the switch interval. Made once per
cycle and per write through this API, the answer costs a request no more than ``/healthz`` does.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from controller.api.context import ApiContext, error_responses
from controller.api.schemas import StatusOut
from controller.core.errors import CutoverError


class PreparedStatus:
    """The ``/status`` answer as bytes, with what it was made from: the read model's version and
    the intake counters. Made again by the read model's listeners (after each cycle, each write
    through this API), or by a request that finds it out of date (a cycle run outside the loop,
    an intake request refused). Its times (the flag's age) are those of when it was made. As the
    read model's parts, it is made ahead only while someone asks for it: a cycle after which no
    request came leaves it to the next request."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._made: tuple[tuple[object, ...], bytes] | None = None
        self._lock = threading.Lock()
        self._wanted = False  # asked for since the listeners last made it

    def _key(self) -> tuple[object, ...]:
        return (*self.ctx.views.version(), *self.ctx.metrics.intake.snapshot().values())

    def current(self) -> bytes | None:
        """The answer, if nothing it was made from has changed since."""
        self._wanted = True
        made = self._made
        if made is not None and made[0] == self._key():
            return made[1]
        return None

    def prepare(self) -> bytes:
        """Make the answer now (may read the ledger: off the event loop); ``CutoverError`` as
        the document would raise it."""
        ctx = self.ctx
        with self._lock:
            key = self._key()  # taken first: a change while it is made leaves it out of date
            doc = ctx.views.status(ctx.loop, ctx.now(), intake=ctx.metrics.intake.snapshot())
            body = bytes(JSONResponse(StatusOut.model_validate(doc).model_dump(mode="json")).body)
            self._made = (key, body)
            return body

    def prepare_quietly(self) -> None:
        """``prepare`` for the read model's listeners: a failed read is left to the next request,
        which makes it again and answers the error."""
        if not self._wanted:
            return
        self._wanted = False
        try:
            self.prepare()
        except CutoverError:
            self._made = None


def router(ctx: ApiContext) -> APIRouter:
    """The status routes of one app."""
    api = APIRouter(tags=["health"])
    prepared = PreparedStatus(ctx)
    ctx.views.on_change(prepared.prepare_quietly)

    # On the event loop: the usual answer is bytes made already. Making it may query the ledger,
    # so that goes to a worker thread.
    @api.get("/status", response_model=StatusOut, responses=error_responses(503))
    async def status() -> Response:
        """The flag in force, the budget, work in flight per path and conversions per state."""
        body = prepared.current()
        if body is None:
            body = await run_in_threadpool(prepared.prepare)
        return Response(body, media_type="application/json")

    @api.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics_endpoint() -> Response:
        """Prometheus text format."""
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return api
