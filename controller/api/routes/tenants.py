"""``GET /tenants`` (the rollout groups and each tenant's cutover state, from the read model) and
``GET /tenants/{id}/route`` (where one tenant would route now; its unfinished work is read per
request, as only that tenant's rows are wanted)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from controller.api.context import ApiContext, error_responses
from controller.api.schemas import RouteOut, TenantsOut
from controller.api.tenants import overview_document, route_document, tenant_in_flight
from flags.document import MAX_TENANT_ID

TenantIdPath = Annotated[int, Path(ge=1, le=MAX_TENANT_ID, description="A tenant id, a whole number ≥ 1.")]


def router(ctx: ApiContext) -> APIRouter:
    """The tenant routes of one app."""
    api = APIRouter(tags=["tenants"])

    @api.get("/tenants", response_model=TenantsOut, responses=error_responses(503))
    def tenants() -> dict[str, Any]:
        """Per rollout group: tenants, how many the flag lists, and each one's cutover state."""
        doc = overview_document(ctx.views.tenants(ctx.views.flag(ctx.now()).snapshot))
        held = ctx.service.held() if ctx.service.held else None
        return doc | {"held": None if held is None else [h.as_json() for h in held.values()]}

    @api.get("/tenants/{tenant_id}/route", response_model=RouteOut, responses=error_responses(404, 422, 503))
    def route(tenant_id: TenantIdPath) -> dict[str, Any]:
        """Where the tenant's next conversion would go now, under which flag version, and why."""
        doc = route_document(
            tenant_id,
            ctx.views.flag(ctx.now()),
            ctx.service.controller.config.routing,
            tenant_in_flight(ctx.service.ledger, tenant_id),
            ctx.views.plan.group_of(tenant_id),
        )
        hold = ctx.service.held().get(tenant_id) if ctx.service.held else None
        return doc | {"held": hold.as_json() if hold else None}

    return api
