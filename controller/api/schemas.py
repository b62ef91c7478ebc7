"""The JSON shapes of the HTTP API as pydantic models: what ``/openapi.json`` publishes and what
every answer is checked against. Field names follow DESIGN.md; additions only, no renames.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.core.domain import ConversionRecord, ConversionState

PathName = Literal["legacy", "new"]
StateName = Literal["received", "claimed", "dispatching", "dispatched", "succeeded", "failed"]
FlagStateName = Literal["ok", "stale", "unavailable", "invalid", "disabled"]
TenantStateName = Literal["legacy", "draining-to-new", "new", "draining-to-legacy"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Out):
    """What went wrong; ``item`` and ``field`` point at the part of the request at fault."""

    code: str
    message: str
    item: int | None = None
    field: str | None = None


class ErrorBody(_Out):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


class Health(_Out):
    status: str
    cycles: int


class Ready(_Out):
    ready: bool
    reason: str


class FlagOut(_Out):
    version: str | None
    enabled: bool | None
    tenant_count: int
    source: str
    age_seconds: float | None
    state: FlagStateName
    problem: str


class PerPath(_Out):
    legacy: int
    new: int


class StateCounts(_Out):
    received: int
    claimed: int
    dispatching: int
    dispatched: int
    succeeded: int
    failed: int


class PathStateCounts(_Out):
    claimed: int
    dispatching: int
    dispatched: int
    succeeded: int
    failed: int


class ByPath(_Out):
    legacy: PathStateCounts
    new: PathStateCounts


class CycleOut(_Out):
    count: int
    held: bool
    hold_reason: str
    new_capacity: int
    legacy_threads: int
    dispatcher: bool
    duration_seconds: float | None
    errors: list[str]
    last_error: str | None


class VersionUseOut(_Out):
    flag_version: str | None
    legacy: int
    new: int
    first_minute_at: int
    last_minute_at: int


class SkewOut(_Out):
    window_seconds: int
    skewed: bool
    versions: list[VersionUseOut]


class SourceOut(_Out):
    """A scheduled finder or a queue: what it did lately."""

    name: str
    kind: str
    last_run_at: float | None
    last_slot: float | None
    runs: int
    found: int
    accepted: int
    duplicates: int
    malformed: int
    errors: int
    last_error: str
    watermark: str | None


class IntakeOut(_Out):
    waiting: int
    requests: int
    rejected: int
    accepted: int
    duplicates: int
    sources: list[SourceOut]


class AutoActionOut(_Out):
    action: Literal["advance", "rollback", "pause", "stuck"]
    group: str | None
    version: int | None
    at: float
    why: str


class AutoAdvanceOut(_Out):
    """Auto-advance: on or off (the rollout plan's ``auto:``), whether this replica acts (holds its
    lease), the next action, from when, and what it waits for."""

    enabled: bool
    acting: bool = False
    next_action: Literal["advance", "rollback", "pause", "notify_stuck", "wait", "done"] | None = None
    group: str | None = None
    at: float | None = None
    waiting_for: str | None = None
    why: str = ""
    last_action: AutoActionOut | None = None


class StatusOut(_Out):
    """``GET /status``."""

    flag: FlagOut
    budget: int
    in_flight: PerPath
    queued: PerPath
    conversions: StateCounts
    by_path: ByPath
    last_cycle_at: float | None
    warnings: list[str]
    cycle: CycleOut
    skew: SkewOut
    intake: IntakeOut
    auto_advance: AutoAdvanceOut


class ConversionOut(_Out):
    """``GET /conversions/{id}``: one conversion and its audit fields."""

    conversion_id: str
    tenant_id: int
    path: PathName | None
    flag_version: str | None
    state: StateName
    job_ref: str | None
    attempts: int
    claimed_at: float | None
    finished_at: float | None
    reason: str
    params: dict[str, str]
    received_at: float | None
    dispatched_at: float | None
    updated_at: float | None
    output: str | None = Field(None, description="Where a succeeded conversion's result went.")

    @classmethod
    def of(cls, r: ConversionRecord) -> ConversionOut:
        # The ledger keeps a succeeded conversion's output where a failed one keeps its reason.
        succeeded = r.state is ConversionState.SUCCEEDED
        return cls(
            conversion_id=r.conversion_id,
            tenant_id=r.tenant_id,
            path=r.path.value if r.path else None,
            flag_version=r.flag_version,
            state=r.state.value,
            job_ref=r.job_ref,
            attempts=r.attempts,
            claimed_at=r.claimed_at,
            finished_at=r.finished_at,
            reason="" if succeeded else r.reason,
            params=r.params,
            received_at=r.received_at,
            dispatched_at=r.dispatched_at,
            updated_at=r.updated_at,
            output=(r.reason or None) if succeeded else None,
        )


class ConversionPage(_Out):
    """``GET /conversions``: one page, and the cursor of the next (null on the last page)."""

    conversions: list[ConversionOut]
    next_cursor: str | None


class Accepted(_Out):
    """``POST /conversions``: ids recorded now, and ids already known (never a second conversion)."""

    accepted: list[str]
    duplicates: list[str]


class InFlightConversion(_Out):
    conversion_id: str
    path: PathName
    state: StateName


class RouteOut(_Out):
    """``GET /tenants/{id}/route``: where the tenant's next conversion would go now, and why."""

    tenant_id: int
    path: PathName | None
    flag_version: str | None
    reason: str
    flag_state: FlagStateName
    cutover_state: TenantStateName
    group: str | None
    in_flight: PerPath
    in_flight_conversions: list[InFlightConversion] = Field(
        description="Up to 50 of the tenant's owned, unfinished conversions."
    )
    held: HeldTenant | None = Field(None, description="Set when the tenant is held back from the rollout.")


class TenantStates(_Out):
    legacy: int
    draining_to_new: int = Field(alias="draining-to-new")
    new: int
    draining_to_legacy: int = Field(alias="draining-to-legacy")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class GroupOut(_Out):
    name: str
    tenants: int
    migrated: int
    states: TenantStates


class DrainingTenant(_Out):
    tenant_id: int
    group: str
    state: TenantStateName
    in_flight: PerPath


class HeldTenant(_Out):
    """A tenant taken out by ``cutover flag rollback --tenant``, kept out until released."""

    tenant_id: int
    version: int
    by: str
    at: str
    why: str


class TenantsOut(_Out):
    """``GET /tenants``: per rollout group, how many tenants the flag lists and where each stands."""

    flag_version: str | None
    flag_tenants: int
    groups: list[GroupOut]
    states: TenantStates
    draining: list[DrainingTenant]
    draining_total: int
    plan_problem: str
    complete: bool
    held: list[HeldTenant] | None = Field(
        None,
        description="Tenants held back, with who, when and why; null where the flag's history is not read.",
    )


# -- rollout gates -----------------------------------------------------------------------------

VerdictName = Literal["pass", "fail", "inconclusive"]


class GateCheckOut(BaseModel):
    """One comparison; a check may add its own figures (interval bounds, p-value, effect size)."""

    model_config = ConfigDict(extra="allow")

    name: str
    statistic: float | None
    threshold: float
    verdict: VerdictName
    reason: str


class GateEvidenceOut(_Out):
    finished: int
    succeeded: int
    failed: int
    failed_first_attempt: int
    failed_after_resubmit: int
    resubmitted: int
    resubmits: int
    success_rate: float | None
    duration_p50_seconds: float | None
    duration_p95_seconds: float | None
    duration_basis: str
    cost_per_conversion: float | None
    basis: str | None = None


class GateWindowOut(_Out):
    since: float
    until: float
    moved_at: float | None


class GateGroupOut(_Out):
    name: str
    tenants: int
    migrated: int
    verdict: VerdictName
    reasons: list[str]
    window: GateWindowOut
    new: GateEvidenceOut
    legacy: GateEvidenceOut
    checks: list[GateCheckOut]


class GatesWindowOut(_Out):
    until: float
    seconds: float | None
    max_seconds: float
    default: str


class GatesOut(_Out):
    """``GET /gates``: per rollout group on the new path, the evidence, the checks and the verdict."""

    window: GatesWindowOut
    groups: list[GateGroupOut]
    verdict: VerdictName
    reasons: list[str]
