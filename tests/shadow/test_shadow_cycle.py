"""Shadows in the cycle, against in-memory backends: they never change their conversion, use only
budget real work leaves free (real work is not delayed by a single cycle), are stopped when real
work needs the room, and stop for a tenant once it is migrated."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path as FsPath

import pytest

from controller.core.domain import ConversionRecord, ConversionRequest, ConversionState, DispatchBatch, Path
from controller.core.shadow import ShadowKind, ShadowPlan, ShadowState, ShadowWhen
from controller.engine.cycle import Controller, CycleConfig
from controller.engine.shadows import ShadowConfig, ShadowRunner
from controller.ledger.sqlite import SQLiteLedger
from flags.rollout import RolloutPlan
from tests.fakes import FakeBackend, FakeClock, FakeFlags, World

S = ShadowState


class Rig:
    """One controller over fake backends, with (or without) shadow backends in the same world."""

    def __init__(
        self,
        ledger: SQLiteLedger,
        clock: FakeClock,
        flags: FakeFlags,
        *,
        budget: int,
        shadows: bool,
        rate: float = 1.0,
        aa_rate: float = 0.0,
        ticks: int = 2,
        shadow_ticks: int = 3,
        new_can_cap: bool = True,
        when: ShadowWhen = ShadowWhen.SPARE,
    ) -> None:
        self.ledger, self.clock, self.budget = ledger, clock, budget
        self.world = World(budget=budget)
        real = {
            Path.LEGACY: FakeBackend(Path.LEGACY, self.world, ticks=ticks),
            Path.NEW: FakeBackend(Path.NEW, self.world, ticks=ticks, can_cap=new_can_cap),
        }
        self.runner: ShadowRunner | None = None
        self.shadow_backends: dict[Path, FakeBackend] = {}
        if shadows:
            self.shadow_backends = {
                Path.LEGACY: FakeBackend(Path.LEGACY, self.world, ticks=shadow_ticks),
                Path.NEW: FakeBackend(Path.NEW, self.world, ticks=shadow_ticks),
            }
            for b in self.shadow_backends.values():
                b.cancel_stops_running = True  # as a killed local worker does
                b.live_view = True  # shadows run on the local runners, which see a kill at once
            self.runner = ShadowRunner(
                ledger,
                self.shadow_backends,
                ShadowConfig(global_rate=rate, global_aa_rate=aa_rate, intent_grace_seconds=30),
                plan=lambda: RolloutPlan((), shadow=ShadowPlan(when=when)),
                clock=clock,
            )
        self.controller = Controller(
            ledger=ledger,
            flags=flags,
            backends=real,
            config=CycleConfig(budget=budget, intent_grace_seconds=30, legacy_max_threads=3),
            clock=clock,
            shadows=self.runner,
        )
        self.peak = 0

    def step(self) -> None:
        self.controller.run_cycle()
        self.world.tick()
        self.peak = max(self.peak, self.world.load())
        assert self.world.load() <= self.budget
        self.clock.advance(1)

    def states(self, ids: list[str]) -> tuple[tuple[ConversionState, Path | None, int], ...]:
        out = []
        for cid in ids:
            r = self.ledger.get(cid)
            assert r is not None
            out.append((r.state, r.path, r.attempts))
        return tuple(out)


def _workload(seed: int) -> list[list[ConversionRequest]]:
    """Waves of arrivals per cycle: bursts and lulls, so there is spare budget some of the time."""
    rng = random.Random(seed)
    waves: list[list[ConversionRequest]] = []
    n = 0
    for _ in range(40):
        burst = rng.choice([0, 0, 0, 1, 2, 6, 12])
        wave = []
        for _ in range(burst):
            wave.append(ConversionRequest(f"c{n}", rng.randint(1, 8), {}))
            n += 1
        waves.append(wave)
    return waves


def _play(rig: Rig, waves: list[list[ConversionRequest]], extra: int = 60) -> list[tuple]:
    timeline: list[tuple] = []
    ids: list[str] = []
    for wave in [*waves, *([[]] * extra)]:
        rig.ledger.accept(wave, rig.clock())
        ids.extend(r.conversion_id for r in wave)
        rig.step()
        timeline.append(rig.states(ids))
    return timeline


@pytest.fixture
def scratch(tmp_path: FsPath) -> Iterator[FsPath]:
    """A directory for ledgers: memory-backed where it exists, since the fsyncs dominate."""
    shm = FsPath("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    where = FsPath(tempfile.mkdtemp(prefix="cutover-shadow-", dir=shm))
    yield where
    shutil.rmtree(where, ignore_errors=True)


def _ledger(where: FsPath, name: str) -> SQLiteLedger:
    return SQLiteLedger(where / f"{name}.db")


def test_real_work_moves_exactly_as_without_shadows(scratch: FsPath) -> None:
    """Cycle by cycle, every real conversion's state is the same with shadows as without them;
    the shadows still ran, on spare budget, and the world never worked beyond the budget."""
    for seed in (1, 2, 3):
        flags = FakeFlags.none()
        flags.publish("v1", {1, 2, 3})
        waves = _workload(seed)
        plain = Rig(_ledger(scratch, f"plain{seed}"), FakeClock(), flags, budget=5, shadows=False)
        shadowed = Rig(
            _ledger(scratch, f"shadow{seed}"), FakeClock(), flags, budget=5, shadows=True, aa_rate=0.5
        )
        assert _play(plain, waves) == _play(shadowed, waves)
        ran = shadowed.ledger.shadows([S.SUCCEEDED, S.FAILED, S.COMPARED])
        legacy_owned = sum(1 for w in waves for r in w if r.tenant_id not in {1, 2, 3})
        assert ran, "no shadow ran"
        assert len({s.conversion_id for s in ran if s.kind is ShadowKind.NEW}) <= legacy_owned
        assert shadowed.peak <= 5
        assert shadowed.peak > plain.peak or plain.peak == 5
        for s in ran:
            real = shadowed.ledger.get(s.conversion_id)
            assert real is not None
            assert real.path is Path.LEGACY
        # Shadows never reached the real backends, and real work never the shadow backends.
        assert all(b.key[0] in "LN" for b in _submits(shadowed.controller.backends.values()))
        assert all(b.key[0] in "SA" for b in _submits(shadowed.shadow_backends.values()))


def _submits(backends: Iterable[object]) -> list[DispatchBatch]:
    return [batch for b in backends for batch in b.submits]  # type: ignore[attr-defined]


def _warmed_up(scratch: FsPath, name: str, *, shadows: bool, new_can_cap: bool = True) -> Rig:
    """A rig of budget 4 whose old path has finished four conversions, their four (long) shadows
    running on the budget left idle."""
    clock = FakeClock()
    flags = FakeFlags.none()
    flags.publish("v1", set())
    rig = Rig(
        _ledger(scratch, name),
        clock,
        flags,
        budget=4,
        shadows=shadows,
        shadow_ticks=30,
        new_can_cap=new_can_cap,
    )
    rig.ledger.accept([ConversionRequest(f"a{i}", 5, {}) for i in range(4)], clock())
    for _ in range(30):  # the old path finishes its four; their shadows take the idle budget
        rig.step()
        done = all(rig.ledger.get(f"a{i}").state is ConversionState.SUCCEEDED for i in range(4))  # type: ignore[union-attr]
        if done and sum(b.running() for b in rig.shadow_backends.values()) == (4 if shadows else 0):
            break
    assert [rig.ledger.get(f"a{i}").state for i in range(4)] == [ConversionState.SUCCEEDED] * 4  # type: ignore[union-attr]
    return rig


def test_shadows_holding_the_room_are_stopped_before_real_work_is_submitted(scratch: FsPath) -> None:
    """The cycle that sees real work stops the shadows holding its room, and the real work moves
    cycle by cycle exactly as it does on a rig without shadows."""
    plain = _warmed_up(scratch, "roomFalse", shadows=False)
    rig = _warmed_up(scratch, "roomTrue", shadows=True)
    assert rig.world.load() == 4
    for r in (plain, rig):
        r.ledger.accept([ConversionRequest(f"b{i}", 6, {}) for i in range(3)], r.clock())
    rig.step()  # the same cycle stops three shadows
    plain.step()
    assert rig.states([f"b{i}" for i in range(3)]) == plain.states([f"b{i}" for i in range(3)])
    for _ in range(3):
        rig.step()
        plain.step()
        assert rig.states([f"b{i}" for i in range(3)]) == plain.states([f"b{i}" for i in range(3)])
    assert [rig.ledger.get(f"b{i}").state for i in range(3)] != [ConversionState.CLAIMED] * 3  # type: ignore[union-attr]
    preempted = [p for p in rig.ledger.shadows([S.PENDING]) if p.conversion_id.startswith("a")]
    assert len(preempted) == 3
    assert all(p.preemptions == 1 for p in preempted)
    assert "make room for real work" in preempted[0].reason
    for _ in range(150):
        rig.step()
    assert not rig.ledger.shadows([S.PENDING, S.DISPATCHING, S.DISPATCHED])
    assert {s.state for s in rig.ledger.shadows(list(S))} <= {S.SUCCEEDED, S.FAILED, S.SKIPPED}


def test_shadows_that_cannot_be_stopped_keep_all_they_hold_from_real_work(scratch: FsPath) -> None:
    """Promise 2, as the state machine found it: shadows hold the whole budget when real work
    arrives and every stop call is throttled. The split had left them some room; the split made
    again around the shadows that could not be stopped must count every slot they hold, that room
    included, not only what they hold beyond it: the legacy build waits rather than run beside them.
    (A new path that cannot cap itself, so that no cap of an earlier cycle holds the build back.)"""
    rig = _warmed_up(scratch, "stuck", shadows=True, new_can_cap=False)
    assert rig.world.load() == 4
    rig.shadow_backends[Path.NEW].cancel_unavailable = 4  # TerminateJob throttled, for all four
    rig.ledger.accept([ConversionRequest(f"b{i}", 6, {}) for i in range(2)], rig.clock())
    rig.step()  # the split leaves the shadows room for two; they hold four and none can be stopped
    assert [rig.ledger.get(f"b{i}").state for i in range(2)] == [ConversionState.CLAIMED] * 2  # type: ignore[union-attr]
    assert rig.world.load() == 4
    for _ in range(40):  # the stops go through from the next cycle on, and the real work moves
        rig.step()
    assert [rig.ledger.get(f"b{i}").state for i in range(2)] == [ConversionState.SUCCEEDED] * 2  # type: ignore[union-attr]
    assert rig.peak <= 4


def test_old_path_shadows_wait_while_new_path_ones_take_the_room(sqlite_ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """Promise 2, as the state machine found it: ``make_room`` sees a new-path shadow waiting in its
    runner's queue (holding nothing yet) and caps that runner to the room. Before ``dispatch`` hands
    out what is left, the runner starts the waiting shadow (it starts work as slots free; the
    dispatcher was slow in its real submit meanwhile). An old-path shadow handed over now would run
    beside it, one beyond the room: it waits instead."""
    world = World(budget=1)  # the room real work leaves the shadows, cycle after cycle
    backends = {p: FakeBackend(p, world, ticks=5) for p in (Path.LEGACY, Path.NEW)}
    for b in backends.values():
        b.live_view = True  # the local runners: what runs is known at once
    config = ShadowConfig(global_rate=1.0, global_aa_rate=1.0)
    runner = ShadowRunner(sqlite_ledger, backends, config, clock=clock)
    record = ConversionRecord("c1", 5, {}, ConversionState.CLAIMED, Path.LEGACY)
    assert runner.sample([record], clock()) == 2  # a new-path and an old-path shadow
    runner.poll(clock())
    runner.make_room(1, clock())
    assert runner.dispatch(None, clock(), clock() + 30) == 1
    assert [s.kind for s in sqlite_ledger.shadows([S.DISPATCHED])] == [ShadowKind.NEW]
    runner.poll(clock())  # the next cycle: the new-path shadow still waits in its runner's queue
    runner.make_room(1, clock())
    world.tick()  # the runner starts it, under the cap of 1, while the dispatcher submits real work
    assert world.load() == 1
    assert runner.dispatch(None, clock(), clock() + 30) == 0
    world.tick()
    assert world.load() == 1
    assert [s.kind for s in sqlite_ledger.shadows([S.PENDING])] == [ShadowKind.AA]


def test_a_shadow_never_changes_its_conversion(sqlite_ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """Failing, slow and preempted shadows: each conversion ends as it would have, once."""
    flags = FakeFlags.none()
    flags.publish("v1", {1})
    rig = Rig(sqlite_ledger, clock, flags, budget=3, shadows=True, aa_rate=1.0)
    rig.shadow_backends[Path.NEW].fail_ids.update({"c1", "c2"})
    rig.ledger.accept([ConversionRequest(f"c{i}", 1 + i % 4, {}) for i in range(20)], clock())
    for _ in range(80):
        rig.step()
    for i in range(20):
        record = rig.ledger.get(f"c{i}")
        assert record is not None
        assert record.state is ConversionState.SUCCEEDED
        assert record.attempts == 1
        assert record.path is (Path.NEW if 1 + i % 4 == 1 else Path.LEGACY)
    shadows = rig.ledger.shadows(list(S))
    assert {s.conversion_id for s in shadows} == {f"c{i}" for i in range(20) if 1 + i % 4 != 1}
    assert {s.kind for s in shadows} == {ShadowKind.NEW, ShadowKind.AA}
    failed = {s.conversion_id for s in shadows if s.state is S.FAILED}
    assert {"c1", "c2"} <= failed


def test_shadows_told_to_wait_for_idle_paths_start_only_once_real_work_is_done(scratch: FsPath) -> None:
    """``when: idle``: the same arrivals as with ``spare``, and real work moves the same, but no
    shadow starts in a cycle that sees real work running or waiting on either path; once both are
    idle, every sampled shadow runs."""
    flags = FakeFlags.none()
    flags.publish("v1", {1, 2, 3})
    waves = _workload(4)
    spare = Rig(_ledger(scratch, "spare"), FakeClock(), flags, budget=5, shadows=True)
    idle = Rig(_ledger(scratch, "idle"), FakeClock(), flags, budget=5, shadows=True, when=ShadowWhen.IDLE)
    ids: list[str] = []
    started_beside: dict[str, int] = {"spare": 0, "idle": 0}
    for wave in [*waves, *([[]] * 80)]:
        for name, rig in (("spare", spare), ("idle", idle)):
            rig.ledger.accept(wave, rig.clock())
            before = len(_submits(rig.shadow_backends.values()))
            rig.step()
            # Shadows go out last in a cycle: real work live after it was live when they went out.
            busy = any(
                r.state in (ConversionState.CLAIMED, ConversionState.DISPATCHING, ConversionState.DISPATCHED)
                for r in (rig.ledger.get(cid) for cid in [*ids, *(w.conversion_id for w in wave)])
                if r is not None
            )
            if busy and len(_submits(rig.shadow_backends.values())) > before:
                started_beside[name] += 1
        ids.extend(r.conversion_id for r in wave)
        assert spare.states(ids) == idle.states(ids)
    assert started_beside["spare"] > 0, "the workload leaves no spare budget beside real work"
    assert started_beside["idle"] == 0
    for _ in range(200):
        idle.step()
    ran = idle.ledger.shadows([S.SUCCEEDED, S.FAILED])
    assert ran
    assert not idle.ledger.shadows([S.PENDING, S.DISPATCHING, S.DISPATCHED])
    # The same conversions were sampled; none of the idle rig's was stopped for real work or skipped.
    assert {r.shadow_id for r in ran} == {r.shadow_id for r in spare.ledger.shadows(list(S))}
    assert all(r.preemptions == 0 for r in ran)


def test_shadows_of_a_migrated_tenant_stop(sqlite_ledger, clock) -> None:  # type: ignore[no-untyped-def]
    flags = FakeFlags.none()
    flags.publish("v1", set())
    rig = Rig(sqlite_ledger, clock, flags, budget=2, shadows=True, ticks=5)
    rig.ledger.accept([ConversionRequest(f"c{i}", 7, {}) for i in range(6)], clock())
    rig.step()
    assert len(rig.ledger.shadows([S.PENDING])) == 6  # the real work takes the whole budget
    flags.publish("v2", {7})
    for _ in range(30):
        rig.step()
    skipped = rig.ledger.shadows([S.SKIPPED])
    assert skipped
    assert all("migrated" in s.reason for s in skipped)


def test_sampling_follows_the_rate_and_replicas_agree(scratch: FsPath) -> None:
    ledger = _ledger(scratch, "rate")
    runner = ShadowRunner(ledger, {}, ShadowConfig(global_rate=0.25))
    records = [ConversionRecord(f"x{i}", 3, {}, ConversionState.CLAIMED, Path.LEGACY) for i in range(2000)]
    made = runner.sample(records, 0.0)
    assert 400 < made < 600

    def again() -> int:
        return ShadowRunner(ledger, {}, ShadowConfig(global_rate=0.25)).sample(records, 5.0)

    assert again() == 0  # the same ids: nothing new
    new_path = [ConversionRecord(f"y{i}", 3, {}, ConversionState.CLAIMED, Path.NEW) for i in range(100)]
    assert runner.sample(new_path, 0.0) == 0
