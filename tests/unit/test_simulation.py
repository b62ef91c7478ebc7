"""The simulator runs the project's own cycle: deterministic, fast, and moved by the real split."""

from __future__ import annotations

import dataclasses

import pytest

from controller.core import admission
from controller.core.admission import Load, Split
from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.engine import cycle
from controller.engine.history import Learnt, profile_of
from controller.engine.profile import Arrival, Behaviour, Durations, Profile, Span, spread
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
