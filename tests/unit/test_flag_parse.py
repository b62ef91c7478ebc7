"""Flag documents are accepted or rejected whole; the last good flag outlives a bad one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.core.errors import FlagInvalidError, FlagUnavailableError
from flags.document import parse_flag
from flags.file_source import FileFlagSource
from flags.lkg import LastKnownGood
from flags.snapshot import FlagState


def parse(doc: str | bytes):
    return parse_flag(doc, flag_key="migrated_tenants", source="test", fetched_at=1.0)


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [1, 2', "not valid JSON", id="bad-json"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": ["3"]}}', "tenant_ids[0]", id="string"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [1, 2.5]}}', "tenant_ids[1]", id="float"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [4.0]}}', "tenant_ids[0]", id="whole-float"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [5, 0]}}', "tenant_ids[1]", id="zero"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [-3]}}', "tenant_ids[0]", id="negative"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [true]}}', "tenant_ids[0]", id="bool"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [NaN]}}', "not valid JSON", id="nan"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [9007199254740992]}}',
            "tenant_ids[0]",
            id="huge",
        ),
        pytest.param('{"other_flag": {"enabled": true}}', "'migrated_tenants' is missing", id="missing-key"),
        pytest.param(
            '{"migrated_tenants": {"enabled": "yes", "tenant_ids": [1]}}', "enabled", id="enabled-string"
        ),
        pytest.param(
            '{"migrated_tenants": {"enabled": 1, "tenant_ids": [1]}}', "enabled", id="enabled-number"
        ),
        pytest.param('{"migrated_tenants": {"tenant_ids": [1]}}', "enabled", id="enabled-missing"),
        pytest.param('{"migrated_tenants": {"enabled": true}}', "tenant_ids: required", id="ids-missing"),
        pytest.param(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": 5}}', "tenant_ids", id="ids-not-list"
        ),
        pytest.param("[1, 2, 3]", "expected a JSON object", id="array-doc"),
        pytest.param(
            '{"version": "1", "flags": {}, "values": {"x": {"enabled": true}}}',
            "missing from 'values'",
            id="full-no-key",
        ),
    ],
)
def test_bad_documents_are_rejected_whole_naming_the_place(doc, where):
    with pytest.raises(FlagInvalidError) as err:
        parse(doc)
    assert where in str(err.value)


def test_oversized_document_is_rejected_before_parsing():
    ids = ",".join(str(i) for i in range(1, 700_000))
    with pytest.raises(FlagInvalidError, match="over AppConfig's limit"):
        parse('{"migrated_tenants": {"enabled": true, "tenant_ids": [' + ids + "]}}")


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"migrated_tenants": {"enabled": True, "tenant_ids": [3, 1, 3]}}, id="values-form"),
        pytest.param(
            {
                "version": "1",
                "flags": {"migrated_tenants": {"name": "Migrated tenants"}},
                "values": {"migrated_tenants": {"enabled": True, "tenant_ids": [3, 1, 3]}},
            },
            id="definition-document",
        ),
    ],
)
def test_both_appconfig_forms_are_read_and_duplicates_folded(doc):
    snap = parse(json.dumps(doc))
    assert snap.tenant_ids == frozenset({1, 3})
    assert snap.duplicates_folded == 1
    assert snap.enabled


def test_disabled_flag_is_just_enabled_false_and_migrates_nobody():
    """AppConfig drops attributes of a disabled flag: that is "nobody migrated", not an error."""
    snap = parse('{"migrated_tenants": {"enabled": false}}')
    assert not snap.enabled
    assert not snap.migrated(1)
    assert snap.tenant_count == 0


def test_content_version_changes_with_content_only():
    a = parse('{"migrated_tenants": {"enabled": true, "tenant_ids": [1]}}')
    b = parse('{"migrated_tenants": {"enabled": true, "tenant_ids": [1]}}')
    c = parse('{"migrated_tenants": {"enabled": true, "tenant_ids": [1, 2]}}')
    assert a.version == b.version != c.version
    assert a.version_from_content


class MemoryStore:
    def __init__(self):
        self.saved = None

    def save_flag(self, snapshot):
        self.saved = snapshot

    def load_flag(self):
        return self.saved


def test_last_good_flag_stays_in_force_through_bad_and_missing_documents(tmp_path: Path, clock):
    """A bad document or a vanished file never un-migrates anyone; the state says what happened."""
    path = tmp_path / "flags.json"
    store = MemoryStore()
    lkg = LastKnownGood(FileFlagSource(path, "migrated_tenants", clock), store, clock)
    first = lkg.read()
    assert first.snapshot is None
    assert first.state is FlagState.UNAVAILABLE
    path.write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [7, 8]}}')
    good = lkg.read()
    assert good.state is FlagState.OK
    assert store.saved.tenant_ids == frozenset({7, 8})
    path.write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [7, "8"]}}')
    clock.advance(5)
    bad = lkg.read()
    assert bad.state is FlagState.INVALID
    assert bad.snapshot.tenant_ids == frozenset({7, 8})
    assert "tenant_ids[1]" in bad.problem
    assert bad.age_seconds == 5
    path.unlink()
    gone = lkg.read()
    assert gone.state is FlagState.UNAVAILABLE
    assert gone.snapshot.tenant_ids == frozenset({7, 8})
    assert store.saved.tenant_ids == frozenset({7, 8})


def test_last_good_flag_survives_a_restart(tmp_path: Path, clock, sqlite_ledger):
    """Persisted in the ledger: a new process with no reachable source still routes as before."""
    path = tmp_path / "flags.json"
    path.write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [42]}}')
    LastKnownGood(FileFlagSource(path, "migrated_tenants", clock), sqlite_ledger, clock).read()
    path.unlink()
    restarted = LastKnownGood(FileFlagSource(path, "migrated_tenants", clock), sqlite_ledger, clock)
    status = restarted.read()
    assert status.state is FlagState.UNAVAILABLE
    assert status.snapshot is not None
    assert status.snapshot.migrated(42)


def test_max_age_turns_a_failing_source_stale(tmp_path: Path, clock):
    path = tmp_path / "flags.json"
    path.write_text('{"migrated_tenants": {"enabled": true, "tenant_ids": [1]}}')
    lkg = LastKnownGood(
        FileFlagSource(path, "migrated_tenants", clock), MemoryStore(), clock, max_age_seconds=60
    )
    lkg.read()
    path.unlink()
    clock.advance(61)
    status = lkg.read()
    assert status.state is FlagState.STALE
    assert status.snapshot.migrated(1)


def test_file_source_reports_a_missing_file_as_unavailable(tmp_path: Path, clock):
    with pytest.raises(FlagUnavailableError, match="does not exist"):
        FileFlagSource(tmp_path / "nope.json", "migrated_tenants", clock).fetch()
