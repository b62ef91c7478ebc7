"""The routing decision: which path a tenant's conversion goes to under one flag snapshot. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass
from enum import StrEnum

from controller.core.domain import Path
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus


class FallbackPolicy(StrEnum):
    """What to do when there is no usable flag: route to the old path, or hold the work."""

    LEGACY = "legacy"
    PAUSE = "pause"


class StalePolicy(StrEnum):
    """What to do when the last good flag is older than allowed: keep serving it, or hold the work."""

    SERVE = "serve"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The operator's choices for routing without a fresh, valid flag."""

    on_flag_unavailable: FallbackPolicy = FallbackPolicy.LEGACY
    on_stale_flag: StalePolicy = StalePolicy.SERVE
    max_flag_age_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a conversion goes (``None`` = hold it this cycle), under which flag version, and why."""

    path: Path | None
    flag_version: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Basis:
    """What a whole cycle routes by: the snapshot to use, or a reason to route everything one way."""

    snapshot: FlagSnapshot | None
    hold: bool
    reason: str


def basis(status: FlagStatus, policy: RoutingPolicy) -> Basis:
    """Pick the routing basis for a cycle from the flag's status and the policy."""
    snap = status.snapshot
    if snap is None:
        why = f"no valid flag seen yet ({status.state.value}: {status.problem or 'none'})"
        hold = policy.on_flag_unavailable is FallbackPolicy.PAUSE
        return Basis(None, hold, why)
    age = status.age_seconds or 0.0
    too_old = policy.max_flag_age_seconds is not None and age > policy.max_flag_age_seconds
    if too_old and policy.on_stale_flag is StalePolicy.PAUSE:
        return Basis(snap, True, f"flag {snap.version} is {age:.0f}s old, over the allowed age")
    if status.state is FlagState.OK or status.state is FlagState.DISABLED:
        return Basis(snap, False, "")
    return Basis(snap, False, f"last good flag kept ({status.state.value}: {status.problem})")


def decide(tenant_id: int, snapshot: FlagSnapshot | None, policy: RoutingPolicy) -> Decision:
    """Route one tenant: NEW only when an enabled, valid flag lists it; otherwise LEGACY or hold."""
    if snapshot is None:
        return _without_flag(policy)
    if not snapshot.enabled:
        return _switched_off(snapshot)
    if tenant_id in snapshot.tenant_ids:
        return _listed(snapshot)
    return _not_listed(snapshot)


def decide_tenants(
    tenant_ids: Iterable[int], snapshot: FlagSnapshot | None, policy: RoutingPolicy
) -> list[tuple[Decision, Set[int]]]:
    """``decide`` for many tenants at once: each distinct decision with the tenants it applies to.

    The same answers as ``decide`` tenant by tenant, worked out with set operations and one
    ``Decision`` per outcome (at most two), so routing a burst costs no object per tenant.
    """
    tenants = set(tenant_ids)
    if not tenants:
        return []
    if snapshot is None:
        return [(_without_flag(policy), tenants)]
    if not snapshot.enabled:
        return [(_switched_off(snapshot), tenants)]
    listed = tenants & snapshot.tenant_ids
    groups: list[tuple[Decision, Set[int]]] = []
    if listed:
        groups.append((_listed(snapshot), listed))
    if len(listed) < len(tenants):
        groups.append((_not_listed(snapshot), tenants - listed))
    return groups


def _without_flag(policy: RoutingPolicy) -> Decision:
    if policy.on_flag_unavailable is FallbackPolicy.PAUSE:
        return Decision(None, None, "no valid flag seen yet; holding work (policy: pause)")
    return Decision(Path.LEGACY, None, "no valid flag seen yet; old path (policy: legacy)")


def _switched_off(snapshot: FlagSnapshot) -> Decision:
    return Decision(Path.LEGACY, snapshot.version, f"flag {snapshot.version} is switched off")


def _listed(snapshot: FlagSnapshot) -> Decision:
    return Decision(Path.NEW, snapshot.version, f"tenant listed in flag {snapshot.version}")


def _not_listed(snapshot: FlagSnapshot) -> Decision:
    return Decision(Path.LEGACY, snapshot.version, f"tenant not listed in flag {snapshot.version}")
