"""``GET /``: the dashboard page, rendered from the read model under a fresh nonce per response
(the page's one style block and one script run under a strict Content-Security-Policy)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from controller.api import dashboard
from controller.api.context import ApiContext


def router(ctx: ApiContext) -> APIRouter:
    """The dashboard route of one app."""
    api = APIRouter(tags=["dashboard"])

    @api.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        """The dashboard."""
        nonce = secrets.token_urlsafe(16)
        page = dashboard.render(dashboard.gather(ctx.views, ctx.loop, ctx.metrics, ctx.now()), nonce)
        return HTMLResponse(page, headers={"Content-Security-Policy": content_policy(nonce)})

    return api


def content_policy(nonce: str) -> str:
    """Nothing from elsewhere; the page's own style and script only under this response's nonce."""
    return (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
