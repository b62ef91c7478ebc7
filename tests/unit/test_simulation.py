"""The simulator runs the project's own cycle: deterministic, fast, and moved by the real split."""

from __future__ import annotations

import dataclasses
import os

import pytest

from controller.core import admission
from controller.core.admission import Load, Split
from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.engine import cycle
from controller.engine.history import Learnt, profile_of
from controller.engine.profile import (
    Arrival,
    Behaviour,
    Durations,
    Profile,
    Span,
    shared_work,
    sharing_rate,
    spread,
    start_overlap,
)
from controller.engine.simpaths import World
from controller.engine.simulation import SimConfig, SimulationError, simulate, summary
from controller.ledger.memory import MemoryLedger

TENANTS = list(range(1001, 1041))
MIGRATED = frozenset(TENANTS[::2])


def profile(conversions: int = 400, *, failure_rate: float = 0.0, within: float = 60.0) -> Profile:
    legacy = Behaviour(Durations(60.0, 1200.0), failure_rate)
    new = Behaviour(Durations(40.0, 900.0), failure_rate)
    return Profile(
        "test",
        "tests",
        {Path.LEGACY: legacy, Path.NEW: new},
        tuple(spread(conversions, TENANTS, within, 3, 1.0)),
        provisioning={Path.NEW: Span(30.0, 120.0), Path.LEGACY: Span(60.0, 60.0)},
    )


def run(p: Profile, migrated: frozenset[int] | None = MIGRATED, **config):
    return simulate(p, migrated, SimConfig(budget=config.pop("budget", 10), **config), MemoryLedger())


def fingerprint(result) -> list[tuple]:
    """Everything that ran, when and where: two runs with equal fingerprints did the same."""
    return [(a.conversion_id, a.path, a.slot_at, a.work_at, a.ended_at, a.failed) for a in result.attempts]


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    """A run is a function of its profile, flag, settings and seed."""
    p = profile(failure_rate=0.05)
    first, again = run(p, seed=7), run(p, seed=7)
    assert fingerprint(first) == fingerprint(again)
    assert summary(first) | {"simulation": None} == summary(again) | {"simulation": None}
    assert fingerprint(run(p, seed=8)) != fingerprint(first)


def test_skipping_quiet_cycles_changes_nothing_that_ran():
    """The simulation skips cycles that cannot change what runs; running every cycle instead gives
    the very same attempts at the very same moments and the same makespan. Only the ledger's
    record of an outcome may come a little later, never earlier."""
    p = profile(300, failure_rate=0.05)
    quick = run(p, skip_quiet_cycles=True)
    every = run(p, skip_quiet_cycles=False)
    assert fingerprint(quick) == fingerprint(every)
    assert quick.makespan == every.makespan
    for q, e in zip(quick.conversions, every.conversions, strict=True):
        assert q.finished_at >= e.finished_at
    assert every.cycles_skipped == 0
    assert quick.cycles_run < every.cycles_run / 3


def test_every_conversion_ends_on_the_path_the_flag_gives_it_and_the_budget_holds():
    """Routing is the project's own: listed tenants on the new path, the rest on the old; work at
    once never exceeds the budget, and failures are resubmitted once before they count."""
    result = run(profile(failure_rate=0.1), budget=8)
    assert all(c.path is (Path.NEW if c.tenant_id in MIGRATED else Path.LEGACY) for c in result.conversions)
    assert 0 < result.peak() <= result.peak_slots == 8  # budget held: build threads, jobs in a slot
    assert result.peak(Path.LEGACY) > 0
    assert result.peak(Path.NEW) > 0
    attempts: dict[str, int] = {}
    for a in result.attempts:
        attempts[a.conversion_id] = attempts.get(a.conversion_id, 0) + 1
    assert max(attempts.values()) == 2  # CUTOVER_RESUBMITS=1: one clone-and-resubmit
    failed = [c for c in result.conversions if not c.succeeded]
    assert failed
    assert all(attempts[c.conversion_id] == 2 for c in failed)


def test_no_flag_sends_everything_to_the_old_path():
    result = run(profile(100), migrated=None)
    assert {c.path for c in result.conversions} == {Path.LEGACY}
    assert result.peak(Path.NEW) == 0


def test_changing_the_split_changes_the_simulation(monkeypatch):
    """The cycle's split is what the simulation runs: patch it, and the run follows the patch."""
    p = profile(300)
    as_is = run(p)
    calls: list[Load] = []

    def old_path_only(budget: int, load: Load, max_build_threads: int) -> Split:
        calls.append(load)
        threads = min(load.legacy_waiting, max(0, budget - load.legacy_in_use), max_build_threads)
        return Split(threads, 0)  # the new path gets no capacity at all

    monkeypatch.setattr(cycle, "split_budget", old_path_only)
    with pytest.raises(SimulationError, match="nothing will move"):
        run(p)  # migrated tenants' conversions wait forever for a cap of zero
    assert calls
    monkeypatch.setattr(cycle, "split_budget", admission.split_budget)
    assert fingerprint(run(p)) == fingerprint(as_is)


def test_a_policy_given_in_the_settings_replaces_the_split():
    """A simulation can run another policy beside the project's, as the peak benchmark does."""
    p = profile(300)
    as_is = run(p, budget=10)
    half = run(
        p,
        budget=10,
        split=lambda budget, load, m: Split(min(load.legacy_waiting, 5 - min(5, load.legacy_in_use)), 5),
    )
    assert fingerprint(half) != fingerprint(as_is)
    assert half.peak(Path.NEW) <= 5
    assert half.peak(Path.LEGACY) <= 5


def test_a_legacy_build_past_its_timeout_fails_what_it_has_not_finished():
    """A CodeBuild build stopped at its timeout fails its unfinished conversions; the controller
    resubmits them in a new build."""
    slow = Profile(
        "slow",
        "tests",
        {p: Behaviour(Durations(600.0, 600.0)) for p in Path},
        (Arrival(0.0, 1001, 40),),
        provisioning={p: Span(0.0, 0.0) for p in Path},
    )
    result = run(slow, migrated=frozenset(), budget=2, legacy_max_threads=2, build_timeout_seconds=1500.0)
    assert any(b.timed_out for b in result.builds)
    assert all(c.succeeded for c in result.conversions[:4])
    assert len(result.builds) > 1


def test_the_fargate_quota_holds_the_new_path_below_its_share():
    """With a 6-vCPU quota, no more than three 2-vCPU jobs hold a slot, whatever the split allows."""
    result = run(profile(200), budget=10, fargate_quota_vcpus=6.0, vcpus_per_job=2.0)
    assert result.new_slots_peak == 3
    assert result.new_cap_wanted > 3


def test_a_peak_simulates_in_well_under_a_second_of_cpu_per_thousand_conversions():
    """A 3,000-conversion peak, whole (benchmarks/peak.py measures the 10,000 one the same way)."""
    tenants = list(range(1001, 1061))
    same = Behaviour(Durations(60.0, 1200.0))
    peak = Profile(
        "peak", "tests", {Path.LEGACY: same, Path.NEW: same}, tuple(spread(3000, tenants, 300, 1, 1.0))
    )
    result = simulate(peak, frozenset(tenants[::2]), SimConfig(budget=20, seed=1), MemoryLedger())
    assert all(c.succeeded for c in result.conversions)
    assert result.peak() <= 20
    assert result.cpu_seconds / 3 < 0.5


def test_settings_are_a_plain_value():
    assert dataclasses.replace(SimConfig(), budget=3).budget == 3
    assert SimConfig(fargate_quota_vcpus=6.0, vcpus_per_job=4.0).quota_slots == 1
    assert SimConfig().quota_slots is None


def _done(cid: str, path: Path, claimed: float, began: float, seconds: float, job: str) -> ConversionRecord:
    return ConversionRecord(
        cid, 1, {}, ConversionState.SUCCEEDED, path, job_ref=job, attempts=1, received_at=0.0,
        claimed_at=claimed, dispatched_at=claimed, finished_at=began + seconds,
        work_seconds=seconds, work_started_at=began,
    )  # fmt: skip


def test_new_path_provisioning_is_learnt_from_every_job_not_only_the_quickest_starters():
    """Budget 3, one old-path thread held: two new-path slots. Four jobs handed over at 0, each
    takes 1 s to start and 1 s to work, so the last two wait for the first two's slots: each
    job's own start still took 1 s, which the replay of the slots finds and the simulation draws."""
    learnt = Learnt()
    learnt.add(_done("old", Path.LEGACY, 0.0, 0.5, 5.0, "build"))
    for i, began in enumerate((1.0, 1.0, 3.0, 3.0)):
        learnt.add(_done(f"n{i}", Path.NEW, 0.0, began, 1.0, "batch"))
    assert gaps(learnt.new_path_provisioning(budget=3, release=0.0)) == [1.0, 1.0, 1.0, 1.0]
    profile = profile_of(learnt, [Arrival(0.0, 1)], name="t", source="t", budget=3)
    assert profile.provisioning[Path.NEW].samples == (1.0, 1.0, 1.0, 1.0)
    without_budget = profile_of(learnt, [Arrival(0.0, 1)], name="t", source="t")
    assert without_budget.provisioning[Path.NEW].samples == (1.0, 1.0)  # the first slots only


def gaps(starts: list[tuple[float, float]]) -> list[float]:
    return [began - slot for slot, began in starts]


def test_a_slot_the_backend_told_is_measured_as_it_was_not_replayed():
    """The same four jobs, but the runner said when each took its slot: the last two waited for
    theirs and then took 0.5 s to start, which the replay (0 s of wait after the frees at 2 s and
    a 1 s start) would have got wrong; a job with no slot told is still replayed beside them."""
    learnt = Learnt()
    learnt.add(_done("old", Path.LEGACY, 0.0, 0.5, 5.0, "build"))
    for i, (began, slot) in enumerate(((1.0, 0.0), (1.0, 0.0), (3.0, 2.5), (3.0, 2.5))):
        learnt.add(dataclasses.replace(_done(f"n{i}", Path.NEW, 0.0, began, 1.0, "batch"), slot_at=slot))
    assert gaps(learnt.new_path_provisioning(budget=3, release=0.0)) == [1.0, 1.0, 0.5, 0.5]
    assert gaps(learnt.new_path_starts()) == [1.0, 1.0, 0.5, 0.5]  # without a budget too
    learnt.add(_done("n4", Path.NEW, 0.0, 5.0, 1.0, "batch"))  # no slot told: the replay's
    assert gaps(learnt.new_path_provisioning(budget=3, release=0.0)) == [1.0, 1.0, 0.5, 0.5, 1.0]


def test_start_up_is_kept_by_how_many_start_at_once_and_drawn_at_the_nearest_load():
    """Two starts alone took 1 s; four one after another took 4 s each, the first of them alone
    when it began, the last with three others starting: a start with six others starting is drawn
    from the crowded ones, a lone start from the lone ones, and without a load from all."""
    alone = [(0.0, 1.0), (10.0, 11.0)]
    crowded = [(20.0, 24.0), (20.1, 24.1), (20.2, 24.2), (20.3, 24.3)]
    span = Span.of_starts(alone + crowded)
    assert [(k, len(v)) for k, v in span.by_load] == [(1, 3), (2, 2), (4, 1)]
    assert span.at(0.5, load=1) == 1.0  # the middle of (1.0, 1.0, 4.0)
    assert span.at(0.5, load=7) == 4.0
    assert span.at(0.5, load=40) == 4.0  # beyond anything seen: the most crowded seen
    assert span.at(0.0) == 1.0  # no load given: every delay seen
    assert Span.of_starts(alone).by_load == ()  # one load only: nothing to tell apart


def test_the_simulation_draws_a_start_by_how_many_are_starting_then():
    """A start-up seen at 1 s alone, 2 s with two or three starting and 5 s with four or more:
    eight new-path jobs handed over at once start the first in 1 s, the next two in 2 s and the
    rest, crowded, in 5 s."""
    crowded = Span(1.0, 5.0, (1.0, 2.0, 5.0), by_load=((1, (1.0,)), (2, (2.0,)), (4, (5.0,))))
    p = Profile(
        "load",
        "tests",
        {q: Behaviour(Durations(2.0, 2.0)) for q in Path},
        (Arrival(0.0, 1001, 8),),
        provisioning={Path.NEW: crowded, Path.LEGACY: Span(0.0, 0.0)},
    )
    result = run(p, migrated=frozenset({1001}), budget=8)
    delays = sorted(round(a.work_at - a.slot_at, 3) for a in result.attempts)
    assert delays == [1.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0, 5.0]


def _shared(cores: float | None, work: float = 1.0) -> Profile:
    return Profile(
        "cores",
        "tests",
        {q: Behaviour(Durations(2.0, 2.0)) for q in Path},
        (Arrival(0.0, 1001, 4),),
        provisioning={Path.NEW: Span(work, work), Path.LEGACY: Span(work, work)},
        cores=cores,
    )


def _when_done(world: World, done: dict[str, float]):
    """A callback maker: ``mark(name)`` notes in ``done`` when the world ran it."""
    return lambda name: lambda: done.__setitem__(name, world.now)


def test_starts_on_one_machine_share_its_cores():
    """Each start needs 1 s of a core. Four jobs handed over at once on two cores start in 2 s
    each; on four cores in 1 s; and where starts share nothing (no cores: separate machines), the
    drawn delay is the delay."""
    for cores, delay in ((2.0, 2.0), (4.0, 1.0), (None, 1.0)):
        result = run(_shared(cores), migrated=frozenset({1001}), budget=4)
        assert [round(a.work_at - a.slot_at, 9) for a in result.attempts] == [delay] * 4, cores


def test_a_start_shares_the_cores_only_while_others_are_under_way():
    """One core; a start begins at 0, a second at 0.5, and a third is dropped (a build stopped
    while provisioning) at 0.5: until 0.5 the first and third share the core (0.25 s of work each);
    from then the first and second share it until the first is done (0.75 s of work left, at half
    speed: 2.0), then the second runs alone (1.0 - 0.75 = 0.25 s left: 2.25)."""
    world = World(_shared(1.0), {})
    done: dict[str, float] = {}
    mark = _when_done(world, done)
    world.begin_start(Path.NEW, 0.5, mark("first"))
    third = world.begin_start(Path.LEGACY, 0.5, mark("third"))
    world.run_until(0.5)
    world.drop_start(third)
    world.begin_start(Path.NEW, 0.5, mark("second"))
    assert world.starting == 2
    world.run_until(10.0)
    assert done == pytest.approx({"first": 2.0, "second": 2.25})
    assert world.starting == 0


def test_a_starts_own_work_is_learnt_from_how_many_shared_the_cores():
    """On one core: a start alone for 1 s needed 1 s of work; two that ran side by side for 2 s
    needed 1 s each; one that began alone and shared the core for its last second needed 1.5 s,
    and the one that shared it with it 0.5 s."""
    starts = [(0.0, 1.0), (10.0, 12.0), (10.0, 12.0), (20.0, 22.0), (21.0, 22.0)]
    assert shared_work(starts, starts, 1.0) == pytest.approx([1.0, 1.0, 1.0, 1.5, 0.5])
    assert shared_work(starts, starts, 2.0) == pytest.approx([1.0, 2.0, 2.0, 2.0, 1.0])  # cores enough
    assert shared_work(starts[:1], starts, 1.0) == pytest.approx([1.0])  # counted among all of them


def test_starts_beyond_the_cores_overlap_what_they_do_not_spend_on_a_core():
    """Two cores, each start beyond them still moving at a tenth of a core: four starts of 1 s of
    work each move at (2 + 0.2) / 4 of a core and take 1 / 0.55 s."""
    profile = dataclasses.replace(_shared(2.0), start_overlap=0.1)
    result = run(profile, migrated=frozenset({1001}), budget=4)
    assert [a.work_at - a.slot_at for a in result.attempts] == pytest.approx([1 / 0.55] * 4)
    assert sharing_rate(2, 2.0, 0.1) == 1.0
    assert sharing_rate(4, 2.0, 0.1) == pytest.approx(0.55)
    assert sharing_rate(40, 2.0, 1.0) == 1.0  # never faster than a core each


def test_a_release_moves_with_the_starts_but_does_not_crowd_them():
    """One core. A release of 0.5 s of work alone takes 0.5 s. Beside two starts of 1 s each it
    moves at their pace, half a core: 1 s; and the starts, sharing the core between the two of
    them only, are done at 2 s as without it."""
    world = World(_shared(1.0), {})
    done: dict[str, float] = {}
    mark = _when_done(world, done)
    world.begin_shared(0.5, mark("alone"), crowds=False)
    world.run_until(10.0)
    world.begin_start(Path.NEW, 0.5, mark("a"))
    world.begin_start(Path.NEW, 0.5, mark("b"))
    world.begin_shared(0.5, mark("beside"), crowds=False)
    world.run_until(20.0)
    assert done == pytest.approx({"alone": 0.5, "beside": 11.0, "a": 12.0, "b": 12.0})


def test_the_overlap_is_the_one_under_which_a_starts_work_does_not_depend_on_the_crowd():
    """Bursts of 1, 4, 8 and 16 starts of 0.3 s of work each, all of a burst starting together on
    two cores that let a start beyond them overlap 0.06 of a core: the fit finds 0.06, and the
    work learnt under it is 0.3 s for every start of every burst."""
    starts: list[tuple[float, float]] = []
    for i, n in enumerate((1, 4, 8, 16)):
        delay = 0.3 / sharing_rate(n, 2.0, 0.06)
        starts += [(100.0 * i, 100.0 * i + delay)] * n
    assert start_overlap([starts], 2.0) == pytest.approx(0.06)
    assert shared_work(starts, starts, 2.0, 0.06) == pytest.approx([0.3] * len(starts))
    assert min(shared_work(starts, starts, 2.0)) < 0.26  # without it a crowd's starts look cheaper


def test_a_profile_of_one_machine_learns_starts_work_and_shares_the_cores():
    """``same_machine``: the provisioning learnt is each start's own work (four jobs handed over at
    once that took 2 s each on a machine of two cores needed 1 s each) and the profile says how
    many cores its starts share; otherwise the delays themselves are learnt."""
    learnt = Learnt()
    learnt.add(_done("old", Path.LEGACY, 0.0, 0.5, 1.0, "build"))
    for i in range(4):
        job = _done(f"n{i}", Path.NEW, 0.0, 12.0, 1.0, "batch")
        learnt.add(dataclasses.replace(job, slot_at=10.0, finished_at=14.05))
    apart = profile_of(learnt, [Arrival(0.0, 1001)], name="t", source="t", budget=4)
    assert apart.cores is None
    assert apart.provisioning[Path.NEW].describe() == 2.0
    cores = float(os.cpu_count() or 1)
    together = profile_of(learnt, [Arrival(0.0, 1001)], name="t", source="t", budget=4, same_machine=True)
    assert together.cores == cores
    assert together.provisioning[Path.NEW].describe() == pytest.approx(2.0 * min(1.0, cores / 4))
    # Each job's work ended at 13 and was recorded at 14.05, half a 0.1 s cycle after a 1 s release
    # with nothing starting: 1 s of work.
    assert apart.release_work is None
    assert together.release_work is not None
    with_cycle = profile_of(
        learnt, [Arrival(0.0, 1001)], name="t", source="t", budget=4, same_machine=True, cycle_seconds=0.1
    )
    assert with_cycle.release_work is not None
    assert with_cycle.release_work.describe() == pytest.approx(1.0)


def test_a_first_attempt_that_fails_once_is_not_taken_for_a_coin_flip_on_every_attempt():
    """Tenant 7's first attempts always failed and its resubmits always succeeded; tenant 8 never
    failed; tenant 9 failed every attempt. The profile keeps first and later attempts apart, and
    the simulation resubmits every one of tenant 7's conversions once and fails none of them."""
    learnt = Learnt()
    for i in range(4):
        flaky = _done(f"f{i}", Path.LEGACY, 0.0, 1.0, 1.0, f"b{i}")
        learnt.add(dataclasses.replace(flaky, tenant_id=7, attempts=2))
        learnt.add(dataclasses.replace(_done(f"k{i}", Path.LEGACY, 0.0, 1.0, 1.0, f"b{i}"), tenant_id=8))
    bad = _done("bad", Path.LEGACY, 0.0, 1.0, 1.0, "b0")
    learnt.add(dataclasses.replace(bad, tenant_id=9, attempts=2, state=ConversionState.FAILED))
    p = profile_of(learnt, [Arrival(0.0, 7, 10)], name="t", source="t")
    assert (p.behaviour(7, Path.LEGACY).rate(1), p.behaviour(7, Path.LEGACY).rate(2)) == (0.99, 0.0)
    assert (p.behaviour(8, Path.LEGACY).rate(1), p.behaviour(8, Path.LEGACY).rate(2)) == (0.0, 0.2)
    assert (p.behaviour(9, Path.LEGACY).rate(1), p.behaviour(9, Path.LEGACY).rate(2)) == (0.99, 0.99)
    assert p.default[Path.LEGACY].failure_rate == 5 / 9  # first attempts: 4 of tenant 7, 1 of 9
    assert p.default[Path.LEGACY].retry_failure_rate == 1 / 5  # resubmits: only tenant 9's failed
    result = run(p, migrated=frozenset(), budget=4, resubmits=1)
    assert all(c.succeeded for c in result.conversions)
    assert sorted(a.failed for a in result.attempts) == [False] * 10 + [True] * 10


def test_failures_on_the_new_path_before_a_rollback_are_taken_as_fixed():
    """Tenant 7 failed every new-path attempt, then came back to the old path (a rollback): a group
    moves again once what failed is fixed, so its new-path failures are not kept and it fails as
    the path's other tenants do (tenant 8 still failing there, tenant 9 never failing: half).
    Tenant 8's own failures stand, and tenant 7's old-path history is its own."""
    learnt = Learnt()
    for tenant in (7, 8, 9):
        for i in range(3):
            one = dataclasses.replace(
                _done(f"n{tenant}-{i}", Path.NEW, 0.0, 1.0, 1.0, "batch"), tenant_id=tenant
            )
            if tenant != 9:
                one = dataclasses.replace(one, attempts=2, state=ConversionState.FAILED)
            learnt.add(one)
    learnt.add(dataclasses.replace(_done("back", Path.LEGACY, 0.0, 1.0, 1.0, "b0"), tenant_id=7))
    p = profile_of(learnt, [Arrival(0.0, t) for t in (7, 8, 9)], name="t", source="t")
    assert p.behaviour(7, Path.NEW).rate(1) == 0.5
    assert p.behaviour(8, Path.NEW).rate(1) == 0.99
    assert p.behaviour(9, Path.NEW).rate(1) == 0.0
    assert p.behaviour(7, Path.LEGACY).rate(1) == 0.0
    assert any("1 tenants went back to the old path" in note for note in p.notes)
    assert learnt.rolled_back == {7}


def test_a_builds_pace_is_learnt_and_each_thread_keeps_it():
    """One thread worked four 1 s conversions with 0.5 s between them: the history's gap is 0.5 s,
    and a simulated build of four at one thread takes 4 x 1 s + 3 x 0.5 s after provisioning."""
    learnt = Learnt()
    for i in range(4):
        learnt.add(_done(f"b{i}", Path.LEGACY, 0.0, 1.0 + 1.5 * i, 1.0, "build"))
    assert learnt.build_gaps() == [0.5, 0.5, 0.5]
    p = profile_of(learnt, [Arrival(0.0, 1, 4)], name="t", source="t")
    assert p.build_gap == 0.5
    assert p.provisioning[Path.LEGACY].samples == (1.0,)  # dispatch at 0, first work at 1
    result = run(p, migrated=frozenset(), budget=1, legacy_max_threads=1)
    (build,) = result.builds
    assert build.ended_at is not None
    assert build.ended_at - build.submitted_at == pytest.approx(1.0 + 4 * 1.0 + 3 * 0.5)


def test_a_measured_delay_is_drawn_from_what_was_seen():
    seen = Span.of([1.0, 2.0, 3.0, 10.0])
    assert [seen.at(u) for u in (0.0, 0.5, 1.0)] == [1.0, 2.5, 10.0]
    assert seen.describe() == [1.3, 7.9]
