"""split_budget(): how the one budget is shared between the paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.admission import MAX_ROUNDS, Load, Split, build_items, clamp_threads, split_budget


@pytest.mark.parametrize(
    ("budget", "load", "expected"),
    [
        pytest.param(20, Load(0, 0, 0, 0), Split(0, 20), id="idle-new-gets-all"),
        pytest.param(20, Load(0, 0, 100, 0), Split(16, 4, 100), id="only-legacy-capped-by-build-threads"),
        pytest.param(20, Load(0, 0, 10, 30), Split(5, 15, 10), id="proportional-to-demand"),
        pytest.param(20, Load(0, 20, 10, 30), Split(0, 16), id="new-busy-legacy-waits-cap-lowered"),
        pytest.param(20, Load(8, 0, 10, 0), Split(10, 2, 10), id="running-build-holds-its-threads"),
        pytest.param(20, Load(20, 0, 5, 5), Split(0, 0), id="all-threads-held"),
        pytest.param(20, Load(0, 0, 3, 0), Split(3, 17, 3), id="small-legacy-batch"),
        pytest.param(4, Load(0, 0, 1, 1000), Split(1, 3, 1), id="legacy-never-starved-to-zero"),
        pytest.param(20, Load(0, 0, 1000, 1000), Split(10, 10, 320), id="build-takes-its-part-of-a-backlog"),
        pytest.param(20, Load(12, 8, 50, 400), Split(0, 8), id="over-its-share-legacy-does-not-ratchet"),
        pytest.param(20, Load(12, 0, 50, 5), Split(7, 1, 21), id="due-threads-share-the-backlog-with-held"),
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


@given(budget=st.integers(1, 50), load=loads, threads=st.integers(1, 32))
def test_a_build_takes_some_of_the_backlog_and_never_more_than_its_rounds(budget, load, threads):
    """A started build takes at least one waiting conversion, at most all of them, and never more
    than MAX_ROUNDS per thread; a split that starts no build names no items."""
    split = split_budget(budget, load, threads)
    if split.legacy_threads == 0:
        assert split.legacy_items is None
        return
    assert split.legacy_items is not None
    assert 1 <= split.legacy_items <= load.legacy_waiting
    assert split.legacy_items <= split.legacy_threads * MAX_ROUNDS


@given(budget=st.integers(1, 50), load=loads, threads=st.integers(1, 32))
def test_legacy_at_its_share_never_takes_budget_the_new_path_is_using(budget, load, threads):
    """Once the old path holds its proportional share, the new path's cap is not lowered for it while
    the new path has work running and waiting: the old path cannot creep up one thread a cycle."""
    held, waiting = load.legacy_in_use, load.legacy_waiting
    want_new = load.new_running + load.new_waiting
    free = max(0, budget - held)
    if not waiting or not free or load.new_running == 0 or load.new_waiting == 0:
        return
    share = -(-budget * (held + waiting) // (held + waiting + want_new))
    if held < share:
        return
    assert split_budget(budget, load, threads) == Split(0, free)


@given(threads=st.integers(1, 32), waiting=st.integers(0, 5000), held=st.integers(0, 60))
def test_builds_share_a_backlog_evenly_per_thread(threads, waiting, held):
    """Per thread, a build takes no more than the backlog spread over every thread the old path
    would then hold (rounded up), so no build is left with a long tail of its own."""
    items = build_items(threads, waiting, held)
    assert 0 <= items <= waiting
    assert items <= threads * -(-waiting // (held + threads))


@given(threads=st.integers(0, 40), budget=st.integers(1, 40), held=st.integers(0, 40), cap=st.integers(0, 40))
def test_clamp_keeps_build_within_what_the_new_cap_leaves(threads, budget, held, cap):
    t = clamp_threads(threads, budget, held, cap)
    assert 0 <= t <= threads
    assert t == 0 or held + cap + t <= budget


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        split_budget(0, Load(0, 0, 0, 0), 4)
