"""Last-known-good: a source failure never un-migrates a tenant, not even across a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path as FsPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.bootstrap import cycle_config, make_flag_source
from controller.core.domain import Path
from controller.core.routing import basis, decide
from controller.ledger.sqlite import SQLiteLedger
from controller.settings import Settings
from flags import ops
from flags.agent import AgentFlagSource
from flags.file_source import FileFlagSource
from flags.file_store import FileVersionStore
from flags.lkg import LastKnownGood
from flags.snapshot import FlagSnapshot, FlagState
from tests.fakes import FakeClock

from .agent_fake import FakeAgent

REPO = FsPath(__file__).resolve().parents[2]


class MemoryStore:
    """The ledger's flag store, in memory."""

    def __init__(self) -> None:
        self.saved: FlagSnapshot | None = None

    def save_flag(self, snapshot: FlagSnapshot) -> None:
        self.saved = snapshot

    def load_flag(self) -> FlagSnapshot | None:
        return self.saved


step = st.one_of(
    st.tuples(st.just("valid"), st.lists(st.integers(1, 10_000), max_size=20)),
    st.tuples(
        st.just("invalid"),
        st.sampled_from(
            [
                '{"migrated_tenants": {"enabled": true, "tenant_ids": [1, true]}}',
                "not json",
                '{"other": {}}',
                '{"migrated_tenants": {"enabled": 1}}',
            ]
        ),
    ),
    st.tuples(st.just("missing"), st.none()),
)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=12))
def test_a_bad_or_missing_document_never_replaces_the_last_good_one(steps: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = FsPath(tmp) / "flags.json"
        clock = FakeClock()
        store = MemoryStore()
        lkg = LastKnownGood(FileFlagSource(path, "migrated_tenants", clock), store, clock)
        good: frozenset[int] | None = None
        for kind, payload in steps:
            clock.advance(1)
            if kind == "valid":
                ids = payload if isinstance(payload, list) else []
                path.write_text(json.dumps({"migrated_tenants": {"enabled": True, "tenant_ids": ids}}))
                good = frozenset(ids)
            elif kind == "invalid":
                path.write_text(str(payload))
            else:
                path.unlink(missing_ok=True)
            status = lkg.read()
            seen = status.snapshot.tenant_ids if status.snapshot else None
            assert seen == good
            assert (store.saved.tenant_ids if store.saved else None) == good
            expected = {"valid": FlagState.OK, "invalid": FlagState.INVALID, "missing": FlagState.UNAVAILABLE}
            assert status.state is expected[kind]


def test_after_a_restart_with_the_flag_file_gone_migrated_tenants_still_route_new(tmp_path: FsPath) -> None:
    flag_file, ledger_db = tmp_path / "flags.json", tmp_path / "ledger.db"
    store = FileVersionStore(flag_file, "migrated_tenants")
    ops.advance(store, None, to_group=None, add={1001, 1002}, max_add=10, op=ops.Operator(by="test"))
    ledger = SQLiteLedger(ledger_db)
    first = LastKnownGood(
        FileFlagSource(flag_file, "migrated_tenants", FakeClock()), ledger, FakeClock()
    ).read()
    ledger.close()
    assert first.state is FlagState.OK
    flag_file.unlink()

    def route(tenant: int) -> dict[str, object]:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CUTOVER_FLAG_FILE": str(flag_file),
            "CUTOVER_LEDGER": f"sqlite:///{ledger_db}",
        }
        done = subprocess.run(
            [sys.executable, "-m", "controller.cli", "route", str(tenant), "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(done.stdout))

    migrated, other = route(1001), route(1003)
    assert (migrated["path"], migrated["flag_version"], migrated["flag_state"]) == ("new", "1", "unavailable")
    assert other["path"] == "legacy"


def test_a_restarted_controller_whose_agent_is_gone_keeps_routing_by_the_persisted_flag(
    agent: FakeAgent, tmp_path: FsPath
) -> None:
    cfg = Settings(
        flag_source="agent",
        agent_url=agent.url,
        agent_startup_seconds=0,
        ledger=f"sqlite:///{tmp_path / 'l.db'}",
    )
    agent.deploy(True, [7, 8])
    clock = FakeClock()
    ledger = SQLiteLedger(tmp_path / "l.db")
    first_source = make_flag_source(cfg, clock)
    before = LastKnownGood(first_source, ledger, clock).read()
    first_source.close()  # type: ignore[attr-defined]
    ledger.close()
    agent.stop()

    clock.advance(600)
    ledger = SQLiteLedger(tmp_path / "l.db")
    source = make_flag_source(cfg, clock)
    try:
        status = LastKnownGood(source, ledger, clock).read()
        policy = cycle_config(cfg).routing
        routing = basis(status, policy)
        assert before.state is FlagState.OK
        assert status.state is FlagState.UNAVAILABLE
        assert not routing.hold
        assert decide(7, routing.snapshot, policy).path is Path.NEW
        assert decide(9, routing.snapshot, policy).path is Path.LEGACY
    finally:
        source.close()  # type: ignore[attr-defined]
        ledger.close()


def _stale_status(on_stale: str, clock: FakeClock, tmp_path: FsPath) -> tuple[FlagState, bool, Path | None]:
    cfg = Settings(max_flag_age=60, on_stale_flag=on_stale, flag_file=tmp_path / "flags.json")  # type: ignore[arg-type]
    (tmp_path / "flags.json").write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [3]}}')
    lkg = LastKnownGood(make_flag_source(cfg, clock), MemoryStore(), clock, max_age_seconds=cfg.max_flag_age)
    lkg.read()
    (tmp_path / "flags.json").unlink()
    clock.advance(120)
    status = lkg.read()
    policy = cycle_config(cfg).routing
    routing = basis(status, policy)
    return status.state, routing.hold, decide(3, routing.snapshot, policy).path


def test_a_flag_older_than_the_max_age_is_stale_and_still_served_by_default(
    clock: FakeClock, tmp_path: FsPath
) -> None:
    assert _stale_status("serve", clock, tmp_path) == (FlagState.STALE, False, Path.NEW)


def test_a_stale_flag_holds_the_work_when_told_to_pause(clock: FakeClock, tmp_path: FsPath) -> None:
    state, hold, _ = _stale_status("pause", clock, tmp_path)
    assert (state, hold) == (FlagState.STALE, True)


@pytest.mark.parametrize(("policy", "path", "hold"), [("legacy", Path.LEGACY, False), ("pause", None, True)])
def test_without_any_valid_flag_the_fallback_policy_decides(
    policy: str, path: Path | None, hold: bool, clock: FakeClock, tmp_path: FsPath
) -> None:
    cfg = Settings(on_flag_unavailable=policy, flag_file=tmp_path / "absent.json")  # type: ignore[arg-type]
    status = LastKnownGood(make_flag_source(cfg, clock), MemoryStore(), clock).read()
    routing = basis(status, cycle_config(cfg).routing)
    assert routing.hold is hold
    assert decide(1, routing.snapshot, cycle_config(cfg).routing).path is path


AGENT_CONNECT_TIMEOUT, AGENT_READ_TIMEOUT = 0.3, 0.5


@pytest.mark.parametrize(
    ("misbehave", "state", "problem"),
    [
        # Each byte comes well within the read timeout; the whole body would take about 10 s.
        ({"drip": 0.05}, FlagState.UNAVAILABLE, "did not answer"),
        ({"slow_headers": 8.0}, FlagState.UNAVAILABLE, "did not answer"),
        ({"truncate": True}, FlagState.UNAVAILABLE, "broke off"),
        ({"content_type": "text/html"}, FlagState.INVALID, "text/html"),
        ({"content_type": "application/xml", "body": b"<flag/>"}, FlagState.INVALID, "application/xml"),
    ],
    ids=["slow drip", "no headers", "truncated", "html", "xml"],
)
def test_a_misbehaving_agent_is_a_typed_failure_within_the_timeout_and_the_last_good_flag_stays(
    agent: FakeAgent, clock: FakeClock, misbehave: dict[str, object], state: FlagState, problem: str
) -> None:
    agent.deploy(True, list(range(1, 40)))
    source = AgentFlagSource(
        agent.url,
        "cutover",
        "prod",
        "migration-flags",
        "migrated_tenants",
        clock,
        connect_timeout=AGENT_CONNECT_TIMEOUT,
        read_timeout=AGENT_READ_TIMEOUT,
        startup_seconds=0,
    )
    store = MemoryStore()
    lkg = LastKnownGood(source, store, clock)
    try:
        good = lkg.read()
        agent.deploy(True, [999])
        agent.misbehave = misbehave
        clock.advance(1)
        started = time.monotonic()
        status = lkg.read()
        took = time.monotonic() - started
    finally:
        source.close()
    assert good.state is FlagState.OK
    assert status.state is state
    assert problem in status.problem
    assert status.snapshot == good.snapshot
    assert store.saved == good.snapshot
    # A generous bound for a loaded machine, far below what waiting for the answer would take.
    assert took < (AGENT_CONNECT_TIMEOUT + AGENT_READ_TIMEOUT) * 3 + 2


@pytest.mark.parametrize(
    "record", ["{not json", '{"version": "3"}', '["a", "list"]', '{"version": 1, "enabled": "x"}']
)
def test_an_unreadable_persisted_record_is_kept_aside_and_never_stops_routing(
    tmp_path: FsPath, record: str
) -> None:
    """A corrupt last-known-good record is reported and kept aside for inspection; routing goes on
    by the valid current flag, and with no source at all it falls back as if none was ever read."""
    import sqlite3

    ledger = SQLiteLedger(tmp_path / "l.db")
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("INSERT INTO kv (key, value, updated_at) VALUES ('flag:last_known_good', ?, 0)", (record,))
    aside: list[str] = []
    clock = FakeClock()
    flag_file = tmp_path / "flags.json"
    lkg = LastKnownGood(
        FileFlagSource(flag_file, "migrated_tenants", clock), ledger, clock, keep_aside=aside.append
    )
    missing = lkg.read()
    assert missing.snapshot is None
    assert missing.state is FlagState.UNAVAILABLE
    assert "persisted last-known-good flag is unreadable" in missing.problem
    assert aside == [record]
    assert basis(missing, cycle_config(Settings()).routing).hold is False  # the legacy fallback
    flag_file.write_text(json.dumps({"migrated_tenants": {"enabled": True, "tenant_ids": [5]}}))
    clock.advance(1)
    fresh = lkg.read()
    assert fresh.state is FlagState.OK
    assert fresh.snapshot is not None
    assert decide(5, fresh.snapshot, cycle_config(Settings()).routing).path is Path.NEW
    reloaded = ledger.load_flag()
    assert reloaded is not None
    assert reloaded.tenant_ids == {5}
    ledger.close()


def test_an_unreadable_persisted_record_is_a_typed_error_for_its_readers(tmp_path: FsPath) -> None:
    """Readers that load the record directly (readiness before the first cycle) get a
    ``FlagInvalidError`` naming the record, which they answer as not ready (503), not a crash."""
    import sqlite3

    from controller.core.errors import FlagInvalidError

    ledger = SQLiteLedger(tmp_path / "l.db")
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("INSERT INTO kv (key, value, updated_at) VALUES ('flag:last_known_good', '{', 0)")
    with pytest.raises(FlagInvalidError, match="persisted last-known-good flag is unreadable"):
        ledger.load_flag()
    ledger.close()


def test_a_service_with_an_unreadable_record_is_not_ready_then_routes_and_keeps_the_record(
    tmp_path: FsPath,
) -> None:
    """Wired as ``cutover run`` wires it: before the first cycle /readyz's check answers "not ready"
    with the reason (it used to raise); the cycle then runs by the valid flag, and the corrupt
    record is kept under its own key for inspection."""
    import sqlite3

    from controller.api.readmodel import ReadModel
    from controller.api.tenants import PlanFile
    from controller.bootstrap import UNREADABLE_FLAG_KEY, build

    db = tmp_path / "l.db"
    SQLiteLedger(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO kv (key, value, updated_at) VALUES ('flag:last_known_good', 'garbage', 0)")
    flag_file = tmp_path / "flags.json"
    flag_file.write_text(json.dumps({"migrated_tenants": {"enabled": True, "tenant_ids": [5]}}))
    cfg = Settings(
        ledger=f"sqlite:///{db}",
        flag_file=str(flag_file),
        local_state_dir=str(tmp_path / "state"),
        output_dir=str(tmp_path / "out"),
    )
    service = build(cfg)
    views = ReadModel(service, PlanFile(None))
    try:
        ready, reason = views.readiness(time.time(), probe=True)
        assert not ready
        assert "last-known-good flag is unreadable" in reason
        report = service.controller.run_cycle()
        assert report.flag.state is FlagState.OK
        assert views.readiness(time.time(), probe=True)[0]
        assert service.ledger.get_value(UNREADABLE_FLAG_KEY) == "garbage"
    finally:
        service.close()


class FlakyStore(MemoryStore):
    """A flag store whose next ``fails`` writes are refused, as a throttled ledger refuses them."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails = fails

    def save_flag(self, snapshot: FlagSnapshot) -> None:
        from controller.core.errors import LedgerError

        if self.fails > 0:
            self.fails -= 1
            raise LedgerError("save_flag: ProvisionedThroughputExceededException")
        super().save_flag(snapshot)


def test_a_change_is_announced_and_routed_by_even_when_persisting_it_failed_once(tmp_path: FsPath) -> None:
    """Persisting a new version failed once: the change is still announced (once) and routed by,
    and the write is tried again on the next read until it holds."""
    from flags.lkg import FlagChange

    flag_file = tmp_path / "flags.json"
    clock = FakeClock()
    store = FlakyStore(fails=0)
    changes: list[FlagChange] = []
    lkg = LastKnownGood(
        FileFlagSource(flag_file, "migrated_tenants", clock), store, clock, on_change=changes.append
    )
    flag_file.write_text(json.dumps({"migrated_tenants": {"enabled": True, "tenant_ids": [1]}}))
    assert lkg.read().state is FlagState.OK
    flag_file.write_text(json.dumps({"migrated_tenants": {"enabled": True, "tenant_ids": [1, 2]}}))
    store.fails = 1
    clock.advance(1)
    status = lkg.read()
    assert status.snapshot is not None
    assert status.snapshot.tenant_ids == {1, 2}
    assert "not persisted" in status.problem
    assert [c.added for c in changes] == [frozenset({1}), frozenset({2})]
    clock.advance(1)
    assert lkg.read().problem == ""
    assert store.saved is not None
    assert store.saved.tenant_ids == {1, 2}
    assert len(changes) == 2


class StaticSource:
    """A flag source that serves what it was last told to (an agent that may lag)."""

    name = "static"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.ids: list[int] = []
        self.version = "1"

    def fetch(self) -> FlagSnapshot:
        return FlagSnapshot(self.version, True, frozenset(self.ids), "static", self.clock())


def test_a_replica_whose_agent_lags_never_writes_its_older_flag_over_a_newer_one() -> None:
    """Replica A's agent has version 2, replica B's still serves version 1 (a gradual deployment,
    an agent that polls late). B's periodic refresh of the persisted flag must not put version 1
    back over the version 2 A persisted: a restarted replica whose agent is down would route by it."""
    clock = FakeClock()
    store = MemoryStore()
    a_source, b_source = StaticSource(clock), StaticSource(clock)
    a = LastKnownGood(a_source, store, clock, persist_every_seconds=60)
    b = LastKnownGood(b_source, store, clock, persist_every_seconds=60)
    a.read()
    b.read()
    a_source.version, a_source.ids = "2", [7]
    clock.advance(1)
    a.read()
    assert store.saved is not None
    assert store.saved.version == "2"
    for _ in range(5):
        clock.advance(61)
        b.read()  # still version 1: its refresh is due, but someone persisted another version since
        assert store.saved.version == "2"
    b_source.version, b_source.ids = "2", [7]
    clock.advance(61)
    b.read()
    a.read()
    assert store.saved.version == "2"
