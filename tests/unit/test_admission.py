"""split_budget(): how the one budget is shared between the paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.admission import Load, Split, clamp_threads, split_budget


@pytest.mark.parametrize(
    ("budget", "load", "expected"),
    [
        pytest.param(20, Load(0, 0, 0, 0), Split(0, 20), id="idle-new-gets-all"),
        pytest.param(20, Load(0, 0, 100, 0), Split(16, 4), id="only-legacy-capped-by-build-threads"),
        pytest.param(20, Load(0, 0, 10, 30), Split(5, 15), id="proportional-to-demand"),
        pytest.param(20, Load(0, 20, 10, 30), Split(0, 16), id="new-busy-legacy-waits-cap-lowered"),
        pytest.param(20, Load(8, 0, 10, 0), Split(10, 2), id="running-build-holds-its-threads"),
        pytest.param(20, Load(20, 0, 5, 5), Split(0, 0), id="all-threads-held"),
        pytest.param(20, Load(0, 0, 3, 0), Split(3, 17), id="small-legacy-batch"),
        pytest.param(4, Load(0, 0, 1, 1000), Split(1, 3), id="legacy-never-starved-to-zero"),
        pytest.param(5, Load(9, 0, 1, 1), Split(0, 0), id="budget-lowered-below-use"),
    ],
)
def test_split_table(budget, load, expected):
    assert split_budget(budget, load, max_build_threads=16) == expected


loads = st.builds(
    Load,
    legacy_in_use=st.integers(0, 60),
    new_running=st.integers(0, 60),
    legacy_waiting=st.integers(0, 500),
    new_waiting=st.integers(0, 500),
)


@given(budget=st.integers(1, 50), load=loads, threads=st.integers(1, 32))
def test_a_started_build_fits_beside_what_runs(budget, load, threads):
    """Threads of a build started now + running new jobs + held threads never exceed the budget."""
    split = split_budget(budget, load, threads)
    assert split.legacy_threads >= 0
    assert split.new_capacity >= 0
    assert split.legacy_threads <= threads
    assert split.legacy_threads <= load.legacy_waiting
    if split.legacy_threads:
        assert load.legacy_in_use + split.legacy_threads + load.new_running <= budget
    assert load.legacy_in_use + split.legacy_threads + split.new_capacity <= max(budget, load.legacy_in_use)


@given(budget=st.integers(1, 50), load=loads, threads=st.integers(1, 32))
def test_legacy_demand_always_gets_room_once_new_work_drains(budget, load, threads):
    """When the new path runs nothing, waiting legacy work with free budget starts a build."""
    drained = Load(load.legacy_in_use, 0, load.legacy_waiting, load.new_waiting)
    split = split_budget(budget, drained, threads)
    if load.legacy_waiting and budget > load.legacy_in_use:
        assert split.legacy_threads >= 1


@given(threads=st.integers(0, 40), budget=st.integers(1, 40), held=st.integers(0, 40), cap=st.integers(0, 40))
def test_clamp_keeps_build_within_what_the_new_cap_leaves(threads, budget, held, cap):
    t = clamp_threads(threads, budget, held, cap)
    assert 0 <= t <= threads
    assert t == 0 or held + cap + t <= budget


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        split_budget(0, Load(0, 0, 0, 0), 4)
