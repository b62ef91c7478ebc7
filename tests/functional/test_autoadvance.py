"""Auto-advance driven by a fake clock over a real flag file store and SQLite ledger: it moves the
next group after the bake time while the gate passes, pauses (or rolls the last group back) on a
failing gate, waits while the gate is inconclusive and says once that the rollout is stuck past
the deadline, keeps out of blackout windows, and acts from one replica at a time."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import pytest

from controller.core.autoadvance import Action
from controller.core.domain import Path
from controller.engine.autoadvance import AutoAdvancer
from controller.engine.gates import GateWatch, PlanWatch
from controller.ledger.sqlite import SQLiteLedger
from flags import ops
from flags.file_store import FileVersionStore
from tests.fakes import FakeClock, record_finished

HOUR = 3600.0
T0 = dt.datetime(2026, 11, 9, 23, 0, tzinfo=dt.UTC).timestamp()  # group g1 moves now
GROUPS = {"g1": [1, 2], "g2": [3, 4], "g3": [5]}


@dataclass
class World:
    clock: FakeClock
    ledger: SQLiteLedger
    store: FileVersionStore
    plan: PlanWatch
    notes: list[str] = field(default_factory=list)

    def advancer(self, holder: str = "replica-a", max_add: int = 100) -> AutoAdvancer:
        def migrated() -> frozenset[int]:
            current = self.store.in_force()
            return current.content.migrated if current else frozenset()

        gates = GateWatch(self.ledger, self.plan, migrated, self.clock, ttl=0)
        return AutoAdvancer(
            leases=self.ledger,
            values=self.ledger,
            store=lambda: self.store,
            gates=gates,
            plan=self.plan,
            notify=lambda subject, body: self.notes.append(subject),
            clock=self.clock,
            holder=holder,
            max_add=max_add,
        )

    def at(self, when: float) -> None:
        self.clock.now = when

    def versions(self) -> list[tuple[int, str, str, bool]]:
        return [
            (v.number, v.note.action, v.note.by, v.note.rollback)
            for v in self.store.versions()
            if v.note is not None
        ]


@pytest.fixture
def make_world(tmp_path: FsPath) -> Any:
    worlds: list[World] = []

    def make(auto: dict[str, Any], new_path: int = 100, fails_every: int = 0) -> World:
        plan = {
            "gates": {"min_conversions": 50},
            "auto": auto,
            "groups": [{"name": n, "tenant_ids": ids} for n, ids in GROUPS.items()],
        }
        (tmp_path / "rollout.json").write_text(json.dumps(plan))
        clock = FakeClock(T0 - 2 * 86400)
        world = World(
            clock,
            SQLiteLedger(tmp_path / "ledger.db"),
            FileVersionStore(tmp_path / "flags.json", "migrated_tenants"),
            PlanWatch(tmp_path / "rollout.json"),
        )
        worlds.append(world)
        record_finished(world.ledger, "old", [1, 2, 3, 4, 5], Path.LEGACY, at=T0 - 86400, count=300)
        world.at(T0)
        ops.advance(
            world.store, None, to_group=None, add=GROUPS["g1"], max_add=10, op=ops.Operator("ops", clock)
        )
        fails = (lambda i: i % fails_every == 0) if fails_every else (lambda i: False)
        if new_path:
            record_finished(
                world.ledger, "new", GROUPS["g1"], Path.NEW, at=T0 + HOUR, count=new_path, fails=fails
            )
        return world

    yield make
    for w in worlds:
        w.ledger.close()


def test_a_passing_group_moves_the_next_after_the_bake_time(make_world: Any) -> None:
    world = make_world({"bake": "24h", "deadline": "72h"})
    auto = world.advancer()
    world.at(T0 + 2 * HOUR)
    auto.tick(world.clock())
    assert auto.last is not None
    assert (auto.last.action, auto.last.group, auto.last.at) == (Action.WAIT, "g2", T0 + 24 * HOUR)
    assert auto.last.why == "the last change to bake"
    assert len(world.store.versions()) == 1
    world.at(T0 + 25 * HOUR)
    auto.tick(world.clock())
    assert (auto.last.action, auto.last.group) == (Action.ADVANCE, "g2")
    assert world.versions()[-1] == (2, "advance", "cutover-auto", False)
    in_force = world.store.in_force()
    assert in_force is not None
    assert in_force.content.migrated == {1, 2, 3, 4}
    assert world.notes == ["cutover-auto: moved g2 to the new path (flag version 2)"]
    world.at(T0 + 26 * HOUR)
    auto.tick(world.clock())  # g2 has just moved: the new change bakes before anything else
    assert (auto.last.action, auto.last.why) == (Action.WAIT, "the last change to bake")
    assert len(world.store.versions()) == 2


def test_a_failing_group_pauses_the_rollout_until_the_flag_changes(make_world: Any) -> None:
    world = make_world({"bake": "24h", "on_fail": "pause"}, fails_every=3)
    auto = world.advancer()
    world.at(T0 + 2 * HOUR)
    auto.tick(world.clock())  # a failure does not wait for the bake time
    assert (auto.last.action, auto.last.group) == (Action.PAUSE, "g1")
    assert world.notes == ["cutover-auto: paused the rollout at g1"]
    assert auto.last_action is not None
    assert auto.last_action["why"].startswith("gate failed: g1 is fail (new path: 34 of 100 failed")
    world.at(T0 + 30 * HOUR)
    auto.tick(world.clock())
    assert auto.last.action is Action.WAIT
    assert auto.last.why.startswith("paused (gate failed: g1 is fail")
    assert len(world.store.versions()) == 1
    assert len(world.notes) == 1
    ops.rollback(
        world.store, tenants=GROUPS["g1"], op=ops.Operator("ops", world.clock)
    )  # an operator takes g1 out
    world.at(T0 + 31 * HOUR)
    auto.tick(world.clock())
    assert (auto.last.action, auto.last.group, auto.last.why) == (
        Action.WAIT,
        "g1",
        "the last change to bake",
    )


def test_on_fail_rollback_takes_the_last_group_back_and_pauses(make_world: Any) -> None:
    world = make_world({"bake": "24h", "on_fail": "rollback"}, fails_every=3)
    auto = world.advancer()
    world.at(T0 + 2 * HOUR)
    auto.tick(world.clock())
    assert (auto.last.action, auto.last.group) == (Action.ROLLBACK, "g1")
    assert world.versions()[-1] == (2, "rollback", "cutover-auto", True)
    in_force = world.store.in_force()
    assert in_force is not None
    assert in_force.content.migrated == frozenset()
    assert world.notes == ["cutover-auto: rolled g1 back to the old path (flag version 2) and paused"]
    world.at(T0 + 40 * HOUR)
    auto.tick(world.clock())  # no loop of moving g1 again and rolling it back
    assert auto.last.action is Action.WAIT
    assert auto.last.why.startswith("paused")
    assert len(world.store.versions()) == 2


def test_an_inconclusive_group_waits_and_is_announced_once_past_the_deadline(make_world: Any) -> None:
    world = make_world({"bake": "24h", "deadline": "72h"}, new_path=20)  # under the minimum of 50
    auto = world.advancer()
    world.at(T0 + 25 * HOUR)
    auto.tick(world.clock())
    assert (auto.last.action, auto.last.at) == (Action.WAIT, None)
    assert (
        auto.last.why
        == "more evidence: g1 is inconclusive (new path: 20 of the 50 finished conversions needed: inconclusive)"
    )
    assert world.notes == []
    world.at(T0 + 73 * HOUR)
    auto.tick(world.clock())
    assert auto.last.action is Action.NOTIFY_STUCK
    assert world.notes == [
        "cutover-auto: the rollout is stuck: g2 cannot move while the gate stays inconclusive"
    ]
    world.at(T0 + 80 * HOUR)
    auto.tick(world.clock())
    assert auto.last.action is Action.WAIT
    assert len(world.notes) == 1
    assert len(world.store.versions()) == 1


def test_no_group_moves_in_a_blackout_window(make_world: Any) -> None:
    world = make_world({"bake": "24h", "blackout": [{"cron": "0 0 * * *", "for": "6h"}]})
    auto = world.advancer()
    world.at(T0 + 25 * HOUR)  # 2026-11-11 00:00 UTC: the daily blackout until 06:00
    auto.tick(world.clock())
    assert (auto.last.action, auto.last.at, auto.last.why) == (
        Action.WAIT,
        T0 + 31 * HOUR,
        "the blackout window to end",
    )
    assert len(world.store.versions()) == 1
    world.at(T0 + 31 * HOUR)
    auto.tick(world.clock())
    assert (auto.last.action, auto.last.group) == (Action.ADVANCE, "g2")


def test_one_replica_acts_and_the_others_show_what_it_decided(make_world: Any) -> None:
    """Only the lease holder reads the flag versions and acts; the others show its decision."""
    world = make_world({"bake": "1h"})
    first, second = world.advancer("replica-a"), world.advancer("replica-b")

    def unread() -> Any:
        raise AssertionError("only the acting replica reads the flag versions")

    second.store = unread
    world.at(T0 + 2 * HOUR)
    first.tick(world.clock())
    second.tick(world.clock())
    assert (first.acting, second.acting) == (True, False)
    assert second.last == first.last
    assert first.last is not None
    assert (first.last.action, first.last.group) == (Action.ADVANCE, "g2")
    assert [v[0] for v in world.versions()] == [1, 2]
    assert second.state() == first.state() | {"acting": False}
    assert len(world.notes) == 1


def test_a_guard_rail_refusal_pauses_instead_of_trying_every_tick(make_world: Any) -> None:
    world = make_world({"bake": "1h"})
    auto = world.advancer(max_add=1)  # g2 brings two tenants
    world.at(T0 + 2 * HOUR)
    auto.tick(world.clock())
    assert auto.last_action is not None
    assert auto.last_action["action"] == "pause"
    assert "would add 2 tenants in one step, over the limit of 1" in auto.last_action["why"]
    world.at(T0 + 3 * HOUR)
    auto.tick(world.clock())
    assert auto.last.why.startswith("paused (advance refused")
    assert len(world.store.versions()) == 1


def test_without_an_auto_section_nothing_happens(make_world: Any, tmp_path: FsPath) -> None:
    world = make_world({"bake": "1h", "enabled": False})
    auto = world.advancer()
    world.at(T0 + 2 * HOUR)
    auto.tick(world.clock())
    assert auto.last is None
    assert auto.state() == {"enabled": False}
    assert len(world.store.versions()) == 1
