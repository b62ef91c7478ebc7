"""The file store: numbered versions beside the flag file, deployed atomically, rolled back by number."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from controller.core.errors import ConflictError, FlagInvalidError, InputError, NotFoundError
from flags import ops
from flags.file_source import FileFlagSource
from flags.file_store import FileVersionStore, history_dir
from flags.rollout import RolloutPlan, parse_plan
from flags.versions import FlagContent, Note
from tests.fakes import FakeClock

KEY = "migrated_tenants"
PLAN = parse_plan(
    {
        "groups": [
            {"name": "group-1", "tenant_ids": ["1-3"]},
            {"name": "group-2", "tenant_ids": ["10-14"]},
            {"name": "group-3", "tenant_ids": ["20-29"]},
        ]
    }
)


def op(clock: FakeClock) -> ops.Operator:
    return ops.Operator(by="ops@test", clock=clock)


def advance(
    store: FileVersionStore, clock: FakeClock, group: str, plan: RolloutPlan = PLAN, **kw: object
) -> dict:  # type: ignore[type-arg]
    clock.advance(60)
    return ops.advance(store, plan, to_group=group, max_add=kw.pop("max_add", 100), op=op(clock), **kw)  # type: ignore[arg-type]


def read(flag_file: Path, clock: FakeClock) -> tuple[str, frozenset[int], bool]:
    snap = FileFlagSource(flag_file, KEY, clock).fetch()
    return snap.version, snap.tenant_ids, snap.version_from_content


def snapshot_of_files(flag_file: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in history_dir(flag_file).glob("*") if p.name != ".lock"}
    if flag_file.exists():
        files["flags.json"] = flag_file.read_bytes()
    return files


@pytest.fixture
def store(flag_file: Path) -> FileVersionStore:
    return FileVersionStore(flag_file, KEY)


def test_advance_writes_numbered_versions_the_source_reports(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    first = advance(store, clock, "group-1")
    second = advance(store, clock, "group-2")
    assert (first["version"], second["version"]) == (1, 2)
    assert read(flag_file, clock) == ("2", frozenset({1, 2, 3, 10, 11, 12, 13, 14}), False)
    # The agent's local development mode reads the values form: a new file starts in it.
    assert set(json.loads(flag_file.read_text())) == {KEY}
    history = history_dir(flag_file)
    assert sorted(p.name for p in history.glob("0*")) == [
        "0001.json",
        "0001.meta.json",
        "0002.json",
        "0002.meta.json",
    ]
    assert (history / "0002.json").read_bytes() == flag_file.read_bytes()


def test_history_says_who_when_and_what_changed(store: FileVersionStore, clock: FakeClock) -> None:
    started = clock()
    advance(store, clock, "group-1")
    advance(store, clock, "group-3")
    h = ops.history(store)
    assert [(v["version"], v["by"], v["added"], v["removed"], v["in_force"]) for v in h["versions"]] == [
        (1, "ops@test", 3, 0, False),
        (2, "ops@test", 15, 0, True),
    ]
    assert h["versions"][0]["at"] == ops.iso(started + 60)
    assert [d["version"] for d in h["deployments"]] == [2, 1]


def test_rollback_puts_the_previous_version_back_byte_for_byte(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-1")
    v1 = flag_file.read_bytes()
    advance(store, clock, "group-2")
    result = ops.rollback(store, op=op(clock))
    assert (result["from_version"], result["version"], result["removed"]) == (2, 1, 5)
    assert flag_file.read_bytes() == v1
    assert read(flag_file, clock)[0] == "1"
    latest = ops.history(store)["deployments"][0]
    assert (latest["version"], latest["rollback"]) == (1, True)
    # Back again goes further back, not forth: there is nothing before version 1.
    with pytest.raises(ConflictError, match="no flag version before 1"):
        ops.rollback(store, op=op(clock))


def test_advancing_after_a_rollback_writes_a_new_number(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-1")
    advance(store, clock, "group-2")
    ops.rollback(store, op=op(clock))
    result = advance(store, clock, "group-3")
    assert (result["from_version"], result["version"]) == (1, 3)
    assert read(flag_file, clock)[1] == PLAN.through("group-3")


def test_rollback_to_a_named_version(store: FileVersionStore, flag_file: Path, clock: FakeClock) -> None:
    for g in ("group-1", "group-2", "group-3"):
        advance(store, clock, g)
    assert ops.rollback(store, to_version=1, op=op(clock))["version"] == 1
    assert read(flag_file, clock)[1] == {1, 2, 3}
    with pytest.raises(InputError, match="older version"):
        ops.rollback(store, to_version=3, op=op(clock))
    with pytest.raises(ConflictError, match="already in force"):
        ops.rollback(store, to_version=1, op=op(clock))


def test_rollback_to_a_version_that_does_not_exist(store: FileVersionStore, clock: FakeClock) -> None:
    advance(store, clock, "group-1")
    advance(store, clock, "group-2")
    (history_dir(store.path) / "0001.json").unlink()
    with pytest.raises(NotFoundError, match="flag version 1 does not exist"):
        ops.rollback(store, to_version=1, op=op(clock))
    with pytest.raises(ConflictError, match="no flag version before 2"):
        ops.rollback(store, op=op(clock))


def test_rollback_of_one_tenant_is_a_new_version_marked_as_a_rollback(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-2")
    result = ops.rollback(store, tenants={11}, op=op(clock))
    assert (result["version"], result["removed"], result["tenant_count"]) == (2, 1, 7)
    assert 11 not in read(flag_file, clock)[1]
    row = ops.history(store)["versions"][-1]
    assert (row["action"], row["rollback"], row["removed"]) == ("rollback", True, 1)
    with pytest.raises(InputError, match="tenant 99 is not listed"):
        ops.rollback(store, tenants={99}, op=op(clock))


def test_more_than_max_add_is_refused_and_nothing_is_written(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-1")
    before = snapshot_of_files(flag_file)
    with pytest.raises(InputError, match="would add 15 tenants in one step, over the limit of 10"):
        advance(store, clock, "group-3", max_add=10)
    assert snapshot_of_files(flag_file) == before


def test_advance_never_takes_tenants_out_and_writes_nothing(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-2")
    before = snapshot_of_files(flag_file)
    with pytest.raises(
        InputError, match=r"would take 5 tenant\(s\) off the new path .*cutover flag rollback"
    ):
        advance(store, clock, "group-1")
    assert snapshot_of_files(flag_file) == before


def test_advancing_to_where_the_flag_already_is_writes_nothing(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-1")
    before = snapshot_of_files(flag_file)
    result = advance(store, clock, "group-1")
    assert (result["changed"], result["version"]) == (False, 1)
    assert snapshot_of_files(flag_file) == before


def test_a_hand_edited_file_is_versioned_by_hash_and_kept_as_the_base(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-1")
    flag_file.write_text(json.dumps({KEY: {"enabled": True, "tenant_ids": [1, 2, 3, 500]}}))
    version, _, from_content = read(flag_file, clock)
    assert from_content
    assert version.startswith("sha-")
    assert ops.show(store, PLAN)["recorded"] is False
    with pytest.raises(InputError, match="--to-version"):
        ops.rollback(store, op=op(clock))
    advance(store, clock, "group-2")
    assert 500 in read(flag_file, clock)[1]  # tenants outside the plan stay where they are


def test_a_definition_document_stays_one_and_keeps_its_other_flags(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    flag_file.write_text(
        json.dumps(
            {
                "version": "1",
                "flags": {KEY: {"name": "m"}, "dark_mode": {"name": "d"}},
                "values": {KEY: {"enabled": True, "tenant_ids": [1]}, "dark_mode": {"enabled": True}},
            }
        )
    )
    advance(store, clock, "group-1")
    doc = json.loads(flag_file.read_text())
    assert doc["values"]["dark_mode"] == {"enabled": True}
    assert doc["values"][KEY]["tenant_ids"] == [1, 2, 3]


def test_an_invalid_file_in_force_blocks_advance_but_not_a_rollback_to_a_named_version(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-1")
    advance(store, clock, "group-2")
    flag_file.write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [1, "2"]}}')
    with pytest.raises(FlagInvalidError, match=r"tenant_ids\[1\]"):
        advance(store, clock, "group-3")
    ops.rollback(store, to_version=2, op=op(clock))
    assert read(flag_file, clock)[0] == "2"


def test_a_second_command_at_the_same_time_is_refused(
    store: FileVersionStore, flag_file: Path, clock: FakeClock
) -> None:
    advance(store, clock, "group-1")
    with (history_dir(flag_file) / ".lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ConflictError, match="another `cutover flag` command"):
            advance(store, clock, "group-2")


def test_a_version_written_meanwhile_makes_the_write_fail(store: FileVersionStore, clock: FakeClock) -> None:
    advance(store, clock, "group-1")
    note = Note("advance", "x", "t", 1, 1, 0)
    with pytest.raises(ConflictError, match="version 1 was written after this command read version None"):
        store.create_version(FlagContent(True, frozenset({1})), note, None)


def test_show_reports_groups_fully_and_partly_in(store: FileVersionStore, clock: FakeClock) -> None:
    advance(store, clock, "group-1")
    clock.advance(1)
    ops.advance(store, PLAN, to_group=None, add={10, 11}, max_add=10, op=op(clock))
    shown = ops.show(store, PLAN)
    assert (shown["version"], shown["tenant_count"], shown["latest_version"]) == (2, 5, 2)
    assert [(g["name"], g["migrated"], g["state"]) for g in shown["groups"]] == [
        ("group-1", 3, "in"),
        ("group-2", 2, "partly"),
        ("group-3", 0, "out"),
    ]
