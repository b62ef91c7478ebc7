"""``GET /shadow``: the parity report of shadow runs, per rollout group and tenant (see
``controller.core.parity.build_report`` for the shape; add fields, never rename them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from controller.api.context import ApiContext, error_responses
from flags.document import MAX_TENANT_ID


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ShadowExample(_Open):
    conversion_id: str
    sheet: str
    cell: str
    legacy: str
    new: str


class ShadowTenant(_Open):
    tenant_id: int
    samples: int
    mismatches: int
    examples: list[ShadowExample]


class ShadowGroup(_Open):
    name: str
    samples: int
    mismatches: int
    mismatch_rate_upper95: float
    tenants: list[ShadowTenant]


class ShadowReportOut(_Open):
    enabled: bool
    groups: list[ShadowGroup]
    noise: list[dict[str, Any]]


def router(ctx: ApiContext) -> APIRouter:
    """The shadow report route of one app."""
    api = APIRouter(tags=["shadow"])

    @api.get("/shadow", response_model=ShadowReportOut, responses=error_responses(404, 422, 503))
    def shadow(
        group: Annotated[
            str | None, Query(min_length=1, max_length=64, description="A rollout group.")
        ] = None,
        tenant: Annotated[int | None, Query(ge=1, le=MAX_TENANT_ID, description="A tenant id.")] = None,
    ) -> dict[str, Any]:
        """Shadow runs compared per group and tenant: samples, mismatches beyond noise, the upper
        95% bound on the mismatch rate, examples of each mismatch and the noise learned."""
        shadows = ctx.service.shadows
        if shadows is None:
            return {"enabled": False, "groups": [], "noise": []}
        return {"enabled": True, **shadows.report(group=group, tenant=tenant)}

    return api
