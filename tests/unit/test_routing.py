"""decide(), decide_tenants() and basis(): the routing decision table and its invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.domain import Path
from controller.core.routing import (
    FallbackPolicy,
    RoutingPolicy,
    StalePolicy,
    basis,
    decide,
    decide_tenants,
)
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus


def snap(ids: set[int], enabled: bool = True, version: str = "7") -> FlagSnapshot:
    return FlagSnapshot(version, enabled, frozenset(ids), "test", 100.0)


LEGACY_POLICY = RoutingPolicy()
PAUSE_POLICY = RoutingPolicy(on_flag_unavailable=FallbackPolicy.PAUSE)


@pytest.mark.parametrize(
    ("tenant", "snapshot", "policy", "path", "version"),
    [
        pytest.param(5, snap({5}), LEGACY_POLICY, Path.NEW, "7", id="listed-goes-new"),
        pytest.param(6, snap({5}), LEGACY_POLICY, Path.LEGACY, "7", id="unlisted-goes-legacy"),
        pytest.param(5, snap({5}, enabled=False), LEGACY_POLICY, Path.LEGACY, "7", id="kill-switch"),
        pytest.param(5, None, LEGACY_POLICY, Path.LEGACY, None, id="no-flag-legacy"),
        pytest.param(5, None, PAUSE_POLICY, None, None, id="no-flag-pause"),
        pytest.param(5, snap({5}), PAUSE_POLICY, Path.NEW, "7", id="pause-policy-irrelevant-with-flag"),
        pytest.param(5, snap(set()), LEGACY_POLICY, Path.LEGACY, "7", id="empty-list"),
    ],
)
def test_decision_table(tenant, snapshot, policy, path, version):
    decision = decide(tenant, snapshot, policy)
    assert decision.path is path
    assert decision.flag_version == version
    assert decision.reason


@given(
    tenant=st.integers(min_value=1, max_value=2**53 - 1),
    ids=st.frozensets(st.integers(min_value=1, max_value=2**53 - 1), max_size=50),
    enabled=st.booleans(),
)
def test_new_only_when_an_enabled_flag_lists_the_tenant(tenant, ids, enabled):
    """The one way to the new path: a valid, enabled flag that lists the tenant."""
    decision = decide(tenant, FlagSnapshot("v", enabled, ids, "t", 0.0), LEGACY_POLICY)
    assert (decision.path is Path.NEW) == (enabled and tenant in ids)
    assert decision.path in (Path.NEW, Path.LEGACY)


@given(tenant=st.integers(min_value=1), policy=st.sampled_from([LEGACY_POLICY, PAUSE_POLICY]))
def test_without_a_flag_nothing_goes_new(tenant, policy):
    assert decide(tenant, None, policy).path is not Path.NEW


SNAPSHOTS = st.none() | st.builds(
    FlagSnapshot,
    version=st.sampled_from(["6", "7"]),
    enabled=st.booleans(),
    tenant_ids=st.frozensets(st.integers(min_value=1, max_value=40), max_size=20),
    source=st.just("t"),
    fetched_at=st.just(0.0),
)


@given(
    tenants=st.lists(st.integers(min_value=1, max_value=40), max_size=60),
    snapshot=SNAPSHOTS,
    policy=st.sampled_from([LEGACY_POLICY, PAUSE_POLICY]),
)
def test_deciding_tenants_together_answers_as_deciding_each(tenants, snapshot, policy):
    """Each tenant lands in exactly one group, whose decision is what ``decide`` says for it;
    at most one group per outcome."""
    groups = decide_tenants(tenants, snapshot, policy)
    seen: list[int] = []
    for decision, members in groups:
        assert members
        seen += members
        for tenant in members:
            assert decide(tenant, snapshot, policy) == decision
    assert sorted(seen) == sorted(set(tenants))
    assert len(groups) <= 2
    assert len({d for d, _ in groups}) == len(groups)


def test_deciding_no_tenants_gives_no_groups():
    assert decide_tenants([], snap({1}), LEGACY_POLICY) == []


def test_basis_keeps_the_last_good_flag_when_the_source_fails():
    """A source failure never changes the snapshot routed by; it only explains itself."""
    good = snap({1, 2})
    for state in (FlagState.UNAVAILABLE, FlagState.INVALID, FlagState.STALE):
        b = basis(FlagStatus(good, state, 150.0, "agent down"), LEGACY_POLICY)
        assert b.snapshot is good
        assert not b.hold
        assert "agent down" in b.reason


def test_basis_holds_a_too_old_flag_only_under_the_pause_policy():
    old = snap({1})
    status = FlagStatus(old, FlagState.UNAVAILABLE, 100.0 + 3600, "down")
    serve = RoutingPolicy(max_flag_age_seconds=600, on_stale_flag=StalePolicy.SERVE)
    pause = RoutingPolicy(max_flag_age_seconds=600, on_stale_flag=StalePolicy.PAUSE)
    assert not basis(status, serve).hold
    held = basis(status, pause)
    assert held.hold
    assert "3600s old" in held.reason


def test_basis_without_any_flag_follows_the_fallback_policy():
    status = FlagStatus(None, FlagState.UNAVAILABLE, 0.0, "not deployed")
    assert not basis(status, LEGACY_POLICY).hold
    assert basis(status, PAUSE_POLICY).hold
