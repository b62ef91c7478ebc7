"""Fixed, deterministic replays of what the state machine found, so each stays fixed on every run.

Each test is the shortest story of one failure the machine shrank to, told with the same fakes.
"""

from __future__ import annotations

import pytest

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.ports import Claim, Dispatched, Finish
from controller.core.transitions import RetryPolicy
from controller.engine.cycle import Controller, CycleConfig
from tests.contract.conftest import LEDGER_FACTORIES
from tests.fakes import FakeBackend, FakeClock, FakeFlags, Tripwire, World

S = ConversionState


def world_of(ledger, clock: FakeClock, *, budget: int = 4, resubmits: int = 1, can_cap: bool = True, **cfg):
    world = World(budget=budget)
    legacy = FakeBackend(Path.LEGACY, world, ticks=1)
    new = FakeBackend(Path.NEW, world, ticks=1, can_cap=can_cap)
    config = CycleConfig(
        budget=budget,
        legacy_max_threads=2,
        intent_grace_seconds=60,
        lease_seconds=30,
        retry=RetryPolicy(resubmits=resubmits),
        **cfg,
    )
    return world, legacy, new, config


def controller(ledger, clock, flags, backends, config, holder):
    return Controller(
        ledger=ledger, flags=flags, backends=backends, config=config, clock=clock, holder=holder
    )


def two_replicas(ledger, clock):
    """Replicas A and B over one old path, A's calls to it through a tripwire, and one conversion
    ("x") for it: the stage of the late-submit stories."""
    world, legacy, new, config = world_of(ledger, clock, resubmits=0)
    flags = FakeFlags.none()
    wire = Tripwire(legacy)
    a = controller(ledger, clock, flags, {Path.LEGACY: wire, Path.NEW: new}, config, "a")
    b = controller(ledger, clock, flags, {Path.LEGACY: legacy, Path.NEW: new}, config, "b")
    ledger.accept([ConversionRequest("x", 1, {})], clock())
    return world, legacy, wire, a, b


def settle(controllers, world, clock, ledger, rounds=50):
    for _ in range(rounds):
        for c in controllers:
            c.run_cycle()
        world.tick()
        clock.advance(1)
        assert world.load() <= world.budget
        if all(r.state.terminal for r in ledger.query(limit=1000)[0]):
            return
    raise AssertionError(f"not settled: {ledger.counts()}")


def test_a_refused_submit_does_not_use_up_a_resubmit(sqlite_ledger, clock):
    """Promise 1 (retries): with one resubmit, a conversion whose first submit was refused and whose
    job then fails still gets its clone-and-resubmit - two real runs, not one."""
    world, legacy, new, config = world_of(sqlite_ledger, clock, resubmits=1)
    c = controller(sqlite_ledger, clock, FakeFlags.none(), {Path.LEGACY: legacy, Path.NEW: new}, config, "a")
    sqlite_ledger.accept([ConversionRequest("x", 1, {})], clock())
    legacy.reject_next = True
    legacy.fail_once.add("x")
    c.run_cycle()
    assert sqlite_ledger.get("x").attempts == 0
    settle([c], world, clock, sqlite_ledger)
    assert [r.outcome.value for r in world.runs] == ["failed", "succeeded"]
    assert sqlite_ledger.get("x").state is S.SUCCEEDED


def test_requeue_gives_the_retries_back(sqlite_ledger, clock):
    """Promise 1 (retries): after an operator's requeue, a conversion again has 1 + resubmits runs."""
    world, legacy, new, config = world_of(sqlite_ledger, clock, resubmits=1)
    c = controller(sqlite_ledger, clock, FakeFlags.none(), {Path.LEGACY: legacy, Path.NEW: new}, config, "a")
    sqlite_ledger.accept([ConversionRequest("x", 1, {})], clock())
    legacy.fail_ids.add("x")
    settle([c], world, clock, sqlite_ledger)
    assert sqlite_ledger.get("x").state is S.FAILED
    assert len(world.runs) == 2
    sqlite_ledger.requeue("x", clock())
    settle([c], world, clock, sqlite_ledger)
    assert sqlite_ledger.get("x").state is S.FAILED
    assert len(world.runs) == 4
    assert sqlite_ledger.get("x").attempts == 2


def test_a_late_submit_answer_does_not_cancel_the_job_reconciliation_recorded(sqlite_ledger, clock):
    """Promise 1: replica A's submit answer arrives after the intent grace; replica B has meanwhile
    found and recorded the job. A must leave that job alone: it is the conversion's job."""
    world, legacy, wire, a, b = two_replicas(sqlite_ledger, clock)

    def answer_comes_back_late() -> None:
        clock.advance(61)
        b.run_cycle()  # finds the job A's request started, records it
        assert sqlite_ledger.get("x").state is S.DISPATCHED

    wire.arm("submit", "after", answer_comes_back_late)
    a.run_cycle()
    assert legacy.cancelled == []
    settle([a, b], world, clock, sqlite_ledger)
    assert sqlite_ledger.get("x").state is S.SUCCEEDED
    assert [r.outcome.value for r in world.runs] == ["succeeded"]


def test_a_new_path_that_cannot_cap_stays_within_budget_when_a_poll_fails(sqlite_ledger, clock):
    """Promise 2: jobs handed to a new path that cannot cap itself count even when the poll that
    would have seen them queued fails."""
    world, legacy, new, config = world_of(sqlite_ledger, clock, budget=3, can_cap=False)
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    c = controller(sqlite_ledger, clock, flags, {Path.LEGACY: legacy, Path.NEW: new}, config, "a")
    sqlite_ledger.accept([ConversionRequest(f"n{i}", 1, {}) for i in range(9)], clock())
    c.run_cycle()  # three handed over, queued until the next tick
    new.poll_unavailable = True
    c.run_cycle()
    world.tick()
    assert world.load() <= 3
    settle([c], world, clock, sqlite_ledger)
    assert world.peak <= 3


def test_a_new_path_that_cannot_cap_counts_submits_whose_answer_was_lost(sqlite_ledger, clock):
    """Promise 2: a submit that timed out after the backend took the jobs leaves intents that no poll
    sees; they still count against the budget."""
    world, legacy, new, config = world_of(sqlite_ledger, clock, budget=3, can_cap=False)
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    c = controller(sqlite_ledger, clock, flags, {Path.LEGACY: legacy, Path.NEW: new}, config, "a")
    sqlite_ledger.accept([ConversionRequest(f"n{i}", 1, {}) for i in range(9)], clock())
    new.unavailable_after_submit = True
    c.run_cycle()
    c.run_cycle()
    world.tick()
    assert world.load() <= 3


def test_a_dispatch_delayed_past_half_the_lease_submits_nothing(sqlite_ledger, clock):
    """Promise 2: a replica that stalls between admission and submit for longer than half the lease
    releases its intents instead of submitting on a view another dispatcher may have replaced."""
    world, legacy, new, config = world_of(sqlite_ledger, clock)
    ledger = Tripwire(sqlite_ledger)
    c = controller(ledger, clock, FakeFlags.none(), {Path.LEGACY: legacy, Path.NEW: new}, config, "a")
    sqlite_ledger.accept([ConversionRequest("x", 1, {})], clock())
    ledger.arm("mark_dispatching", "after", lambda: clock.advance(16))
    report = c.run_cycle()
    assert legacy.submits == []
    assert any("lease" in e for e in report.errors)
    record = sqlite_ledger.get("x")
    assert (record.state, record.attempts) == (S.CLAIMED, 0)
    settle([c], world, clock, sqlite_ledger)
    assert [r.outcome.value for r in world.runs] == ["succeeded"]


def test_a_submit_that_lands_after_its_intent_was_released_and_times_out_runs_nothing(sqlite_ledger, clock):
    """Promise 1: replica A's submit reaches the backend only after the intent grace, by when replica
    B has released the intent and dispatched the conversion again; A's call then times out. The job
    A's request made must not run beside B's."""
    world, legacy, wire, a, b = two_replicas(sqlite_ledger, clock)

    def request_is_slow_to_arrive() -> None:
        clock.advance(61)
        b.run_cycle()  # reconciles: the backend has nothing, so the intent is released ...
        clock.advance(1)
        b.run_cycle()  # ... and dispatched again under a new fence
        assert len(legacy.submits) == 1
        legacy.unavailable_after_submit = True  # A's request lands now, its answer is lost

    wire.arm("submit", "before", request_is_slow_to_arrive)
    a.run_cycle()
    assert len(legacy.submits) == 2
    settle([a, b], world, clock, sqlite_ledger)
    assert sqlite_ledger.get("x").state is S.SUCCEEDED
    assert [(r.fence, r.outcome.value) for r in world.runs] == [(2, "succeeded")]


def test_a_late_submit_whose_answer_is_lost_is_found_once_the_listing_catches_up(sqlite_ledger, clock):
    """Promise 1: replica A's submit reaches the backend only after the intent grace, by when replica
    B has released the intent and written a new one, whose own submit timed out before it left. A's
    request lands, its answer is lost, and the listing lags behind it: A's look finds nothing, and
    the build starts. Once the listing shows it, that build must be taken as the conversion's job,
    not run again beside it under a newer fence."""
    world, legacy, wire, a, b = two_replicas(sqlite_ledger, clock)
    legacy.clock, legacy.listing_lag = clock, True

    def request_is_slow_to_arrive() -> None:
        clock.advance(61)
        legacy.unavailable_before_submit = True  # B's own submit times out before it leaves
        b.run_cycle()  # reconciles: the backend has nothing, the intent is released and written anew
        assert legacy.submits == []
        assert sqlite_ledger.get("x").state is S.DISPATCHING
        legacy.unavailable_after_submit = True  # A's request lands now, its answer is lost

    wire.arm("submit", "before", request_is_slow_to_arrive)
    a.run_cycle()
    assert len(legacy.submits) == 1
    world.tick()  # the build A's request made starts before any listing shows it
    assert [r.fence for r in world.runs] == [1]
    clock.advance(61)
    settle([a, b], world, clock, sqlite_ledger)
    assert sqlite_ledger.get("x").state is S.SUCCEEDED
    assert [(r.fence, r.outcome.value) for r in world.runs] == [(1, "succeeded")]


@pytest.fixture(params=sorted(LEDGER_FACTORIES))
def any_ledger(request: pytest.FixtureRequest, tmp_path):
    """Each ledger implementation the contract suite knows, fresh and empty."""
    instance = LEDGER_FACTORIES[request.param](tmp_path, request)
    yield instance
    instance.close()


def _dispatched_once(ledger, cid: str):
    ledger.accept([ConversionRequest(cid, 1, {})], 1.0)
    ledger.claim([Claim(ConversionRequest(cid, 1, {}), Path.LEGACY, None, "test")], 2.0)
    (taken,) = ledger.mark_dispatching([ledger.get(cid)], "batch-1", 3.0)
    return taken


def test_every_ledger_undoes_the_attempt_of_a_released_intent(any_ledger):
    """Promise 1 (retries), for every ledger: an intent released because nothing started leaves
    the attempt count where it was, while the fence still moves on."""
    taken = _dispatched_once(any_ledger, "x")
    assert taken.attempts == 1
    assert any_ledger.release([("x", taken.fence)], 4.0, "refused") == 1
    record = any_ledger.get("x")
    assert (record.state, record.attempts, record.fence) == (S.CLAIMED, 0, taken.fence)


def test_every_ledger_gives_a_requeued_conversion_its_attempts_back(any_ledger):
    """Promise 1 (retries), for every ledger: an operator's requeue starts the attempt count afresh."""
    taken = _dispatched_once(any_ledger, "x")
    any_ledger.mark_dispatched([Dispatched("x", taken.fence, "job-1")], 4.0)
    any_ledger.mark_finished([Finish("x", taken.fence, S.FAILED, "boom")], 5.0)
    assert any_ledger.get("x").attempts == 1
    requeued = any_ledger.requeue("x", 6.0)
    assert requeued.attempts == 0
    assert any_ledger.get("x").attempts == 0


def test_a_dispatcher_paused_past_its_lease_changes_no_cap(sqlite_ledger, clock):
    """Promise 2: replica A takes the dispatch lease and stops before dispatching; the lease runs
    out, B dispatches a build that fills the budget and leaves the new path's job queued under a
    cap of 0. A, back, must not raise that cap on what it read before B's build was seen."""
    world, legacy, new, config = world_of(sqlite_ledger, clock, budget=2)
    legacy.ticks = new.ticks = 3  # work that outlasts a tick or two
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    ledger = Tripwire(sqlite_ledger)
    a = controller(ledger, clock, flags, {Path.LEGACY: legacy, Path.NEW: new}, config, "a")
    b = controller(sqlite_ledger, clock, flags, {Path.LEGACY: legacy, Path.NEW: new}, config, "b")
    sqlite_ledger.accept(
        [ConversionRequest("n", 1, {}), *(ConversionRequest(f"l{i}", 2, {}) for i in range(2))], clock()
    )

    def paused_past_the_lease() -> None:
        clock.advance(31)
        b.run_cycle()  # takes the lease: a build of two threads, the new path capped to 0
        world.tick()
        assert (legacy.running(), new.running()) == (2, 0)

    ledger.arm("try_lease", "after", paused_past_the_lease)
    report = a.run_cycle()
    world.tick()
    assert world.load() <= 2
    assert report.dispatched == {}
    assert any("lease" in e for e in report.errors)
    settle([a, b], world, clock, sqlite_ledger)
    assert world.peak <= 2
