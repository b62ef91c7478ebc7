"""The cycle against in-memory backends: ownership, crash safety, the budget, retries."""

from __future__ import annotations

import logging

import pytest

from controller.core.domain import ConversionRequest, ConversionState, JobStatus, Path
from controller.core.routing import FallbackPolicy, RoutingPolicy
from controller.core.transitions import RetryPolicy
from controller.engine.claims import ClaimsByRecord
from controller.engine.cycle import Controller, CycleConfig
from controller.ledger.sqlite import SQLiteLedger
from tests.fakes import Crash, FakeBackend, FakeClock, FakeFlags, World


def make(ledger, clock: FakeClock, flags: FakeFlags, *, budget: int = 6, ticks: int = 2, **cfg):
    world = World(budget=budget)
    legacy = FakeBackend(Path.LEGACY, world, ticks=ticks)
    new = FakeBackend(Path.NEW, world, ticks=ticks, can_cap=cfg.pop("can_cap", True))
    config = CycleConfig(budget=budget, intent_grace_seconds=30, legacy_max_threads=4, **cfg)
    controller = Controller(
        ledger=ledger, flags=flags, backends={Path.LEGACY: legacy, Path.NEW: new}, config=config, clock=clock
    )
    return controller, world, legacy, new


def submit(ledger, clock, ids, tenant=lambda i: i % 10 + 1):
    return ledger.accept([ConversionRequest(f"c{i}", tenant(i), {}) for i in ids], clock())


def run_until_done(controller, world, clock, ledger, limit=500):
    for _ in range(limit):
        controller.run_cycle()
        world.tick()
        clock.advance(1)
        counts = ledger.counts()
        if counts.state(ConversionState.SUCCEEDED) + counts.state(ConversionState.FAILED) == sum(
            counts.by_state.values()
        ):
            controller.run_cycle()
            return
    raise AssertionError(f"not drained: {ledger.counts()}")


def test_routes_by_flag_and_every_conversion_runs_once_on_its_path(sqlite_ledger, clock):
    """Tenants in the flag run on the new path, the rest on the old one; each exactly once."""
    flags = FakeFlags.none()
    flags.publish("v1", {1, 2, 3})
    controller, world, _, _ = make(sqlite_ledger, clock, flags)
    submit(sqlite_ledger, clock, range(60))
    run_until_done(controller, world, clock, sqlite_ledger)
    for i in range(60):
        record = sqlite_ledger.get(f"c{i}")
        expected = Path.NEW if i % 10 + 1 in {1, 2, 3} else Path.LEGACY
        assert record.state is ConversionState.SUCCEEDED
        assert record.path is expected
        assert world.executions[f"c{i}"] == [expected]


def test_flag_change_never_moves_a_claimed_conversion(sqlite_ledger, clock):
    """A conversion claimed under v1 stays on its path when v2 removes or adds its tenant."""
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    controller, world, _, _ = make(sqlite_ledger, clock, flags, budget=1, ticks=5)
    submit(sqlite_ledger, clock, range(10), tenant=lambda i: 1 if i < 5 else 2)
    controller.run_cycle()  # all claimed under v1; only a little dispatched with budget 1
    flags.publish("v2", {2})
    run_until_done(controller, world, clock, sqlite_ledger)
    for i in range(10):
        record = sqlite_ledger.get(f"c{i}")
        assert record.flag_version == "v1"
        assert record.path is (Path.NEW if i < 5 else Path.LEGACY)
        assert world.executions[f"c{i}"] == [record.path]


def test_no_flag_routes_everything_legacy_and_pause_policy_holds_work(sqlite_ledger, clock):
    """Without a valid flag: old path by default; nothing claimed at all under the pause policy."""
    controller, world, _, new = make(sqlite_ledger, clock, FakeFlags.none())
    submit(sqlite_ledger, clock, range(5))
    run_until_done(controller, world, clock, sqlite_ledger)
    assert {sqlite_ledger.get(f"c{i}").path for i in range(5)} == {Path.LEGACY}
    assert new.submits == []

    paused, _, _, _ = make(
        sqlite_ledger, clock, FakeFlags.none(), routing=RoutingPolicy(FallbackPolicy.PAUSE)
    )
    sqlite_ledger.accept([ConversionRequest("p1", 1, {})], clock())
    report = paused.run_cycle()
    assert report.held
    assert sqlite_ledger.get("p1").state is ConversionState.RECEIVED


def test_crash_between_intent_and_submit_loses_nothing_and_submits_once(sqlite_ledger, clock):
    """The process dies after recording the intent, before the backend heard of it."""
    flags = FakeFlags.none()
    flags.publish("v1", set(range(1, 11)))
    controller, world, _, new = make(sqlite_ledger, clock, flags)
    submit(sqlite_ledger, clock, range(8))
    new.crash_before_submit = True
    with pytest.raises(Crash):
        controller.run_cycle()
    assert sqlite_ledger.counts().state(ConversionState.DISPATCHING) == 8
    restarted = Controller(
        ledger=sqlite_ledger, flags=flags, backends=controller.backends, config=controller.config, clock=clock
    )
    restarted.run_cycle()  # intents are fresh: left alone
    assert new.submits == []
    clock.advance(31)
    run_until_done(restarted, world, clock, sqlite_ledger)
    assert all(world.executions[f"c{i}"] == [Path.NEW] for i in range(8))
    assert sqlite_ledger.counts().state(ConversionState.SUCCEEDED) == 8


def test_crash_between_submit_and_record_finds_the_job_instead_of_submitting_again(sqlite_ledger, clock):
    """The backend took the batch, then the process died before recording the job references."""
    flags = FakeFlags.none()
    flags.publish("v1", set(range(1, 11)))
    controller, world, legacy, new = make(sqlite_ledger, clock, flags)
    submit(sqlite_ledger, clock, range(8))
    new.crash_after_submit = True
    with pytest.raises(Crash):
        controller.run_cycle()
    assert len(new.submits) == 1
    clock.advance(31)
    restarted = Controller(
        ledger=sqlite_ledger, flags=flags, backends=controller.backends, config=controller.config, clock=clock
    )
    report = restarted.run_cycle()
    assert report.reconciled == 8
    run_until_done(restarted, world, clock, sqlite_ledger)
    assert len(new.submits) == 1
    assert all(world.executions[f"c{i}"] == [Path.NEW] for i in range(8))
    assert legacy.submits == []


def test_unknown_submit_outcome_keeps_intents_until_reconciled(sqlite_ledger, clock):
    """A timeout after the backend did the work: no resubmission, the job is found later."""
    flags = FakeFlags.none()
    controller, world, legacy, _ = make(sqlite_ledger, clock, flags)
    submit(sqlite_ledger, clock, range(3))
    legacy.unavailable_after_submit = True
    report = controller.run_cycle()
    assert report.errors
    assert sqlite_ledger.counts().state(ConversionState.DISPATCHING) == 3
    clock.advance(31)
    run_until_done(controller, world, clock, sqlite_ledger)
    assert len(legacy.submits) == 1
    assert all(world.executions[f"c{i}"] == [Path.LEGACY] for i in range(3))


def test_rejected_submit_is_released_and_retried_next_cycle(sqlite_ledger, clock):
    """A submit the backend refused outright goes back to CLAIMED and is dispatched again."""
    controller, world, legacy, _ = make(sqlite_ledger, clock, FakeFlags.none())
    submit(sqlite_ledger, clock, range(3))
    legacy.reject_next = True
    controller.run_cycle()
    assert sqlite_ledger.counts().state(ConversionState.CLAIMED) == 3
    run_until_done(controller, world, clock, sqlite_ledger)
    assert all(world.executions[f"c{i}"] == [Path.LEGACY] for i in range(3))


@pytest.mark.parametrize("can_cap", [True, False], ids=["backend-caps", "controller-holds-back"])
def test_work_being_done_never_exceeds_the_budget(sqlite_ledger, clock, can_cap):
    """Both paths busy at once, the flag moving tenants between waves: the peak stays within budget."""
    flags = FakeFlags.none()
    controller, world, _, _ = make(sqlite_ledger, clock, flags, budget=7, ticks=3, can_cap=can_cap)
    for wave, migrated in enumerate([set(), {1, 2, 3}, {1, 2, 3, 4, 5, 6}, {1, 2}]):
        flags.publish(f"v{wave}", migrated)
        submit(sqlite_ledger, clock, range(wave * 100, wave * 100 + 100))
        for _ in range(5):
            controller.run_cycle()
            world.tick()
            assert world.load() <= 7
            clock.advance(1)
    run_until_done(controller, world, clock, sqlite_ledger)
    assert world.peak <= 7
    assert world.peak >= 5  # the budget is used, not just respected
    assert sqlite_ledger.counts().state(ConversionState.SUCCEEDED) == 400
    assert all(len(paths) == 1 for paths in world.executions.values())


def test_failed_job_is_resubmitted_on_the_same_path_then_fails_for_good(sqlite_ledger, clock):
    """Clone-and-resubmit once (the default), with a new fence; then FAILED with the reason."""
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    controller, world, _, new = make(sqlite_ledger, clock, flags, retry=RetryPolicy(resubmits=1))
    sqlite_ledger.accept([ConversionRequest("bad", 1, {})], clock())
    new.fail_ids.add("bad")
    run_until_done(controller, world, clock, sqlite_ledger)
    record = sqlite_ledger.get("bad")
    assert record.state is ConversionState.FAILED
    assert record.path is Path.NEW
    assert record.attempts == 2
    assert record.reason == "boom"
    assert world.executions["bad"] == [Path.NEW, Path.NEW]
    assert len({b.items[0].fence for b in new.submits}) == 2


def test_requeue_frees_a_failed_conversion_for_a_fresh_routing(sqlite_ledger, clock):
    """After an operator's requeue the next cycle routes the conversion under the flag in force."""
    flags = FakeFlags.none()
    controller, world, legacy, _ = make(sqlite_ledger, clock, flags, retry=RetryPolicy(resubmits=0))
    sqlite_ledger.accept([ConversionRequest("x", 1, {})], clock())
    legacy.fail_ids.add("x")
    run_until_done(controller, world, clock, sqlite_ledger)
    assert sqlite_ledger.get("x").state is ConversionState.FAILED
    flags.publish("v2", {1})
    sqlite_ledger.requeue("x", clock())
    run_until_done(controller, world, clock, sqlite_ledger)
    record = sqlite_ledger.get("x")
    assert record.state is ConversionState.SUCCEEDED
    assert record.path is Path.NEW
    assert world.executions["x"] == [Path.LEGACY, Path.NEW]


class RecordPortOnly:
    """A ledger seen through ``OwnershipStore`` alone, as one without the batch port (DynamoDB)."""

    def __init__(self, inner: SQLiteLedger) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        if name in ("waiting", "claim_waiting"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_ledger_without_the_batch_port_is_routed_and_logged_alike(tmp_path, caplog):
    """Through records or through the batch port: the same owners, reasons, counts and
    ``route.decided`` lines, in the same order."""
    caplog.set_level(logging.DEBUG, logger="cutover.cycle")
    outcomes = []
    for name, wrap in (("batch", lambda ledger: ledger), ("records", RecordPortOnly)):
        clock = FakeClock()
        ledger = SQLiteLedger(tmp_path / f"{name}.db")
        flags = FakeFlags.none()
        flags.publish("v1", {1, 2, 3})
        controller, *_ = make(wrap(ledger), clock, flags)
        assert isinstance(controller._claims, ClaimsByRecord) is (name == "records")
        submit(ledger, clock, range(30))
        caplog.clear()
        reports = [controller.run_cycle().claimed for _ in range(2)]
        flags.publish("v2", {4})
        submit(ledger, clock, range(30, 40))
        reports.append(controller.run_cycle().claimed)
        lines = [
            (r.conversion_id, r.tenant_id, r.path, r.flag_version)
            for r in caplog.records
            if r.getMessage() == "route.decided"
        ]
        records = [ledger.get(f"c{i}") for i in range(40)]
        owners = [(r.path, r.flag_version, r.reason, r.claimed_at) for r in records]
        outcomes.append((reports, lines, owners, ledger.counts()))
        ledger.close()
    assert outcomes[0] == outcomes[1]
    reports, lines, owners, _ = outcomes[0]
    assert reports[0] == {Path.NEW: 9, Path.LEGACY: 21}
    assert [line[0] for line in lines] == [f"c{i}" for i in range(40)]
    assert owners[3][:3] == (Path.LEGACY, "v1", "tenant not listed in flag v1")
    assert owners[33][:3] == (Path.NEW, "v2", "tenant listed in flag v2")


def test_no_dispatch_carries_more_than_the_batch_item_limit(sqlite_ledger, clock):
    """``CUTOVER_MAX_BATCH_ITEMS`` bounds every dispatch (a manifest, an array job); the claims
    limit only bounds how many conversions one cycle routes."""
    flags = FakeFlags.none()
    flags.publish("v1", {1, 2, 3, 4, 5})
    controller, world, legacy, new = make(
        sqlite_ledger, clock, flags, budget=50, ticks=1, max_claims=20_000, max_batch_items=40
    )
    submit(sqlite_ledger, clock, range(300))
    run_until_done(controller, world, clock, sqlite_ledger)
    sizes = [len(b.items) for b in legacy.submits + new.submits]
    assert sizes
    assert max(sizes) <= 40
    assert sum(sizes) == 300


@pytest.mark.parametrize("failing", ["legacy", "new"])
def test_a_failed_status_poll_never_lets_the_budget_be_exceeded(sqlite_ledger, clock, failing):
    """Budget 4, a legacy build of 4 threads at work. The next status poll of one path is throttled:
    the backends know only what their last poll told them (the build's 4 threads were never seen,
    or the new path's jobs), so the cycle must not take 0 for that path and hand out the whole
    budget again (8 at work against 4)."""
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    controller, world, legacy, new = make(sqlite_ledger, clock, flags, budget=4, ticks=50)
    if failing == "legacy":
        submit(sqlite_ledger, clock, range(4), tenant=lambda i: 2)  # the old path's
    else:
        submit(sqlite_ledger, clock, range(4), tenant=lambda i: 1)  # the new path's
    controller.run_cycle()  # routed and dispatched; nothing polled yet
    world.tick()
    assert world.load() == 4
    submit(sqlite_ledger, clock, range(100, 108), tenant=lambda i: 1 if failing == "legacy" else 2)
    (legacy if failing == "legacy" else new).poll_unavailable = True
    for _ in range(3):
        clock.advance(1)
        controller.run_cycle()
        world.tick()
        assert world.load() <= 4
    assert world.peak <= 4


def test_one_unreadable_answer_about_a_long_running_job_does_not_resubmit_it(sqlite_ledger, clock):
    """A job that has been running for longer than the grace period is answered UNKNOWN once (its
    manifest unreadable, say after the manifest bucket setting changed). What counts is how long
    it has gone unseen, not how long ago it was dispatched: it must not be failed and run again
    while it still runs."""
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    controller, world, _, new = make(sqlite_ledger, clock, flags, budget=4, ticks=400)
    submit(sqlite_ledger, clock, range(1), tenant=lambda i: 1)
    for _ in range(120):  # two minutes at work, seen running every cycle
        controller.run_cycle()
        world.tick()
        clock.advance(1)
    new.unknown_once.add("c0")
    controller.run_cycle()
    world.tick()
    clock.advance(1)
    controller.run_cycle()
    assert world.executions["c0"] == [Path.NEW]
    assert sqlite_ledger.get("c0").state is ConversionState.DISPATCHED
    assert sqlite_ledger.get("c0").attempts == 1


def test_a_job_unseen_for_longer_than_the_grace_period_is_failed_over(sqlite_ledger, clock):
    """The other side of the same rule: a job the backend keeps not knowing is given up once it
    has gone unseen for the whole grace period, and resubmitted on its path."""
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    controller, world, _, new = make(
        sqlite_ledger,
        clock,
        flags,
        budget=4,
        ticks=400,
        retry=RetryPolicy(resubmits=1, unknown_grace_seconds=30),
    )
    submit(sqlite_ledger, clock, range(1), tenant=lambda i: 1)
    for _ in range(5):
        controller.run_cycle()
        world.tick()
        clock.advance(1)
    job_id = next(iter(new.jobs))
    del new.jobs[job_id]  # gone: never seen again
    for _ in range(29):
        controller.run_cycle()
        clock.advance(1)
        assert sqlite_ledger.get("c0").attempts == 1
    for _ in range(3):
        controller.run_cycle()
        clock.advance(1)
    assert sqlite_ledger.get("c0").attempts == 2


def test_a_stray_job_is_recorded_and_stopped_until_it_is_seen_stopped(sqlite_ledger, clock):
    """A slow submit came back after another replica had settled its intents (released them: the
    conversions are to be dispatched afresh). What it started is a stray: it must be recorded
    durably and stopped until the backend shows it stopped, though the stop calls are throttled
    and this replica restarts meanwhile; otherwise two jobs hold the same conversion."""
    from tests.fakes import Tripwire

    flags = FakeFlags.none()
    flags.publish("v1", {1})
    world = World(budget=4)
    new = FakeBackend(Path.NEW, world, ticks=400)
    new.cancel_stops_running = True
    wired = Tripwire(new)
    config = CycleConfig(budget=4, intent_grace_seconds=30)

    def controller() -> Controller:
        return Controller(
            ledger=sqlite_ledger, flags=flags, backends={Path.NEW: wired}, config=config, clock=clock
        )

    def settled_elsewhere() -> None:
        record = sqlite_ledger.get("c0")
        sqlite_ledger.release([("c0", record.fence)], clock(), "intent reconciled elsewhere")

    submit(sqlite_ledger, clock, range(1), tenant=lambda i: 1)
    wired.arm("submit", "after", settled_elsewhere)
    new.cancel_unavailable = 3  # the first stop calls are throttled
    first = controller()
    first.run_cycle()
    world.tick()
    (stray,) = list(new.jobs)
    assert new.jobs[stray].status is not JobStatus.FAILED  # not stopped yet: the stop was throttled
    restarted = controller()  # the replica restarts: what it knew in memory is gone
    for _ in range(6):
        clock.advance(1)
        restarted.run_cycle()
        world.tick()
    assert new.jobs[stray].status is JobStatus.FAILED  # stopped in the end
    assert [r.job_id for r in new.cancelled].count(stray) >= 4
    runs = [r for r in world.runs if r.conversion_id == "c0" and r.ended is None]
    assert len(runs) <= 1  # never two at work on one conversion


def test_a_lowered_new_path_cap_is_not_handed_to_a_build_in_the_same_cycle(sqlite_ledger, clock):
    """Lowering maxvCpus takes effect asynchronously: queued jobs may still start under the old cap
    for a while. The slots a lowering frees go to a legacy build only once a poll after it has
    seen what really runs, never in the cycle that lowered it."""
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    controller, world, _, new = make(sqlite_ledger, clock, flags, budget=4, ticks=3)
    new.capacity_lags = True
    submit(sqlite_ledger, clock, range(12), tenant=lambda i: 1)  # new-path work: the cap is 4
    controller.run_cycle()
    submit(sqlite_ledger, clock, range(100, 108), tenant=lambda i: 2)  # then old-path work arrives
    for _ in range(40):
        clock.advance(1)
        controller.run_cycle()
        world.tick()
        assert world.load() <= 4
    assert world.peak <= 4


def test_conversions_answered_unknown_still_count_against_the_budget(sqlite_ledger, clock):
    """A status poll that answers UNKNOWN about a build at work (not found yet, or unreadable)
    leaves the backend counting nothing in use for it; the build still holds its threads, so the
    cycle must not hand them to the new path."""
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    controller, world, legacy, _ = make(sqlite_ledger, clock, flags, budget=4, ticks=50)
    submit(sqlite_ledger, clock, range(4), tenant=lambda i: 2)
    controller.run_cycle()
    world.tick()
    clock.advance(1)
    controller.run_cycle()  # polled: the build's 4 threads seen
    submit(sqlite_ledger, clock, range(100, 108), tenant=lambda i: 1)
    legacy.poll_unknown = True
    for _ in range(3):
        clock.advance(1)
        controller.run_cycle()
        world.tick()
        assert world.load() <= 4
    assert world.peak <= 4


@pytest.mark.parametrize(("skew", "takes_over"), [(7.0, False), (12.0, True)])
def test_replica_clock_skew_within_a_quarter_of_the_lease_never_splits_the_dispatch(
    sqlite_ledger, clock, skew, takes_over
):
    """Leases and intent cut-offs are judged on each replica's own clock. A submit must be back a
    quarter of the lease before the lease ends (its time limit), so a replica whose clock runs
    ahead by less than that quarter (7.5 s of a 30 s lease) cannot take the lease while the
    dispatcher is still submitting; beyond it, it can, which is what the bound is about. Clocks
    synchronised by NTP (Amazon Time Sync) differ by milliseconds."""
    from tests.fakes import Tripwire

    flags = FakeFlags.none()
    flags.publish("v1", {1})
    world = World(budget=4)
    new = FakeBackend(Path.NEW, world, ticks=50)
    wired = Tripwire(new)
    config = CycleConfig(budget=4, intent_grace_seconds=30, lease_seconds=30)

    def ahead() -> float:
        return clock() + skew

    a = Controller(
        ledger=sqlite_ledger, flags=flags, backends={Path.NEW: wired}, config=config, clock=clock, holder="a"
    )
    b = Controller(
        ledger=sqlite_ledger, flags=flags, backends={Path.NEW: new}, config=config, clock=ahead, holder="b"
    )
    submit(sqlite_ledger, clock, range(2), tenant=lambda i: 1)
    a.run_cycle()  # a holds the lease
    submit(sqlite_ledger, clock, range(10, 12), tenant=lambda i: 1)
    seen: list[bool] = []

    def slow_submit_while_b_runs() -> None:
        clock.advance(22.4)  # as long as a submit may take: just inside its time limit
        seen.append(b.run_cycle().dispatcher)

    wired.arm("submit", "before", slow_submit_while_b_runs)
    a.run_cycle()
    assert seen == [takes_over]
